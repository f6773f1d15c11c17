"""Find a canary marker anywhere in bytes: raw, and in the encodings metadata hides in.

Searches the raw bytes, UTF-16 (both byte orders: XP* tags), ASCII hex in either
case (ImageMagick raw profiles), base64 at all three alignments, and inside every
zlib/deflate stream found (zTXt, compressed iTXt, iCCP) and brotli (JPEG XL brob).
"""

from __future__ import annotations

import base64
import zlib

MAX_INFLATE = 64 * 1024 * 1024


def _encodings(marker: bytes) -> list[tuple[str, bytes]]:
    out = [("raw", marker), ("utf-16le", marker.decode().encode("utf-16le")),
           ("utf-16be", marker.decode().encode("utf-16be")),
           ("hex", marker.hex().encode()), ("HEX", marker.hex().upper().encode())]
    for shift in range(3):
        enc = base64.b64encode(b"\0" * shift + marker)
        # drop the characters influenced by the prefix and by the padding
        start = (shift * 4 + 2) // 3
        core = enc[start + 1: -4] if len(enc) > start + 5 else b""
        if len(core) >= 8:
            out.append((f"base64/{shift}", core))
    return out


def _inflated_streams(data: bytes) -> list[bytes]:
    out = []
    i = 0
    n = len(data)
    while i < n - 1:
        j = data.find(b"\x78", i)
        if j < 0 or j >= n - 1:
            break
        if (data[j] << 8 | data[j + 1]) % 31 == 0:
            try:
                d = zlib.decompressobj()
                text = d.decompress(data[j:j + MAX_INFLATE], MAX_INFLATE)
                if text:
                    out.append(text)
            except zlib.error:
                pass
        i = j + 1
    try:
        import brotli  # type: ignore[import-not-found]
        k = 0
        while True:
            k = data.find(b"brob", k)
            if k < 0:
                break
            try:
                out.append(brotli.decompress(data[k + 8:]))
            except Exception:
                pass
            k += 4
    except ImportError:
        pass
    return out


def find(data: bytes, marker: bytes, *, _depth: int = 0) -> list[str]:
    """Where the marker survives: a list like ["raw@1234", "zlib>hex@10"]; empty if nowhere."""
    hits = []
    for label, needle in _encodings(marker):
        k = data.find(needle)
        if k >= 0:
            hits.append(f"{label}@{k}")
    # hex and base64 text is often line-wrapped (ImageMagick raw profiles wrap at 72 columns)
    squeezed = data.translate(None, b" \t\r\n")
    if len(squeezed) != len(data):
        for label, needle in _encodings(marker)[3:]:
            k = squeezed.find(needle)
            if k >= 0:
                hits.append(f"wrapped-{label}@~{k}")
    if _depth < 2:
        for s in _inflated_streams(data):
            hits += [f"zlib>{h}" for h in find(s, marker, _depth=_depth + 1)]
    return hits
