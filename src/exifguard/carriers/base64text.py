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

_STD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_LAYOUT = frozenset(b" \t\r\n")
_DATA_URL = re.compile(rb"data:([A-Za-z0-9!#$&^_.+\-]+/[A-Za-z0-9!#$&^_.+\-]+)?((?:;[^;,]*)*?);base64,",
                       re.IGNORECASE)
_MIN_CHARS = 16
_HEAD_CHARS = 32  # 24 decoded bytes: enough for every magic sniff() looks at first

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
    return head[:2] == b"BM" or head[4:8] == b"ftyp"


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


def decode(text: bytes) -> Base64Image | None:
    """Decode a base64 / data URL image.

    Returns None when the text is not a base64 image at all.  Raises NotReproducible when
    it looks like one (its head decodes to an image signature) but is malformed or could
    not be re-encoded to exactly the same text.
    """
    if not quick_check(text):
        return None
    start, is_data_url = payload_start(text)
    payload = text[start:]
    layout: list[tuple[int, bytes]] = []
    if any(c in _LAYOUT for c in payload[:4096]) or any(c in _LAYOUT for c in payload[-4096:]) or \
            re.search(rb"[ \t\r\n]", payload):
        for m in re.finditer(rb"[ \t\r\n]", payload):
            layout.append((m.start(), m.group()))
        compact = re.sub(rb"[ \t\r\n]", b"", payload)
    else:
        compact = payload
    stripped = compact.rstrip(b"=")
    pad = len(compact) - len(stripped)
    if pad > 2:
        raise NotReproducible("base64 image text has malformed padding")
    chars = set(stripped)
    urlsafe = bool(chars & set(b"-_"))
    alphabet = _URL if urlsafe else _STD
    if not chars <= alphabet:
        raise NotReproducible("base64 image text holds characters outside one base64 alphabet")
    if len(stripped) % 4 == 1:
        raise NotReproducible("base64 image text has an impossible length")
    if pad and (len(compact) % 4):
        raise NotReproducible("base64 image text has malformed padding")
    std = stripped.translate(bytes.maketrans(b"-_", b"+/")) if urlsafe else stripped
    std += b"=" * (-len(std) % 4)
    try:
        data = base64.b64decode(std, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NotReproducible("base64 image text does not decode") from exc
    fmt = sniff(data)
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
