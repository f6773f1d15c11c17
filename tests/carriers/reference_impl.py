"""Reference (pre-optimisation) implementations of the carrier hot paths.

The fast versions in `exifguard.carriers` must give exactly the same answers; these
slow, obviously-correct versions are the oracle for `test_fastpaths.py`.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote_to_bytes

from exifguard.carriers.base64text import Base64Image, NotReproducible, payload_start, quick_check
from exifguard.carriers.form import EncodingConflict
from exifguard.carriers.jsonbody import EscapeConflict
from exifguard.engine.detect import sniff

_B64_RUN_CHAR = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
#: How each image kind's base64 text begins (plain literals: bytes.find is fast on
#: large bodies) and how many characters before the literal the text starts.
_B64_STARTS = ((b"/9j/", 0), (b"_9j_", 0), (b"iVBORw0KGgo", 0), (b"R0lGOD", 0), (b"UklGR", 0),
               (b"SUkqA", 0), (b"TU0AK", 0), (b"Z0eXB", 6))
_JSON_SLASH = re.compile(rb"\\(?:/|u002[fF])")
_JSON_PLUS = re.compile(rb"\\u002[bB]")


def _starts_in(text: bytes) -> bool:
    return any(lit in text for lit, _ in _B64_STARTS)


def residual_images(body: bytes, covered: list[tuple[int, int]]) -> int:
    """Offset of a base64 / data-URL image left outside every inspected carrier, else -1.

    Why: the carrier parsers only look where a known shape puts an image (whole JSON
    string values, whole form fields, whole parts).  A base64 image anywhere else (a
    JSON key, a JSON document inside a JSON string, a data URL inside a chat message's
    HTML, an XML body) would otherwise leave with all its metadata and without a word in
    the report.  This search is the safety net that turns every such image into an error
    finding (fail closed).  A candidate counts only when a base64 run *starts* there
    (not in the middle of a longer base64 text, e.g. a base64 PDF) and really decodes to
    an image signature, so text merely mentioning ``/9j/`` does not block a request.
    """
    if not body:
        return -1
    view = body
    if covered:
        buf = bytearray(body)
        for s, e in covered:
            s, e = max(0, s), min(len(buf), e)
            if e > s:
                buf[s:e] = bytes(e - s)
        view = bytes(buf)
    texts = [view]
    if b"\\/" in view or b"\\u002" in view:  # JSON escapes of '/' and '+' inside string text
        texts.append(_JSON_PLUS.sub(b"+", _JSON_SLASH.sub(b"/", view)))
    if (b"%2F9j%2F" in view or b"%2f9j%2f" in view or _starts_in(view)) and b"%" in view:
        texts.append(unquote_to_bytes(view))  # percent-encoded text (form fields, queries)
    for text in texts:
        for lit, back in _B64_STARTS:
            i = text.find(lit)
            while i >= 0:
                p = i - back
                if p >= 0 and (p == 0 or text[p - 1] not in _B64_RUN_CHAR):
                    end = p
                    while end < len(text) and end - p < 64 and text[end] in _B64_RUN_CHAR:
                        end += 1
                    if quick_check(text[p:end]):
                        return p
                i = text.find(lit, i + 1)
    return -1


_STD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_LAYOUT = frozenset(b" \t\r\n")


def b64_decode(text: bytes) -> Base64Image | None:
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


_PCT = re.compile(rb"%([0-9A-Fa-f]{2})")


def form_unescape(raw: bytes) -> tuple[bytes, dict[int, bytes]]:
    """Percent-decode a value and record how each encoded character was spelled."""
    if b"+" in raw:
        raise EncodingConflict("a literal '+' (a space) inside the value")
    if b"%" not in raw:
        return raw, {ch: bytes([ch]) for ch in set(raw)}
    reprs: dict[int, bytes] = {}
    for m in _PCT.finditer(raw):
        ch = int(m.group(1), 16)
        prev = reprs.setdefault(ch, m.group())
        if prev != m.group():
            raise EncodingConflict("a character is percent-encoded two different ways")
    literal = _PCT.sub(b"", raw)
    if b"%" in literal:
        raise EncodingConflict("a stray '%' in the value")
    for ch in reprs:
        if bytes([ch]) in literal:
            raise EncodingConflict("a character appears both encoded and literally")
    for ch in set(literal):
        reprs.setdefault(ch, bytes([ch]))  # written literally: keep it literal
    return unquote_to_bytes(raw), reprs


def form_escape(text: bytes, reprs: dict[int, bytes]) -> bytes:
    """Percent-encode `text` as `unescape` saw it; unseen specials get %XX (case as seen)."""
    upper = not any(r.startswith(b"%") and r != r.upper() for r in reprs.values())
    table = dict(reprs)
    for ch in set(text):
        if ch in table:
            continue
        c = bytes([ch])
        if c.isalnum() or c in b"-._~*":
            continue
        table[ch] = (b"%%%02X" if upper else b"%%%02x") % ch
    needed = [ch for ch in table if bytes([ch]) in text]
    if not needed:
        return text
    cls = re.compile(b"[" + b"".join(re.escape(bytes([c])) for c in needed) + b"]")
    return cls.sub(lambda m: table[m.group()[0]], text)


JSON_STRING_BODY = re.compile(rb'[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*"')


_ESCAPE = re.compile(rb'\\(?:u([0-9a-fA-F]{4})|(["\\/bfnrt]))')
_SIMPLE = {b'"': 0x22, b"\\": 0x5C, b"/": 0x2F, b"b": 0x08, b"f": 0x0C, b"n": 0x0A, b"r": 0x0D, b"t": 0x09}
_DEFAULT = {0x22: b'\\"', 0x5C: b"\\\\", 0x08: b"\\b", 0x0C: b"\\f", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t"}


def json_unescape(raw: bytes) -> tuple[bytes, dict[int, bytes]]:
    """Decode a JSON string's raw bytes to latin-1 bytes plus how each escaped char was written.

    Characters above U+00FF become 0xFF-free placeholders that no base64 decoder accepts
    (b"\\x00"), which is enough for the image search.  Raises EscapeConflict when one
    character appears both escaped and literal, or with two escape spellings.
    """
    if b"\\" not in raw:
        return raw, {}
    reprs: dict[int, bytes] = {}
    out = bytearray()
    last = 0
    for m in _ESCAPE.finditer(raw):
        out += raw[last:m.start()]
        last = m.end()
        if m.group(1) is not None:
            cp = int(m.group(1), 16)
            ch = cp if cp < 256 else 0
        else:
            ch = _SIMPLE[m.group(2)]
        out.append(ch)
        spelled = m.group()
        prev = reprs.setdefault(ch, spelled)
        if prev != spelled:
            raise EscapeConflict("a character is escaped two different ways")
    out += raw[last:]
    # a character that is escaped somewhere must not also appear literally
    literal = _ESCAPE.sub(b"", raw)
    for ch in reprs:
        if bytes([ch]) in literal:
            raise EscapeConflict("a character appears both escaped and literally")
    return bytes(out), reprs


def json_escape(text: bytes, reprs: dict[int, bytes]) -> bytes:
    """Re-escape latin-1 `text` the way `unescape` saw it written (JSON defaults otherwise)."""
    table = dict(_DEFAULT)
    table.update(reprs)
    needed = [ch for ch in table if bytes([ch]) in text]
    for ch in range(0x20):
        if ch not in table and bytes([ch]) in text:
            table[ch] = b"\\u%04x" % ch
            needed.append(ch)
    if not needed:
        return text
    cls = re.compile(b"[" + b"".join(re.escape(bytes([c])) for c in needed) + b"]")
    return cls.sub(lambda m: table[m.group()[0]], text)


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
