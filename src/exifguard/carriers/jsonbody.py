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
                m = _STRING_BODY.match(body, pos + 1)
                if not m:
                    raise JSONSyntaxError("malformed JSON string")
                yield JSONString(pos + 1, m.end() - 1, tuple(path))
                pos = m.end()
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


def unescape(raw: bytes) -> tuple[bytes, dict[int, bytes]]:
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


def escape(text: bytes, reprs: dict[int, bytes]) -> bytes:
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
