"""ICAP/1.0 wire format (RFC 3507), sans I/O: an incremental request parser and the
response writers.

Why our own: no maintained asyncio ICAP *server* with Preview support exists for
Python (../shared/docs/icap-squid.md), and the parts an adaptation service needs are
small.  Being sans-I/O, the parser is tested with every request split at every byte
boundary: TCP may deliver any piece of it in any read.

What it checks, and why it refuses rather than guesses (a wrongly framed body could
make us inspect one thing while the proxy forwards another):
  * the request line (``METHOD SP icap-URI SP ICAP/1.0``) and header syntax (400);
    another ICAP version is 505, an unknown method 501 (the server decides 404/405);
  * ``Encapsulated`` (§4.4.1): known section names in the order the RFC gives, offsets
    that start at 0 and strictly increase, exactly one body entry and it last, the
    header sections ending in an empty line exactly at the next offset (400);
  * the encapsulated body in HTTP/1.1 chunked form (§4.4.1), chunk sizes in hex with
    optional extensions; ``ieof`` on the last chunk of a Preview (§4.5) says the preview
    held the whole body.

The server drives the preview: after a `PreviewEnd` without ieof, the parser waits
until the server either calls `continue_body()` (it sent ``100 Continue``) or
`next_request()` (it answered from the preview; the client sends no more of that body).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, auto
from urllib.parse import urlsplit

MAX_ICAP_HEAD = 64 * 1024
"""Largest ICAP header block (request line + headers) accepted."""
MAX_HTTP_HEAD = 256 * 1024
"""Largest encapsulated HTTP header section accepted (cookies can be long)."""
MAX_CHUNK_LINE = 4096
MAX_TRAILER = 16 * 1024

KNOWN_METHODS = ("REQMOD", "RESPMOD", "OPTIONS")
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEX = re.compile(rb"^[0-9A-Fa-f]{1,16}$")
_VERSION = re.compile(r"^ICAP/(\d)\.(\d)$")

REASONS = {
    100: "Continue", 200: "OK", 204: "No Content", 400: "Bad Request", 404: "ICAP Service Not Found",
    405: "Method Not Allowed For Service", 408: "Request Timeout", 500: "Server Error",
    501: "Method Not Implemented", 503: "Service Overloaded", 505: "ICAP Version Not Supported",
}

HTTP_REASONS = {200: "OK", 403: "Forbidden", 413: "Content Too Large", 415: "Unsupported Media Type",
                422: "Unprocessable Content", 500: "Internal Server Error", 503: "Service Unavailable"}


class ICAPError(Exception):
    """A request the server must answer with an ICAP error status (and then close)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


# ---- headers ---------------------------------------------------------------------------
@dataclass
class Headers:
    """An ordered, case-insensitive multi-map of header fields (names as received)."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str, default: str | None = None) -> str | None:
        n = name.lower()
        for k, v in self.items:
            if k.lower() == n:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self.items if k.lower() == n]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def set(self, name: str, value: str) -> None:
        """Replace every field of that name by one (in the first one's place), or append."""
        n = name.lower()
        out: list[tuple[str, str]] = []
        done = False
        for k, v in self.items:
            if k.lower() == n:
                if not done:
                    out.append((k, value))
                    done = True
            else:
                out.append((k, v))
        if not done:
            out.append((name, value))
        self.items = out

    def remove(self, name: str) -> None:
        n = name.lower()
        self.items = [(k, v) for k, v in self.items if k.lower() != n]

    def tokens(self, name: str) -> set[str]:
        """Comma-separated tokens of every field of that name, lower-cased."""
        return {t.strip().lower() for v in self.get_all(name) for t in v.split(",") if t.strip()}


def parse_header_lines(lines: Sequence[bytes], what: str) -> Headers:
    """`name: value` lines (already split, no empty line) -> Headers; raises ICAPError(400)."""
    h = Headers()
    for line in lines:
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            raise ICAPError(400, f"folded header line in the {what} (obsolete line folding is not accepted)")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise ICAPError(400, f"malformed header line in the {what}")
        h.items.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
    return h


def _split_lines(block: bytes) -> list[bytes]:
    lines = block.split(b"\n")
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


# ---- the encapsulated HTTP request -----------------------------------------------------
@dataclass
class HTTPHead:
    """An encapsulated HTTP request (or response) header section."""

    start_line: str
    headers: Headers
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes, what: str = "encapsulated HTTP header") -> "HTTPHead":
        if not raw.endswith(b"\r\n\r\n") and not raw.endswith(b"\n\n"):
            raise ICAPError(400, f"the {what} does not end with an empty line at the offset "
                                 "the Encapsulated header gives")
        lines = _split_lines(raw.rstrip(b"\r\n"))
        if not lines or not lines[0]:
            raise ICAPError(400, f"the {what} has no start line")
        try:
            start = lines[0].decode("ascii")
        except UnicodeDecodeError:
            raise ICAPError(400, f"the {what} start line is not ASCII") from None
        return cls(start, parse_header_lines(lines[1:], what), raw)

    @property
    def method(self) -> str:
        return self.start_line.split(" ", 1)[0].upper()

    @property
    def target(self) -> str:
        parts = self.start_line.split(" ")
        return parts[1] if len(parts) >= 3 else ""

    @property
    def version(self) -> str:
        parts = self.start_line.rsplit(" ", 1)
        return parts[1] if len(parts) == 2 else "HTTP/1.1"

    def host(self) -> str:
        """The request's host: from an absolute target (Squid sends the full URL), else Host."""
        t = self.target
        if "://" in t:
            try:
                return urlsplit(t).hostname or ""
            except ValueError:
                return ""
        if self.method == "CONNECT":
            return t.rsplit(":", 1)[0]
        return (self.headers.get("host") or "").strip()

    def url(self) -> str:
        """The absolute URL (https assumed when only the origin-form path was given)."""
        t = self.target
        if "://" in t:
            return t
        return f"https://{(self.headers.get('host') or '').strip()}{t}"

    def path(self) -> str:
        t = self.target
        if "://" in t:
            try:
                u = urlsplit(t)
            except ValueError:
                return "/"
            return (u.path or "/") + (f"?{u.query}" if u.query else "")
        return t or "/"

    def render(self) -> bytes:
        """The header section as bytes (the original when nothing was changed)."""
        out = [self.start_line.encode("ascii")]
        out += [f"{k}: {v}".encode("latin-1") for k, v in self.headers.items]
        return b"\r\n".join(out) + b"\r\n\r\n"


