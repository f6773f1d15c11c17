"""Content-Encoding of request bodies, decoded streamed and capped; encoded back the same way.

Why not `request.content`: mitmproxy decodes the whole body in one call, so 3 MB of
gzip that inflates to 3 GiB takes 3 GiB (and more while it grows) before anyone can say
no.  Here every coding is decoded piece by piece and the output is counted as it is
produced: a body that inflates past `limit` is refused after at most about `limit`
inflated bytes (`InflatesTooLarge`), whatever its compression ratio.

Codings (RFC 9110 §8.4: listed in the order they were applied, so decoded in reverse):
gzip / x-gzip (several members allowed), deflate (zlib-wrapped, or raw as some clients
send it: mitmproxy accepts both), br, zstd, identity.  ``aws-chunked`` alone is left to
the carrier layer (its framing is not a compression; the carrier layer refuses images in
it).  Anything else cannot be inspected, so it is refused (`UnsupportedEncoding`): a
body we cannot read must not leave as if it had been checked.

Truncated streams, trailing bytes after the end of a stream (other than zero padding)
and corrupt data raise `DecodeError`: the raw body would be forwarded as it came, and
bytes we did not see would go with it.

Pure functions (no mitmproxy): the proxy calls them in its worker thread.
"""

from __future__ import annotations

import gzip
import io
import time
import zlib
from dataclasses import dataclass

IN_CHUNK = 64 * 1024
"""Compressed bytes fed per step (zlib honours an output cap per call, so this only
sets how often the deadline is checked)."""
OUT_CHUNK = 1024 * 1024
"""Largest piece of output asked for at once (zlib)."""

BROTLI_MAX_PER_INPUT_BYTE = 16 * 1024 * 1024
"""Most output one more input byte can release from brotli: one meta-block holds at most
16 MiB and its header takes far more than 8 bits, so at most one completes per byte
(measured: 8 MiB for zeros at quality 11).  brotli before 1.2 has no output cap, so it is
fed pieces no larger than the remaining budget divided by this."""
ZSTD_MAX_PER_INPUT_BYTE = 256 * 1024
"""Likewise for zstd: a block is at most 128 KiB of output and has a 3-byte header
(an RLE block turns 4 bytes into 128 KiB); doubled for safety."""
ZSTD_MAX_WINDOW = 64 * 1024 * 1024
"""Refuse zstd frames that need a larger decoding window (memory per inspection)."""

KNOWN = ("gzip", "deflate", "br", "zstd")
_ALIASES = {"x-gzip": "gzip"}
_TRANSPARENT = "aws-chunked"


class DecodeError(ValueError):
    """The body cannot be decoded; the message is for a person and never quotes the body."""


class UnsupportedEncoding(DecodeError):
    """A Content-Encoding exifguard cannot decode, so cannot inspect."""


