"""application/x-www-form-urlencoded bodies: field spans and exact percent-encoding.

Why: M365 Copilot sends images as a ``data:`` URL in the ``FileBase64`` form field.  Only
that value's span is rewritten; its percent-encoding is reproduced the way the client
wrote it (``%2F`` vs ``/``, upper or lower hex), every other field stays byte-identical.
A literal ``+`` inside a base64 value means a *space* in this encoding, so such a value
cannot be decoded faithfully; the caller reports it instead of guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

_FIELD_OK = re.compile(rb"[\x21-\x7e]*\Z")
_PCT = re.compile(rb"%([0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class FormField:
    name: str
    start: int   # value span in the body
    end: int


class FormError(ValueError):
    """The body is not urlencoded form data."""


class EncodingConflict(ValueError):
    """A value's percent-encoding cannot be reproduced exactly."""


def looks_like_form(body: bytes) -> bool:
    """Printable ASCII without spaces, with at least one ``name=value``."""
    return b"=" in body and _FIELD_OK.match(body.rstrip(b"\r\n")) is not None


def fields(body: bytes, *, max_fields: int = 10_000) -> list[FormField]:
    end_all = len(body.rstrip(b"\r\n"))
    if not _FIELD_OK.match(body[:end_all]):
        raise FormError("form body holds bytes that urlencoding never produces")
    out: list[FormField] = []
    pos = 0
    while pos <= end_all:
        amp = body.find(b"&", pos, end_all)
        stop = end_all if amp < 0 else amp
        item = body[pos:stop]
        if item:
            eq = item.find(b"=")
            if eq >= 0:
                name = unquote_to_bytes(item[:eq].replace(b"+", b" ")).decode("utf-8", "replace")
                out.append(FormField(name, pos + eq + 1, stop))
            if len(out) > max_fields:
                raise FormError(f"more than {max_fields} form fields")
        if amp < 0:
            break
        pos = amp + 1
    return out


def unescape(raw: bytes) -> tuple[bytes, dict[int, bytes]]:
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


def escape(text: bytes, reprs: dict[int, bytes]) -> bytes:
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