# ---- the ICAP request ---------------------------------------------------------------------
_SECTION_ORDER = {"req-hdr": 0, "res-hdr": 1, "req-body": 2, "res-body": 2, "null-body": 2, "opt-body": 2}
_BODIES = ("req-body", "res-body", "null-body", "opt-body")


def parse_encapsulated(value: str | None, method: str) -> list[tuple[str, int]]:
    """Validate an Encapsulated header (§4.4.1) -> [(section, offset)].  Raises ICAPError(400)."""
    if value is None:
        if method == "OPTIONS":
            return [("null-body", 0)]
        raise ICAPError(400, f"{method} without an Encapsulated header")
    out: list[tuple[str, int]] = []
    for part in value.split(","):
        name, sep, off = part.strip().partition("=")
        name = name.strip().lower()
        off = off.strip()
        if not sep or name not in _SECTION_ORDER or not off.isdigit() or len(off) > 12:
            raise ICAPError(400, "malformed Encapsulated header")
        out.append((name, int(off)))
    if not out or out[0][1] != 0:
        raise ICAPError(400, "Encapsulated header: the first section must start at offset 0")
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ICAPError(400, "Encapsulated header names a section twice")
    if names[-1] not in _BODIES or sum(n in _BODIES for n in names) != 1:
        raise ICAPError(400, "Encapsulated header must end with exactly one body section "
                             "(req-body, res-body, null-body or opt-body)")
    for (a, oa), (b, ob) in zip(out, out[1:]):
        if _SECTION_ORDER[b] <= _SECTION_ORDER[a] and not (a == "req-hdr" and b == "res-hdr"):
            raise ICAPError(400, "Encapsulated header sections are out of order")
        if ob <= oa:
            raise ICAPError(400, "Encapsulated header offsets must strictly increase")
    allowed = {"REQMOD": {"req-hdr", "req-body", "null-body"},
               "RESPMOD": {"req-hdr", "res-hdr", "res-body", "null-body"},
               "OPTIONS": {"null-body", "opt-body"}}.get(method, set(_SECTION_ORDER))
    if not set(names) <= allowed:
        raise ICAPError(400, f"Encapsulated sections {', '.join(names)} are not valid in {method}")
    if method == "REQMOD" and names[0] != "req-hdr":
        raise ICAPError(400, "REQMOD must encapsulate the HTTP request header (req-hdr)")
    return out


@dataclass
class ICAPRequest:
    method: str
    uri: str
    version: str
    headers: Headers
    encapsulated: list[tuple[str, int]]
    sections: dict[str, bytes] = field(default_factory=dict)
    """Raw header sections by name (req-hdr, res-hdr)."""

    @property
    def service(self) -> str:
        """The icap-URI's path ("/reqmod"), without a query."""
        try:
            u = urlsplit(self.uri)
        except ValueError:
            return ""
        return u.path if "://" in self.uri else self.uri.split("?", 1)[0]

    @property
    def has_body(self) -> bool:
        return self.encapsulated[-1][0] != "null-body"

    @property
    def preview(self) -> int | None:
        v = self.headers.get("preview")
        if v is None:
            return None
        v = v.strip()
        if not v.isdigit() or len(v) > 12:
            raise ICAPError(400, "malformed Preview header")
        return int(v)

    @property
    def allow_204(self) -> bool:
        return "204" in self.headers.tokens("allow")

    @property
    def close(self) -> bool:
        return "close" in self.headers.tokens("connection")

    def http_head(self) -> HTTPHead | None:
        raw = self.sections.get("req-hdr")
        return HTTPHead.parse(raw) if raw is not None else None


