"""Base64 and ``data:`` URL images inside text, re-encoded to the exact same shape.

Why this exists: several services send images as text (JSON ``source.data``, data URLs in
``image_url``, M365 ``FileBase64``, HuggingChat ``base64;<name>`` parts).  To keep every
declared size and every surrounding byte valid, the cleaned image (same byte length,
thanks to the length-preserving engine) is re-encoded with the *same* alphabet
(standard or URL-safe), the *same* padding and the *same* whitespace layout (line
breaks at identical positions), so the text keeps its length character for character.

Only text whose first characters decode to an image signature is fully decoded (fast
path): a 20 MB base64 PDF costs a few dozen bytes of work.  A text that looks like an
image at its start but cannot be decoded or re-encoded exactly is reported as
`NOT_REPRODUCIBLE` so the caller can produce an error finding rather than corrupt it.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from ..engine.detect import sniff

try:  # `pybase64` (a runtime dependency) decodes with SIMD, ~5x faster than binascii
    from pybase64 import b64decode as _b64decode_fast
except ImportError:  # pragma: no cover - exercised by the cross-check test
    _b64decode_fast = None

_STD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_LAYOUT = frozenset(b" \t\r\n")
_LAYOUT_CHARS = (b" ", b"\t", b"\r", b"\n")
_LAYOUT_RE = re.compile(rb"[ \t\r\n]")
_STD_CHARS = bytes(sorted(_STD))
_URL_CHARS = bytes(sorted(_URL))
_URL_TO_STD = bytes.maketrans(b"-_", b"+/")
_DATA_URL = re.compile(rb"data:([A-Za-z0-9!#$&^_.+\-]+/[A-Za-z0-9!#$&^_.+\-]+)?((?:;[^;,]*)*?);base64,",
                       re.IGNORECASE)
_MIN_CHARS = 16
_HEAD_CHARS = 32  # 24 decoded bytes: enough for every magic sniff() looks at first
_HEAD_WINDOW = 1024  # more than quick_check() and payload_start() ever read of a text

#: Image magics as they appear at the start of base64 text (standard alphabet): used to
#: search bodies we cannot parse for an embedded base64 image.
B64_MAGIC_PREFIXES = (b"/9j/", b"iVBORw0KGgo", b"R0lGODdh", b"R0lGODlh", b"UklGR", b"SUkqAA", b"TU0AKg",
                      b"_9j_")


@dataclass(frozen=True)
class Base64Image:
    """A base64 (or data URL) image found in a text."""

    prefix_len: int          # characters before the base64 payload (data URL header), kept verbatim
    data: bytes              # decoded image bytes
    format: str              # sniffed format
    urlsafe: bool
    padded: bool
    layout: tuple[tuple[int, bytes], ...]  # (index in payload text, whitespace char) in order
    is_data_url: bool


class NotReproducible(ValueError):
    """The text decodes to an image but could not be re-encoded byte for byte."""


def _looks_like_image_head(head: bytes) -> bool:
    if sniff(head) is not None:
        return True
    # sniff() needs the whole file for a few formats (BMP size check); be generous here,
    # the full decode is sniffed again before anything is done with it.
    if head[:2] == b"BM":  # a BMP header: the DIB header size must be one that exists
        return len(head) >= 18 and int.from_bytes(head[14:18], "little") in (12, 40, 52, 56, 64, 108, 124)
    return head[4:8] == b"ftyp"


def _strip_layout(chunk: bytes) -> bytes:
    return bytes(c for c in chunk if c not in _LAYOUT) if any(c in _LAYOUT for c in chunk) else chunk


def payload_start(text: bytes) -> tuple[int, bool]:
    """(offset of the base64 payload, is_data_url) — data URL header skipped if present."""
    if text[:5].lower() == b"data:":
        m = _DATA_URL.match(text, 0, 512)
        if m:
            return m.end(), True
        return -1, True
    return 0, False


def quick_check(text: bytes) -> bool:
    """Cheap test: could this text be a base64 image?  Decodes at most 32 characters."""
    if len(text) < _MIN_CHARS:
        return False
    start, _ = payload_start(text)
    if start < 0:
        return False
    head = _strip_layout(text[start:start + _HEAD_CHARS * 2])[:_HEAD_CHARS]
    head = head[: len(head) - len(head) % 4]
    if len(head) < 8:
        return False
    if any(c in b"-_" for c in head):
        head = head.translate(bytes.maketrans(b"-_", b"+/"))
    try:
        raw = base64.b64decode(head, validate=True)
    except (binascii.Error, ValueError):
        return False
    return _looks_like_image_head(raw)


#: Shortest base64 text worth decoding as a possible wrapper (PDF, zip, protobuf) of images.
BLOB_MIN_CHARS = 256
_BLOB_HEAD_OK = _STD_CHARS + b"-_="


def blob_check(text: bytes) -> bool:
    """Cheap test: could this text be base64 of a *wrapper* that may hold images?

    Why: a base64 PDF (Claude's document blocks, OpenAI's ``file_data``) or zip carries
    photos as DCTDecode streams or stored entries; `quick_check` only recognises text
    whose decoded head is an image.  Text whose first 256 payload characters are all of
    one base64 alphabet is worth a full decode and an embedded-image search when it is
    long enough (`BLOB_MIN_CHARS`: the caller checks, it may hold only the head).
    """
    start, _ = payload_start(text)
    if start < 0:
        return False
    head = text[start:start + 256]
    return len(head) == 256 and not head.translate(None, _BLOB_HEAD_OK)


def decode_blob(text: bytes, lo: int = 0, hi: int | None = None) -> Base64Image | None:
    """`decode` for a text `blob_check` accepted: any content (``format`` is ""), or None.

    None (never an exception) when the text is not canonical base64 after all: such
    text is left to the residual searches, as before.
    """
    n = len(text) if hi is None else hi
    if n - lo < BLOB_MIN_CHARS or not blob_check(text[lo:min(n, lo + _HEAD_WINDOW)]):
        return None
    try:
        return decode(text, lo, hi, any_content=True)
    except NotReproducible:
        return None


def decode(text: bytes, lo: int = 0, hi: int | None = None, *,
           any_content: bool = False) -> Base64Image | None:
    """Decode a base64 / data URL image: `text`, or only ``text[lo:hi]`` (read in place).

    Returns None when the text is not a base64 image at all.  Raises NotReproducible when
    it looks like one (its head decodes to an image signature) but is malformed or could
    not be re-encoded to exactly the same text.  Offsets in the result (`prefix_len`,
    `layout`) are relative to `lo`.

    Speed: a photo is megabytes of text, so the common shape (one line, no whitespace)
    is checked with C-level scans only: the alphabet by the strict decoder itself (the
    exact reason is worked out only when it fails), the payload is decoded straight
    from a memoryview (no copy), and "re-encodes to exactly this text" is checked on
    the last base64 quantum only (every complete 4-character group maps one-to-one to
    its 3 bytes, so only the final partial group can be non-canonical).
    """
    n = len(text) if hi is None else hi
    head = text[lo:min(n, lo + _HEAD_WINDOW)]  # all quick_check and payload_start read
    if not any_content and not quick_check(head):
        return None
    prefix_len, is_data_url = payload_start(head)
    if prefix_len < 0:
        return None
    start = lo + prefix_len
    if any(text.find(c, start, n) >= 0 for c in _LAYOUT_CHARS):
        return _decode_laid_out(text[lo:n], prefix_len, is_data_url, any_content)
    end = n
    while end > start and n - end < 3 and text[end - 1] == 0x3D:  # "="
        end -= 1
    pad = n - end
    if pad > 2:
        raise NotReproducible("base64 image text has malformed padding")
    urlsafe = text.find(b"-", start, end) >= 0 or text.find(b"_", start, end) >= 0
    length = end - start
    if length % 4 == 1 or (pad and (n - start) % 4):
        _check_alphabet(text[start:end], urlsafe)
        if length % 4 == 1:
            raise NotReproducible("base64 image text has an impossible length")
        raise NotReproducible("base64 image text has malformed padding")
    src: bytes | memoryview
    if urlsafe:
        if text.find(b"+", start, end) >= 0 or text.find(b"/", start, end) >= 0:
            raise NotReproducible("base64 image text holds characters outside one base64 alphabet")
        src = text[start:end].translate(_URL_TO_STD) + b"=" * (-length % 4)
    elif pad or length % 4 == 0:
        src = memoryview(text)[start:n]  # already canonically padded (or needs no padding)
    else:
        src = text[start:end] + b"=" * (-length % 4)
    try:
        data = strict_decode(src, simd=text.find(b"=", start, end) < 0)
    except (binascii.Error, ValueError) as exc:
        _check_alphabet(text[start:end], urlsafe)
        raise NotReproducible("base64 image text does not decode") from exc
    finally:
        if isinstance(src, memoryview):
            src.release()
        del src
    fmt = "" if any_content else sniff(data)
    if fmt is None:
        raise NotReproducible("base64 text starts like an image but its decoded bytes are not one")
    img = Base64Image(prefix_len=prefix_len, data=data, format=fmt, urlsafe=urlsafe, padded=pad > 0,
                      layout=(), is_data_url=is_data_url)
    rest = len(data) % 3
    if rest:
        tail = base64.urlsafe_b64encode(data[-rest:]) if urlsafe else base64.b64encode(data[-rest:])
        if text[end - rest - 1:end] != tail[:rest + 1]:
            raise NotReproducible("base64 image text is not in canonical form (cannot re-encode it exactly)")
    return img


def strict_decode(src: bytes | memoryview, *, simd: bool) -> bytes:
    """`binascii.a2b_base64(src, strict_mode=True)`, faster when it is safe to be.

    Pass `simd=True` only for standard-alphabet text whose length is a multiple of 4
    and whose only `=` are the final padding: there the SIMD decoder and the strict
    decoder accept exactly the same inputs.  Whenever the SIMD decoder refuses, the
    strict decoder decides, so errors are exactly the ones it always raised.
    """
    if simd and _b64decode_fast is not None:
        try:
            return _b64decode_fast(src, validate=True)
        except (binascii.Error, ValueError):
            pass
    return binascii.a2b_base64(src, strict_mode=True)


def _check_alphabet(stripped: bytes, urlsafe: bool) -> None:
    if stripped.translate(None, _URL_CHARS if urlsafe else _STD_CHARS):
        raise NotReproducible("base64 image text holds characters outside one base64 alphabet")


def _decode_laid_out(text: bytes, start: int, is_data_url: bool, any_content: bool = False) -> Base64Image:
    """`decode` for text with whitespace (line-wrapped base64): rare, so kept simple."""
    payload = text[start:]
    layout = [(m.start(), m.group()) for m in _LAYOUT_RE.finditer(payload)]
    compact = _LAYOUT_RE.sub(b"", payload)
    stripped = compact.rstrip(b"=")
    pad = len(compact) - len(stripped)
    if pad > 2:
        raise NotReproducible("base64 image text has malformed padding")
    urlsafe = b"-" in stripped or b"_" in stripped
    _check_alphabet(stripped, urlsafe)
    if len(stripped) % 4 == 1:
        raise NotReproducible("base64 image text has an impossible length")
    if pad and (len(compact) % 4):
        raise NotReproducible("base64 image text has malformed padding")
    std = stripped.translate(_URL_TO_STD) if urlsafe else stripped
    std += b"=" * (-len(std) % 4)
    try:
        data = binascii.a2b_base64(std, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise NotReproducible("base64 image text does not decode") from exc
    fmt = "" if any_content else sniff(data)
    if fmt is None:
        raise NotReproducible("base64 text starts like an image but its decoded bytes are not one")
    img = Base64Image(prefix_len=start, data=data, format=fmt, urlsafe=urlsafe, padded=pad > 0,
                      layout=tuple(layout), is_data_url=is_data_url)
    if encode(img, data, text[:start]) != text:
        raise NotReproducible("base64 image text is not in canonical form (cannot re-encode it exactly)")
    return img


def encode(img: Base64Image, data: bytes, prefix: bytes) -> bytes:
    """Encode `data` in exactly the shape `img` was found in (alphabet, padding, layout)."""
    out = base64.urlsafe_b64encode(data) if img.urlsafe else base64.b64encode(data)
    if not img.padded:
        out = out.rstrip(b"=")
    if img.layout and len(data) == len(img.data):
        pieces: list[bytes] = []
        pos = 0  # position in `out`
        written = 0  # characters written to the result so far
        for idx, ws in img.layout:
            take = idx - written
            pieces.append(out[pos:pos + take])
            pos += take
            pieces.append(ws)
            written = idx + 1
        pieces.append(out[pos:])
        out = b"".join(pieces)
    return prefix + out


_BLOCK = 3 * 16384  # compare block: a multiple of 3, so blocks start on base64 group boundaries


def reencode_pieces(img: Base64Image, data: bytes, text: bytes, lo: int = 0,
                    hi: int | None = None) -> list[tuple[int, int, bytes]]:
    """`encode(img, data, prefix)` as edits of the text `img` was decoded from.

    That text is `text`, or ``text[lo:hi]`` when `img` came from ``decode(text, lo, hi)``.
    Returns ``(start, end, replacement)`` spans of it (relative to `lo`), in order, such
    that splicing them in gives exactly ``encode(img, data, prefix)``.  For one-line text
    and same-length data only the base64 groups of the byte blocks that changed are
    re-encoded (a cleaned photo differs from the original in its metadata segments, not
    in its megabytes of image data); otherwise one span covers the whole text.
    """
    old = img.data
    n = len(old)
    if img.layout or len(data) != n:
        hi = len(text) if hi is None else hi
        return [(0, hi - lo, encode(img, data, text[lo:lo + img.prefix_len]))]
    enc = base64.urlsafe_b64encode if img.urlsafe else base64.b64encode
    out: list[tuple[int, int, bytes]] = []
    run = -1  # start of the current run of changed blocks
    for i in range(0, n + _BLOCK, _BLOCK):
        changed = i < n and old[i:i + _BLOCK] != data[i:i + _BLOCK]
        if changed and run < 0:
            run = i
        elif not changed and run >= 0:
            end = min(i, n)
            piece = enc(data[run:end])
            if end == n and not img.padded:
                piece = piece.rstrip(b"=")
            at = img.prefix_len + run // 3 * 4
            out.append((at, at + len(piece), piece))
            run = -1
    return out


def splice(text: bytes, pieces: list[tuple[int, int, bytes]]) -> bytes:
    """`text` with each ``(start, end, replacement)`` of `pieces` (in order) applied."""
    view = memoryview(text)  # slices of a view are not copies: join copies each byte once
    out: list[bytes | memoryview] = []
    last = 0
    for a, b, new in pieces:
        out.append(view[last:a])
        out.append(new)
        last = b
    out.append(view[last:])
    try:
        return b"".join(out)
    finally:
        del out
        view.release()

