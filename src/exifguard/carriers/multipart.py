"""A byte-exact multipart splitter (RFC 2046 / RFC 7578), bytes in, spans out.

Why our own: mitmproxy's ``multipart_form`` loses every CR/LF inside a part, drops
``filename=`` and part headers (see mitmproxy-notes.md §5).  This splitter never copies
or normalises anything: it only reports *where* the preamble, each part's header block,
each part's payload and the epilogue sit in the original body.  The caller replaces
payload spans (same length with the length-preserving engine) and every other byte —
boundary lines, CRLFs, header casing, preamble, epilogue — stays as it was.

Tolerated: quoted boundaries with extra parameters, LF-only line endings, odd header
casing, transport padding after a delimiter, folded header lines.  Anything else
(no opening or closing delimiter, a header block without a blank line, too many parts)
raises `MultipartError`; the caller then treats the body as "cannot parse" and never
rewrites half of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .embedded import find

MAX_HEADER_BLOCK = 64 * 1024


class MultipartError(ValueError):
    """The body is not well-formed multipart under the given boundary."""


@dataclass(frozen=True)
class Part:
    header_start: int
    header_end: int          # end of the header block (before the blank line)
    body_start: int
    body_end: int            # payload end (before the CRLF/LF that precedes the next delimiter)
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    @property
    def disposition(self) -> dict[str, str]:
        cd = self.header("content-disposition")
        return header_params(cd)[1] if cd else {}

    @property
    def name(self) -> str | None:
        return self.disposition.get("name")

    @property
    def filename(self) -> str | None:
        d = self.disposition
        if "filename*" in d:
            v = d["filename*"]
            m = re.match(r"(?i)([\w!#$%&+^`{}~-]*)'[^']*'(.*)", v)
            if m:
                from urllib.parse import unquote
                try:
                    return unquote(m.group(2), encoding=m.group(1) or "utf-8", errors="replace")
                except LookupError:
                    return unquote(m.group(2))
            return v
        return d.get("filename")

    @property
    def content_type(self) -> str | None:
        return self.header("content-type")


@dataclass(frozen=True)
class Multipart:
    boundary: bytes
    preamble_end: int
    parts: tuple[Part, ...]
    epilogue_start: int


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(r'\s*;\s*(' + _TOKEN + r')\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))', re.S)


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``type; a=b; c="d"`` into ("type", {"a": "b", "c": "d"}); names lowercased."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    if rest:
        for m in _PARAM.finditer(";" + rest):
            key = m.group(1).lower()
            if m.group(2) is not None:
                val = re.sub(r"\\(.)", r"\1", m.group(2))
            else:
                val = (m.group(3) or "").strip()
            params.setdefault(key, val)
    return main.strip().lower(), params


def boundary_from_content_type(content_type: str | None) -> bytes | None:
    """The boundary parameter of a multipart/* Content-Type (quoted or not), else None."""
    if not content_type:
        return None
    main, params = header_params(content_type)
    if not main.startswith("multipart/"):
        return None
    b = params.get("boundary")
    if not b or len(b) > 200:
        return None
    try:
        return b.encode("latin-1")
    except UnicodeEncodeError:
        return None


_FIRST_LINE = re.compile(rb"--([\x21-\x7e][\x20-\x7e]{0,199}?)[ \t]*\r?\n")


def sniff_boundary(body: bytes) -> bytes | None:
    """Guess the boundary of an unlabelled multipart body (first line ``--X`` and ``--X--`` later)."""
    m = _FIRST_LINE.match(body)
    if not m:
        return None
    b = m.group(1).rstrip(b" \t")
    if find(body, b"\n--" + b + b"--") >= 0:
        return b
    return None


def _is_delimiter_end(body: bytes, after: int) -> bool:
    """After ``--boundary``: ``--`` (close) or optional padding then a line end."""
    if body[after:after + 2] == b"--":
        return True
    i = after
    n = len(body)
    while i < n and body[i] in b" \t":
        i += 1
    return body[i:i + 1] == b"\n" or body[i:i + 2] == b"\r\n"


def _parse_headers(block: bytes) -> tuple[tuple[str, str], ...]:
    text = block.decode("latin-1")
    lines = re.split(r"\r?\n", text) if text else []
    out: list[list[str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:
            out[-1][1] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or not re.fullmatch(_TOKEN, name.strip()):
            raise MultipartError("a part header line is malformed")
        out.append([name.strip(), value.strip()])
    return tuple((k, v) for k, v in out)


def parse(body: bytes, boundary: bytes, *, max_parts: int = 1000) -> Multipart:
    """Locate every part of `body`.  Raises MultipartError if it is not well-formed."""
    if not boundary:
        raise MultipartError("empty boundary")
    delim = b"--" + boundary
    # opening delimiter: at the very start or at the start of a line
    if body.startswith(delim) and _is_delimiter_end(body, len(delim)):
        pos = 0
    else:
        pos = -1
        search = 0
        while True:
            k = find(body, b"\n" + delim, search)
            if k < 0:
                break
            if _is_delimiter_end(body, k + 1 + len(delim)):
                pos = k + 1
                break
            search = k + 1
        if pos < 0:
            raise MultipartError("the boundary from Content-Type never appears in the body")
    preamble_end = pos
    parts: list[Part] = []
    n = len(body)
    while True:
        after = pos + len(delim)
        if body[after:after + 2] == b"--":
            if not parts:
                raise MultipartError("multipart body closes before its first part")
            return Multipart(boundary, preamble_end, tuple(parts), after + 2)
        if len(parts) >= max_parts:
            raise MultipartError(f"more than {max_parts} multipart parts")
        i = after
        while i < n and body[i] in b" \t":
            i += 1
        if body[i:i + 2] == b"\r\n":
            i += 2
        elif body[i:i + 1] == b"\n":
            i += 1
        else:
            raise MultipartError("a boundary line is not followed by a line break")
        header_start = i
        # header block ends at the first empty line
        j = i
        while True:
            if j - header_start > MAX_HEADER_BLOCK:
                raise MultipartError("a part header block is too large")
            if body[j:j + 2] == b"\r\n":
                header_end, body_start = j, j + 2
                break
            if body[j:j + 1] == b"\n":
                header_end, body_start = j, j + 1
                break
            nl = body.find(b"\n", j)
            if nl < 0:
                raise MultipartError("a part header block never ends (no blank line)")
            j = nl + 1
        headers = _parse_headers(body[header_start:header_end].rstrip(b"\r\n"))
        # payload ends at the next delimiter at the start of a line
        search = body_start - 1
        while True:
            k = find(body, b"\n" + delim, search)
            if k < 0:
                raise MultipartError("the multipart body has no closing boundary (truncated?)")
            if _is_delimiter_end(body, k + 1 + len(delim)):
                break
            search = k + 1
        end = k - 1 if k > body_start and body[k - 1:k] == b"\r" else k
        end = max(end, body_start)
        parts.append(Part(header_start, header_end, body_start, end, headers))
        pos = k + 1


def payload_contains_delimiter(payload: bytes, boundary: bytes) -> bool:
    """Would this payload, placed in a part, end the part early?"""
    return (b"--" + boundary) in payload