def parse_icap_head(block: bytes) -> tuple[str, str, str, Headers]:
    """The ICAP request line and headers (without the empty line) -> parts; raises ICAPError."""
    lines = _split_lines(block)
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not all(parts):
        raise ICAPError(400, "malformed ICAP request line")
    try:
        method, uri, version = (p.decode("ascii") for p in parts)
    except UnicodeDecodeError:
        raise ICAPError(400, "ICAP request line is not ASCII") from None
    if not _TOKEN.match(parts[0]):
        raise ICAPError(400, "malformed ICAP method")
    m = _VERSION.match(version)
    if m is None:
        raise ICAPError(400, "malformed ICAP version")
    if version != "ICAP/1.0":
        raise ICAPError(505, f"{version} is not supported (this service speaks ICAP/1.0)")
    if method not in KNOWN_METHODS:
        raise ICAPError(501, f"ICAP method {method} is not implemented")
    headers = parse_header_lines(lines[1:], "ICAP header")
    return method, uri, version, headers


# ---- events ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestHead:
    """An ICAP request's head and every encapsulated header section are in."""
    request: ICAPRequest


@dataclass(frozen=True)
class BodyData:
    data: bytes


@dataclass(frozen=True)
class PreviewEnd:
    """The preview's last chunk; `ieof`: the preview held the whole body."""
    ieof: bool


@dataclass(frozen=True)
class BodyEnd:
    """The last chunk of the (rest of the) body."""


Event = RequestHead | BodyData | PreviewEnd | BodyEnd


class _S(Enum):
    HEAD = auto()
    SECTIONS = auto()
    CHUNK_SIZE = auto()
    CHUNK_DATA = auto()
    CHUNK_CRLF = auto()
    TRAILER = auto()
    WAIT = auto()      # preview answered: waiting for continue_body() or next_request()
    DONE = auto()      # request complete: waiting for next_request()


