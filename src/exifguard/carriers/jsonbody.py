"""Find string values in a JSON body, with their byte spans and paths — no re-serialisation.

Why: JSON APIs carry images as base64 or data URLs at any depth (``image_url.url``,
``source.data``, ``inline_data.data``, legacy Grok ``content``).  Re-serialising the
document would change key order, whitespace, number formatting and escaping, and
break anything that hashes or signs the body.  Instead a small tokenizer reports each
string value's span; the caller rewrites only that span, re-escaped exactly as the
client escaped it (`unescape` / `escape` below; ``\\/`` and ``\\n`` included).  If an
escaping choice cannot be reproduced (the same character escaped two different ways),
`unescape` says so and the caller reports an error instead of guessing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass


class JSONSyntaxError(ValueError):
    """The body is not a JSON document we can walk."""


class JSONTooDeep(ValueError):
    """Nesting deeper than the configured bound."""


_WS = re.compile(rb"[ \t\r\n]*")
_STRING_BODY = re.compile(rb'[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*"')
#: Bytes that end the plain (escape-free) run of a JSON string: a backslash or a control byte.
_NOT_PLAIN = bytes(range(0x20)) + b"\\"
_PLAIN = bytes(c for c in range(256) if c not in _NOT_PLAIN)
_FAST_STRING = 256      # strings at least this long try the C-level scan first
_SCAN_CHUNK = 1 << 20   # bounded temporary copies while checking a long string


def _string_end(body: bytes, start: int) -> int:
    """End (after the closing quote) of the JSON string whose text starts at `start`, or -1.

    Same answer as ``_STRING_BODY.match(body, start)``; a long string without escapes or
    control bytes (a base64 photo) is checked with memchr/translate instead of the regex
    engine, which is ~10x slower per byte.
    """
    q = body.find(b'"', start)
    if q - start >= _FAST_STRING:
        for k in range(start, q, _SCAN_CHUNK):
            if body[k:min(q, k + _SCAN_CHUNK)].translate(None, _PLAIN):
                break  # an escape or a control byte: let the regex decide
        else:
            return q + 1
    m = _STRING_BODY.match(body, start)
    return m.end() if m else -1


_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")


@dataclass(frozen=True)
class JSONString:
    start: int      # first byte inside the quotes
    end: int        # the closing quote
    path: tuple[str | int, ...]

    @property
    def label(self) -> str:
        return path_label(self.path)


def path_label(path: tuple[str | int, ...]) -> str:
    out = ["$"]
    for p in path:
        if isinstance(p, int):
            out.append(f"[{p}]")
        elif _IDENT.match(p):
            out.append("." + p)
        else:
            out.append("[" + json.dumps(p) + "]")
    return "".join(out)


def looks_like_json(body: bytes) -> bool:
    m = _WS.match(body, 3 if body.startswith(b"\xef\xbb\xbf") else 0)
    return body[m.end():m.end() + 1] in (b"{", b"[")


def iter_value_strings(body: bytes, *, max_depth: int = 256) -> Iterator[JSONString]:
    """Yield every string *value* (not keys) in document order.

    Raises JSONSyntaxError / JSONTooDeep (possibly after yielding some strings: callers
    must collect edits and only apply them once the walk finished without error).
    """
    pos = 3 if body.startswith(b"\xef\xbb\xbf") else 0
    n = len(body)
    # stack entries: [is_object, key_or_index]
    stack: list[list] = []
    path: list[str | int] = []
    state = "value"  # value | after_value | key_or_close | key | colon | value_or_close
    while True:
        pos = _WS.match(body, pos).end()
        if pos >= n:
            if state == "after_value" and not stack:
                return
            raise JSONSyntaxError("JSON body ends early")
        c = body[pos]
        if state in ("value", "value_or_close"):
            if c == 0x5D and state == "value_or_close":  # ]
                stack.pop()
                if path:
                    path.pop()
                pos += 1
                state = "after_value"
                continue
            if c == 0x22:  # "
                end = _string_end(body, pos + 1)
                if end < 0:
                    raise JSONSyntaxError("malformed JSON string")
                yield JSONString(pos + 1, end - 1, tuple(path))
                pos = end
                state = "after_value"
            elif c in (0x7B, 0x5B):  # { [
                if len(stack) >= max_depth:
                    raise JSONTooDeep(f"JSON nesting deeper than {max_depth}")
                is_obj = c == 0x7B
                stack.append([is_obj, None if is_obj else 0])
                path.append("" if is_obj else 0)
                pos += 1
                state = "key_or_close" if is_obj else "value_or_close"
            else:
                m = _NUMBER.match(body, pos)
                if m and m.end() > pos:
                    pos = m.end()
                else:
                    for lit in (b"true", b"false", b"null"):
                        if body.startswith(lit, pos):
                            pos += len(lit)
                            break
                    else:
                        raise JSONSyntaxError("unexpected byte in JSON value")
                state = "after_value"
            if state == "after_value" and not stack:
                # top-level value done; only whitespace may follow
                pos = _WS.match(body, pos).end()
                if pos != n:
                    raise JSONSyntaxError("data after the JSON document")
                return
        elif state == "after_value":
            if not stack:
                raise JSONSyntaxError("data after the JSON document")
            top = stack[-1]
            if c == 0x2C:  # ,
                pos += 1
                if top[0]:
                    state = "key"
                else:
                    top[1] += 1
                    path[-1] = top[1]
                    state = "value"
            elif (c == 0x7D and top[0]) or (c == 0x5D and not top[0]):
                stack.pop()
                path.pop()
                pos += 1
                if not stack:
                    pos = _WS.match(body, pos).end()
                    if pos != n:
                        raise JSONSyntaxError("data after the JSON document")
                    return
            else:
                raise JSONSyntaxError("expected ',' or a closing bracket in JSON")
        elif state in ("key", "key_or_close"):
            if c == 0x7D and state == "key_or_close":
                stack.pop()
                path.pop()
                pos += 1
                state = "after_value"
                if not stack:
                    pos = _WS.match(body, pos).end()
                    if pos != n:
                        raise JSONSyntaxError("data after the JSON document")
                    return
                continue
            if c != 0x22:
                raise JSONSyntaxError("expected a JSON object key")
            m = _STRING_BODY.match(body, pos + 1)
            if not m:
                raise JSONSyntaxError("malformed JSON key")
            raw = body[pos:m.end()]
            try:
                key = json.loads(raw) if b"\\" in raw else raw[1:-1].decode("utf-8", "replace")
            except ValueError:
                key = raw[1:-1].decode("latin-1")
            path[-1] = key
            pos = m.end()
            state = "colon"
        elif state == "colon":
            if c != 0x3A:
                raise JSONSyntaxError("expected ':' after a JSON key")
            pos += 1
            state = "value"


# --- escaping -------------------------------------------------------------------------

_ESCAPE = re.compile(rb'\\(?:u([0-9a-fA-F]{4})|(["\\/bfnrt]))')
_SIMPLE = {b'"': 0x22, b"\\": 0x5C, b"/": 0x2F, b"b": 0x08, b"f": 0x0C, b"n": 0x0A, b"r": 0x0D, b"t": 0x09}
_DEFAULT = {0x22: b'\\"', 0x5C: b"\\\\", 0x08: b"\\b", 0x0C: b"\\f", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t"}


class EscapeConflict(ValueError):
    """The same character was written in two different ways: we cannot mimic the writer."""


_ESCAPE_SPLIT = re.compile(rb'(\\(?:u[0-9a-fA-F]{4}|["\\/bfnrt]))')
_NO_BACKSLASH_6 = re.compile(rb"[^\\]{6}")
_CHUNK = 1 << 18


def _escaped_byte(spelled: bytes) -> int:
    if spelled[1] == 0x75:  # \uXXXX
        cp = int(spelled[2:], 16)
        return cp if cp < 256 else 0
    return _SIMPLE[spelled[1:2]]


def _chunks(raw: bytes) -> Iterator[tuple[int, int]]:
    """Consecutive spans of `raw` whose borders never fall inside an escape.

    A border follows six bytes without a backslash: no escape (at most six bytes, always
    starting with one) can straddle it, and the escape search restarts there in step.
    """
    n = len(raw)
    a = 0
    while a < n:
        b = a + _CHUNK
        if b >= n:
            b = n
        else:
            m = _NO_BACKSLASH_6.search(raw, max(a, b - 6))
            b = m.end() if m else n
        yield a, b
        a = b


def distinct_bytes(data: bytes) -> set[int]:
    """``set(data)`` — even in the same iteration order — without building it from
    millions of ints for a long value.

    The distinct bytes of a sample are certainly present; one C-level translate then
    leaves only the bytes the sample missed (usually none).  Inserting them in order of
    first appearance lays the set out exactly as ``set(data)`` would.
    """
    if len(data) <= 4096:
        return set(data)
    found = set(data[:4096])
    rest = data.translate(None, bytes(found))
    if rest:
        found |= distinct_bytes(rest)
    return set(sorted(found, key=lambda ch: data.find(bytes([ch]))))


def unescape(raw: bytes) -> tuple[bytes, dict[int, bytes]]:
    """Decode a JSON string's raw bytes to latin-1 bytes plus how each escaped char was written.

    Characters above U+00FF become 0xFF-free placeholders that no base64 decoder accepts
    (b"\\x00"), which is enough for the image search.  Raises EscapeConflict when one
    character appears both escaped and literal, or with two escape spellings.  Works a
    chunk at a time, splitting on the escapes in C (a base64 photo written with ``\\/``
    holds a hundred thousand of them).
    """
    if b"\\" not in raw:
        return raw, {}
    spellings: dict[bytes, None] = {}   # every escape as written, first seen first
    literal_bytes: set[int] = set()     # every byte written literally
    decoded: list[bytes] = []
    for a, b in _chunks(raw):
        parts = _ESCAPE_SPLIT.split(raw[a:b])  # [literal, escape, literal, ..., literal]
        escapes = parts[1::2]
        seen = dict.fromkeys(escapes)
        spellings.update(seen)
        literal_bytes |= distinct_bytes(b"".join(parts[0::2]))
        as_byte = {e: bytes([_escaped_byte(e)]) for e in seen}
        parts[1::2] = map(as_byte.__getitem__, escapes)
        decoded.append(b"".join(parts))
    reprs: dict[int, bytes] = {}
    for spelled in spellings:
        prev = reprs.setdefault(_escaped_byte(spelled), spelled)
        if prev != spelled:
            raise EscapeConflict("a character is escaped two different ways")
    # a character that is escaped somewhere must not also appear literally
    for ch in reprs:
        if ch in literal_bytes:
            raise EscapeConflict("a character appears both escaped and literally")
    return b"".join(decoded), reprs


def escape(text: bytes, reprs: dict[int, bytes]) -> bytes:
    """Re-escape latin-1 `text` the way `unescape` saw it written (JSON defaults otherwise)."""
    table = dict(_DEFAULT)
    table.update(reprs)
    needed = [ch for ch in table if bytes([ch]) in text]
    for ch in range(0x20):
        if ch not in table and bytes([ch]) in text:
            table[ch] = b"\\u%04x" % ch
            needed.append(ch)
    return substitute(text, table, needed)


def substitute(text: bytes, table: dict[int, bytes], needed: list[int]) -> bytes:
    """Replace every byte of `text` listed in `needed` by ``table[byte]``, in one pass.

    Same result as a regex class ``sub`` with a per-match callback (replacements are
    never rescanned), but done in C: a megabyte-long value with many escaped characters
    would otherwise cost one Python call per character.  One ``bytes.replace`` per
    character is exact when each replacement holds no character still to be replaced
    after it (a backslash is escaped before the quote whose escape contains one); when
    no such order exists, split on the class, map the separators and join.
    """
    needed = [ch for ch in needed if table[ch] != bytes([ch])]  # identity: nothing to do
    if not needed:
        return text
    order: list[int] = []
    pending = list(needed)
    while pending:
        ready = next((c for c in pending if not any(x != c and x in pending for x in table[c])), None)
        if ready is None:
            break
        order.append(ready)
        pending.remove(ready)
    if not pending:
        for c in order:
            text = text.replace(bytes([c]), table[c])
        return text
    cls = re.compile(b"([" + b"".join(re.escape(bytes([c])) for c in needed) + b"])")
    parts = cls.split(text)
    by_char = {bytes([c]): table[c] for c in needed}
    parts[1::2] = map(by_char.__getitem__, parts[1::2])
    return b"".join(parts)