class InflatesTooLarge(DecodeError):
    """Decoding would produce more than the inspection limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the upload inflates to more than {limit} bytes "
                         f"({_mib(limit)}, exifguard's inspection limit); not inspected")


class DecodeDeadline(DecodeError):
    """The inspection deadline passed while decoding."""


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB" if n >= 1024 * 1024 else f"{n} bytes"


@dataclass(frozen=True)
class Decoded:
    """A decoded body and how to encode a rewritten one the same way."""

    body: bytes
    codings: tuple[str, ...] = ()
    """As applied by the sender (header order), normalised; identity dropped."""
    raw_deflate: tuple[bool, ...] = ()
    """Per coding: True where a 'deflate' body came without the zlib wrapper."""


def parse_codings(header: str | None) -> tuple[str, ...]:
    """'gzip, br' -> ('gzip', 'br'); identity dropped; unknown codings raise.

    ``aws-chunked`` alone yields () (the carrier layer handles its framing); together
    with a compression it cannot be decoded here (the framing sits around the
    compressed object), so it is refused like any unknown coding.
    """
    tokens = [t.strip().lower() for t in (header or "").split(",")]
    tokens = [_ALIASES.get(t, t) for t in tokens if t and t != "identity"]
    if tokens == [_TRANSPARENT]:
        return ()
    for t in tokens:
        if t not in KNOWN:
            shown = t if len(t) <= 40 and t.isprintable() else t[:40].encode("ascii", "replace").decode() + "…"
            raise UnsupportedEncoding(f"the upload's Content-Encoding {shown!r} cannot be decoded, so "
                                      "it cannot be inspected")
    return tuple(tokens)


class _Sink:
    """Collects output, refusing more than `limit` bytes; checks the deadline."""

    def __init__(self, limit: int, deadline: float | None) -> None:
        self.limit = limit
        self.deadline = deadline
        self.n = 0
        # BytesIO grows in place and getvalue() hands over its buffer without a copy,
        # so a body near the limit costs about one limit of memory, not two.
        self.buf = io.BytesIO()

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.n += len(data)
        if self.n > self.limit:
            raise InflatesTooLarge(self.limit)
        self.buf.write(data)

    def room(self) -> int:
        """Output to ask for next: one byte more than allowed tells "too large" apart."""
        return max(1, min(OUT_CHUNK, self.limit - self.n + 1))

    def remaining(self) -> int:
        return max(0, self.limit - self.n)

    def tick(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DecodeDeadline("the inspection deadline passed while decoding the upload")

    def value(self) -> bytes:
        out = self.buf.getvalue()
        self.buf = io.BytesIO()
        return out


def _trailing_ok(rest: memoryview) -> bool:
    return not rest or rest.tobytes().count(0) == len(rest)


def _inflate_one(data: memoryview, wbits: int, sink: _Sink, what: str) -> int:
    """Inflate one zlib/gzip/raw stream from the start of `data`; returns bytes consumed."""
    d = zlib.decompressobj(wbits)
    pos = 0
    try:
        while pos < len(data) and not d.eof:
            sink.tick()
            chunk = data[pos:pos + IN_CHUNK]
            pos += len(chunk)
            buf: bytes | memoryview = chunk
            while True:
                room = sink.room()
                out = d.decompress(buf, room)
                sink.write(out)
                buf = d.unconsumed_tail
                if d.eof or (not buf and len(out) < room):
                    break
        while not d.eof:  # input used up; output may still be pending inside zlib
            room = sink.room()
            out = d.decompress(b"", room)
            sink.write(out)
            if len(out) < room:
                break
    except zlib.error:
        raise DecodeError(f"the upload's {what} data is corrupt") from None
    if not d.eof:
        raise DecodeError(f"the upload's {what} data is truncated")
    return pos - len(d.unused_data)


def _gzip(data: memoryview, sink: _Sink) -> None:
    pos = 0
    while True:
        pos += _inflate_one(data[pos:], 31, sink, "gzip")
        rest = data[pos:]
        if _trailing_ok(rest):
            return
        if rest[:2].tobytes() != b"\x1f\x8b":
            raise DecodeError("the upload has bytes after the end of its gzip data")


def _deflate(data: memoryview, sink: _Sink) -> bool:
    """Returns True when the body was raw deflate (no zlib wrapper)."""
    start_n = sink.n
    try:
        end = _inflate_one(data, 15, sink, "deflate")
        raw = False
    except DecodeError as exc:
        if isinstance(exc, (InflatesTooLarge, DecodeDeadline)):
            raise
        # not zlib-wrapped: what mitmproxy (and zlib's own lenient mode) accepts as raw deflate
        sink.n = start_n
        sink.buf.seek(0)
        sink.buf.truncate()
        end = _inflate_one(data, -15, sink, "deflate")
        raw = True
    if not _trailing_ok(data[end:]):
        raise DecodeError("the upload has bytes after the end of its deflate data")
    return raw


class _Feeder:
    """Input pieces for a decoder without an output cap: each small enough that even the
    worst expansion (`per_byte` output bytes per input byte) stays within what the sink
    may still take, so the overshoot past the limit is at most one `per_byte`."""

    def __init__(self, data: memoryview, sink: _Sink, per_byte: int) -> None:
        self.data, self.sink, self.per_byte = data, sink, per_byte
        self.pos = 0

    def next(self) -> memoryview | None:
        if self.pos >= len(self.data):
            return None
        size = max(1, min(IN_CHUNK, self.sink.remaining() // self.per_byte))
        piece = self.data[self.pos:self.pos + size]
        self.pos += len(piece)
        return piece


def _brotli(data: memoryview, sink: _Sink) -> None:
    import brotli  # a mitmproxy dependency

    d = brotli.Decompressor()
    # brotli >= 1.2: process(data, output_buffer_limit=N) stops growing its output at N and
    # hands out the rest on later calls with empty input (until can_accept_more_data())
    capped = hasattr(d, "can_accept_more_data")
    try:
        if capped:
            pos = 0
            while pos < len(data):
                sink.tick()
                chunk = data[pos:pos + IN_CHUNK]
                pos += len(chunk)
                room = max(1, sink.room())
                out = d.process(chunk, output_buffer_limit=room)
                sink.write(out)
                while len(out) >= room or not d.can_accept_more_data():
                    room = max(1, sink.room())
                    out = d.process(b"", output_buffer_limit=room)
                    sink.write(out)
                    if not out:
                        break
        else:
            feed = _Feeder(data, sink, BROTLI_MAX_PER_INPUT_BYTE)
            steps = 0
            while (piece := feed.next()) is not None:
                steps += 1
                if steps % 1024 == 0:
                    sink.tick()
                sink.write(d.process(piece))
                if d.is_finished():
                    break
            pos = feed.pos
        finished = d.is_finished()
    except brotli.error:
        raise DecodeError("the upload's br (brotli) data is corrupt") from None
    if not finished:
        raise DecodeError("the upload's br (brotli) data is truncated")
    if not _trailing_ok(data[pos:]):
        raise DecodeError("the upload has bytes after the end of its br (brotli) data")


def _zstd(data: memoryview, sink: _Sink) -> None:
    import zstandard  # a mitmproxy dependency

    dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
    pos = 0
    try:
        while True:
            d = dctx.decompressobj()
            feed = _Feeder(data[pos:], sink, ZSTD_MAX_PER_INPUT_BYTE)
            steps = 0
            while not d.eof and (piece := feed.next()) is not None:
                steps += 1
                if steps % 64 == 0:
                    sink.tick()
                sink.write(d.decompress(piece))
            if not d.eof:
                raise DecodeError("the upload's zstd data is truncated")
            pos += feed.pos - len(d.unused_data)
            rest = data[pos:]
            if _trailing_ok(rest):
                return
            # another frame follows (zstd allows concatenated frames)
    except zstandard.ZstdError as exc:
        why = "needs too large a decoding window" if "window" in str(exc).lower() else "is corrupt"
        raise DecodeError(f"the upload's zstd data {why}") from None


def decode(raw: bytes, header: str | None, *, limit: int, deadline: float | None = None) -> Decoded:
    """Decode a body sent with Content-Encoding `header`, producing at most `limit` bytes.

    Raises `UnsupportedEncoding`, `InflatesTooLarge`, `DecodeDeadline` or `DecodeError`.
    """
    codings = parse_codings(header)
    if not codings:
        return Decoded(raw)
    body: bytes = raw
    raw_flags: list[bool] = []
    for coding in reversed(codings):
        sink = _Sink(limit, deadline)
        view = memoryview(body)
        flag = False
        if not body:
            pass  # an empty body stays empty under every coding (as mitmproxy has it)
        elif coding == "gzip":
            _gzip(view, sink)
        elif coding == "deflate":
            flag = _deflate(view, sink)
        elif coding == "br":
            _brotli(view, sink)
        else:
            _zstd(view, sink)
        view.release()
        body = sink.value() if body else b""
        raw_flags.append(flag)
    return Decoded(body, codings, tuple(reversed(raw_flags)))


def encode(body: bytes, how: Decoded) -> bytes:
    """Encode a rewritten body with the codings it came with (same order)."""
    out = body
    flags = how.raw_deflate or (False,) * len(how.codings)
    for coding, raw in zip(how.codings, flags):
        if coding == "gzip":
            out = gzip.compress(out, mtime=0)
        elif coding == "deflate":
            c = zlib.compressobj(wbits=-15 if raw else 15)
            out = c.compress(out) + c.flush()
        elif coding == "br":
            import brotli
            out = brotli.compress(out, quality=5)  # 11 (the default) is far too slow in a proxy
        elif coding == "zstd":
            import zstandard
            out = zstandard.ZstdCompressor(level=3).compress(out)
        else:  # pragma: no cover - parse_codings admits nothing else
            raise UnsupportedEncoding(f"cannot encode {coding!r}")
    return out


__all__ = ["DecodeDeadline", "DecodeError", "Decoded", "InflatesTooLarge", "UnsupportedEncoding",
           "decode", "encode", "parse_codings"]
