"""application/x-www-form-urlencoded bodies: field spans and exact percent-encoding.

Why: M365 Copilot sends images as a ``data:`` URL in the ``FileBase64`` form field.  Only
that value's span is rewritten; its percent-encoding is reproduced the way the client
wrote it (``%2F`` vs ``/``, upper or lower hex), every other field stays byte-identical.
A literal ``+`` inside a base64 value means a *space* in this encoding, so such a value
cannot be decoded faithfully; the caller reports it instead of guessing.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from .jsonbody import distinct_bytes, substitute

_FIELD_OK = re.compile(rb"[\x21-\x7e]*\Z")


@dataclass(frozen=True)
class FormField:
    name: str
    start: int   # value span in the body
    end: int


class FormError(ValueError):
    """The body is not urlencoded form data."""


class EncodingConflict(ValueError):
    """A value's percent-encoding cannot be reproduced exactly."""


#: The bytes urlencoding produces (printable ASCII without space): what _FIELD_OK accepts.
_FIELD_BYTES = bytes(range(0x21, 0x7F))


def _all_field_bytes(body: bytes, end: int) -> bool:
    """``_FIELD_OK.match(body[:end])``, by one C-level translate instead of the regex."""
    if end < 4096:
        return _FIELD_OK.match(body[:end]) is not None
    return all(not body[k:min(end, k + (1 << 20))].translate(None, _FIELD_BYTES) for k in range(0, end, 1 << 20))


def _end(body: bytes) -> int:
    """``len(body.rstrip(b"\\r\\n"))``, copying the body only if it does end with a line break."""
    return len(body.rstrip(b"\r\n")) if body[-1:] in (b"\r", b"\n") else len(body)


def looks_like_form(body: bytes) -> bool:
    """Printable ASCII without spaces, with at least one ``name=value``."""
    return b"=" in body and _all_field_bytes(body, _end(body))


def fields(body: bytes, *, max_fields: int = 10_000) -> list[FormField]:
    end_all = _end(body)
    if not _all_field_bytes(body, end_all):
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


_HEX_PAIRS = frozenset(bytes([a, b]) for a in b"0123456789ABCDEFabcdef" for b in b"0123456789ABCDEFabcdef")
_HEAD = operator.itemgetter(slice(None, 2))
_TAIL = operator.itemgetter(slice(2, None))
_CHUNK = 1 << 18


def _chunks(raw: bytes) -> Iterator[tuple[int, int]]:
    """Consecutive spans of `raw` whose borders never split a ``%XX``."""
    n = len(raw)
    a = 0
    while a < n:
        b = min(n, a + _CHUNK)
        while b < n and (raw[b - 1] == 0x25 or raw[b - 2] == 0x25):  # '%'
            b += 1
        yield a, b
        a = b


def unescape(raw: bytes) -> tuple[bytes, dict[int, bytes]]:
    """Percent-decode a value and record how each encoded character was spelled.

    Checks, in this order: no literal '+'; each character encoded one way only; no
    stray '%'; no character both encoded and literal.  Works through the value a chunk
    at a time, splitting on '%' in C (a base64 photo holds a few hundred thousand
    escapes), so neither time nor memory grows with one Python object per escape.
    """
    if b"+" in raw:
        raise EncodingConflict("a literal '+' (a space) inside the value")
    if b"%" not in raw:
        return raw, {ch: bytes([ch]) for ch in distinct_bytes(raw)}
    spellings: dict[bytes, None] = {}  # the two characters after each '%', first seen first
    first_literal: dict[int, int] = {}  # literal byte -> its first position among the literals
    decoded: list[bytes] = []
    literal_len = 0
    stray = False
    for a, b in _chunks(raw):
        pieces = raw[a:b].split(b"%")  # [literal, XX+literal, XX+literal, ...]
        after = itertools.islice(pieces, 1, None)
        heads = list(map(_HEAD, after))
        seen = dict.fromkeys(heads)
        spellings.update(seen)
        tails = list(map(_TAIL, itertools.islice(pieces, 1, None)))
        literal = b"".join([pieces[0], *tails])
        for ch in distinct_bytes(literal):
            first_literal.setdefault(ch, literal_len + literal.find(bytes([ch])))
        literal_len += len(literal)
        del literal
        stray = stray or any(h not in _HEX_PAIRS for h in seen)
        if stray:
            continue  # the value is refused below; only the spellings still matter
        as_byte = {h: bytes([int(h, 16)]) for h in seen}
        parts: list[bytes] = [pieces[0]] * (2 * len(heads) + 1)
        parts[1::2] = map(as_byte.__getitem__, heads)
        parts[2::2] = tails
        decoded.append(b"".join(parts))
    reprs: dict[int, bytes] = {}
    for h in spellings:
        if h not in _HEX_PAIRS:
            continue
        spelled = b"%" + h
        prev = reprs.setdefault(int(h, 16), spelled)
        if prev != spelled:
            raise EncodingConflict("a character is percent-encoded two different ways")
    if stray:
        raise EncodingConflict("a stray '%' in the value")
    for ch in reprs:
        if ch in first_literal:
            raise EncodingConflict("a character appears both encoded and literally")
    for ch in set(sorted(first_literal, key=first_literal.__getitem__)):  # = set(literal), same order
        reprs.setdefault(ch, bytes([ch]))  # written literally: keep it literal
    return b"".join(decoded), reprs


def escape(text: bytes, reprs: dict[int, bytes]) -> bytes:
    """Percent-encode `text` as `unescape` saw it; unseen specials get %XX (case as seen)."""
    upper = not any(r.startswith(b"%") and r != r.upper() for r in reprs.values())
    table = dict(reprs)
    for ch in distinct_bytes(text):
        if ch in table:
            continue
        c = bytes([ch])
        if c.isalnum() or c in b"-._~*":
            continue
        table[ch] = (b"%%%02X" if upper else b"%%%02x") % ch
    needed = [ch for ch in table if table[ch] != bytes([ch]) and bytes([ch]) in text]
    return substitute(text, table, needed)