class Parser:
    """Incremental ICAP request parser: `feed(bytes) -> [events]`; see the module docstring."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = _S.HEAD
        self._req: ICAPRequest | None = None
        self._sections_len = 0
        self._remaining = 0
        self._in_preview = False
        self._ieof = False
        self._trailer = 0

    @property
    def idle(self) -> bool:
        """Between requests with nothing buffered (a close here loses nothing)."""
        return self._state is _S.HEAD and not self._buf

    @property
    def waiting(self) -> bool:
        return self._state is _S.WAIT

    def continue_body(self) -> list[Event]:
        """The server sent 100 Continue: the rest of the body follows (events for any of it
        already buffered are returned)."""
        if self._state is not _S.WAIT:
            raise RuntimeError("continue_body() outside a preview")
        self._in_preview = False
        self._state = _S.CHUNK_SIZE
        return self.feed(b"")

    def next_request(self) -> list[Event]:
        """The server answered the current request; parse whatever follows."""
        if self._state not in (_S.DONE, _S.WAIT):
            raise RuntimeError("next_request() before the request was complete")
        self._state = _S.HEAD
        self._req = None
        return self.feed(b"")

    def feed(self, data: bytes) -> list[Event]:
        if data:
            self._buf += data
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    # ---- the state machine ------------------------------------------------------------
    def _line(self, limit: int, what: str) -> bytes | None:
        i = self._buf.find(b"\n")
        if i < 0:
            if len(self._buf) > limit:
                raise ICAPError(400, f"{what} too long")
            return None
        if i > limit:
            raise ICAPError(400, f"{what} too long")
        line = bytes(self._buf[:i])
        del self._buf[:i + 1]
        return line[:-1] if line.endswith(b"\r") else line

    def _step(self, events: list[Event]) -> bool:
        s = self._state
        if s is _S.HEAD:
            while self._buf[:2] == b"\r\n":  # tolerate stray CRLF between requests
                del self._buf[:2]
            i = self._buf.find(b"\r\n\r\n")
            if i < 0:
                if len(self._buf) > MAX_ICAP_HEAD:
                    raise ICAPError(400, "ICAP header block too long")
                return False
            if i > MAX_ICAP_HEAD:
                raise ICAPError(400, "ICAP header block too long")
            block = bytes(self._buf[:i])
            del self._buf[:i + 4]
            method, uri, version, headers = parse_icap_head(block)
            enc = parse_encapsulated(headers.get("encapsulated"), method)
            self._req = ICAPRequest(method, uri, version, headers, enc)
            self._req.preview  # validate early  # noqa: B018
            self._sections_len = enc[-1][1]
            if self._sections_len > MAX_HTTP_HEAD:
                raise ICAPError(400, "encapsulated header sections too long")
            self._state = _S.SECTIONS
            return True
        if s is _S.SECTIONS:
            if len(self._buf) < self._sections_len:
                return False
            req = self._req
            assert req is not None
            raw = bytes(self._buf[:self._sections_len])
            del self._buf[:self._sections_len]
            enc = req.encapsulated
            for (name, off), (_, end) in zip(enc, enc[1:]):
                section = raw[off:end]
                if not section.endswith(b"\r\n\r\n"):
                    raise ICAPError(400, f"the encapsulated {name} section does not end with an empty "
                                         "line at the offset the Encapsulated header gives")
                req.sections[name] = section
            events.append(RequestHead(req))
            if req.has_body:
                self._in_preview = req.preview is not None
                self._state = _S.CHUNK_SIZE
            else:
                self._state = _S.DONE
            return True
        if s is _S.CHUNK_SIZE:
            line = self._line(MAX_CHUNK_LINE, "chunk-size line")
            if line is None:
                return False
            size_s, _, ext = line.partition(b";")
            size_s = size_s.strip(b" \t")
            if not _HEX.match(size_s):
                raise ICAPError(400, "malformed chunk size in the encapsulated body")
            size = int(size_s, 16)
            if size:
                self._remaining = size
                self._state = _S.CHUNK_DATA
                return True
            self._ieof = any(e.strip(b" \t").lower() == b"ieof" for e in ext.split(b";"))
            self._trailer = 0
            self._state = _S.TRAILER
            return True
        if s is _S.CHUNK_DATA:
            if not self._buf:
                return False
            n = min(self._remaining, len(self._buf))
            events.append(BodyData(bytes(self._buf[:n])))
            del self._buf[:n]
            self._remaining -= n
            if self._remaining == 0:
                self._state = _S.CHUNK_CRLF
            return True
        if s is _S.CHUNK_CRLF:
            if len(self._buf) < 2:
                if self._buf[:1] not in (b"", b"\r", b"\n"):
                    raise ICAPError(400, "chunk data longer than its size")
                if self._buf[:1] == b"\n":
                    del self._buf[:1]
                    self._state = _S.CHUNK_SIZE
                    return True
                return False
            if self._buf[:2] == b"\r\n":
                del self._buf[:2]
            elif self._buf[:1] == b"\n":
                del self._buf[:1]
            else:
                raise ICAPError(400, "chunk data longer than its size")
            self._state = _S.CHUNK_SIZE
            return True
        if s is _S.TRAILER:
            line = self._line(MAX_CHUNK_LINE, "trailer line")
            if line is None:
                return False
            if line:
                self._trailer += len(line)
                if self._trailer > MAX_TRAILER:
                    raise ICAPError(400, "encapsulated body trailer too long")
                return True
            if self._in_preview:
                events.append(PreviewEnd(self._ieof))
                self._state = _S.DONE if self._ieof else _S.WAIT
            else:
                events.append(BodyEnd())
                self._state = _S.DONE
            return True
        return False  # WAIT / DONE: the server decides


# ---- responses -------------------------------------------------------------------------------
def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n" if data else b""


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"ICAP/1.0 100 Continue\r\n\r\n"


def response_head(status: int, headers: Iterable[tuple[str, str]],
                  sections: Sequence[tuple[str, bytes]] = (), body: str | None = None) -> bytes:
    """An ICAP response head with its Encapsulated header and header sections.

    `sections`: [("req-hdr" | "res-hdr", raw bytes)]; `body`: the body section name
    ("req-body" / "res-body") or None (null-body).  The body chunks follow separately.
    """
    lines = [f"ICAP/1.0 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if status not in (100, 204) or sections:
        enc, off = [], 0
        for name, raw in sections:
            enc.append(f"{name}={off}")
            off += len(raw)
        enc.append(f"{body or 'null-body'}={off}")
        lines.append("Encapsulated: " + ", ".join(enc))
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + b"".join(raw for _, raw in sections)


def chunked(body: bytes, size: int | None = None) -> list[bytes]:
    """A body as ICAP chunks, ending with the last chunk: one chunk by default (pieces to
    write, not joined: a large body is not copied into chunk-sized pieces first)."""
    if not body:
        return [LAST_CHUNK]
    if size is None:
        return [b"%x\r\n" % len(body), body, b"\r\n" + LAST_CHUNK]
    mv = memoryview(body)
    return [chunk(bytes(mv[i:i + size])) for i in range(0, len(body), size)] + [LAST_CHUNK]


def http_response_head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTP_REASONS.get(status, 'Error')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
