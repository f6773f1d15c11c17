"""Bounded Content-Encoding decoding (exifguard.proxy.decode).

Reproduction from issue 11: 3.2 MB of gzip inflating to 3 GiB drove mitmdump to 6.8 GB,
because `request.content` inflates the whole body at once.  Here each coding is decoded
streamed and a bomb is refused after about `limit` inflated bytes; memory is measured
with tracemalloc (every output buffer is a Python object, so it is counted).
"""

from __future__ import annotations

import gzip
import os
import time
import tracemalloc
import zlib

import brotli
import pytest
import zstandard
from mitmproxy.net import encoding as mitm_encoding

from exifguard.proxy import decode as dec
from exifguard.proxy.decode import (DecodeDeadline, DecodeError, InflatesTooLarge, UnsupportedEncoding, decode,
                                    encode, parse_codings)

CANARY = b"GPS-CANARY-48.8566N"
BODY = os.urandom(50_000) + CANARY + b"hello world " * 5000
MiB = 1024 * 1024


def raw_deflate(b: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(b) + c.flush()


def zstd(b: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(b)


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd,
}


@pytest.mark.parametrize("header", ["gzip", "x-gzip", "deflate", "br", "zstd", "GZIP", " gzip "])
def test_each_coding_decodes_and_reencodes(header):
    raw = ENCODERS[header.strip().lower()](BODY)
    d = decode(raw, header, limit=4 * MiB)
    assert d.body == BODY
    again = encode(d.body, d)
    assert decode(again, header, limit=4 * MiB).body == BODY


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_reencoded_body_decodes_with_mitmproxy_too(coding):
    """What the service gets must decode with a standard decoder (mitmproxy's stands in)."""
    d = decode(ENCODERS[coding](BODY), coding, limit=4 * MiB)
    assert mitm_encoding.decode(encode(b"cleaned " + BODY, d), coding) == b"cleaned " + BODY


def test_raw_deflate_is_accepted_and_kept_raw():
    d = decode(raw_deflate(BODY), "deflate", limit=4 * MiB)
    assert d.body == BODY and d.raw_deflate == (True,)
    out = encode(BODY, d)
    assert zlib.decompress(out, -15) == BODY
    assert decode(zlib.compress(BODY), "deflate", limit=4 * MiB).raw_deflate == (False,)


@pytest.mark.parametrize("header,layers", [
    ("gzip, br", [gzip.compress, brotli.compress]),
    ("br,zstd", [brotli.compress, zstd]),
    ("deflate, identity, gzip", [zlib.compress, gzip.compress]),
])
def test_stacked_codings_are_undone_in_reverse(header, layers):
    raw = BODY
    for f in layers:  # applied in header order
        raw = f(raw)
    d = decode(raw, header, limit=4 * MiB)
    assert d.body == BODY
    redone = encode(BODY, d)
    for f, name in zip(reversed(layers), reversed(d.codings)):
        redone = mitm_encoding.decode(redone, name)
    assert redone == BODY


def test_identity_and_absent_header_return_the_same_object():
    assert decode(BODY, None, limit=4 * MiB).body is BODY
    assert decode(BODY, "identity", limit=4 * MiB).body is BODY
    assert decode(BODY, "", limit=4 * MiB).codings == ()


def test_multi_member_gzip_and_zero_padding():
    raw = gzip.compress(BODY[:1000]) + gzip.compress(BODY[1000:]) + b"\x00" * 16
    assert decode(raw, "gzip", limit=4 * MiB).body == BODY


def test_multi_frame_zstd():
    raw = zstd(BODY[:1000]) + zstd(BODY[1000:])
    assert decode(raw, "zstd", limit=4 * MiB).body == BODY


def test_empty_body_under_any_coding():
    for c in ("gzip", "br", "zstd", "deflate"):
        assert decode(b"", c, limit=10).body == b""


# ---- refusals --------------------------------------------------------------------------

@pytest.mark.parametrize("header", ["compress", "x-compress", "gzip, foo", "utf8", "base64", "rot13",
                                    "aws-chunked, gzip", "none"])
def test_unknown_codings_are_refused(header):
    with pytest.raises(UnsupportedEncoding, match="cannot be decoded"):
        parse_codings(header)
    with pytest.raises(UnsupportedEncoding):
        decode(BODY, header, limit=4 * MiB)


def test_aws_chunked_alone_is_left_to_the_carrier_layer():
    assert parse_codings("aws-chunked") == ()
    assert decode(BODY, "aws-chunked", limit=4 * MiB).body is BODY


def test_hostile_coding_name_is_shortened_in_the_message():
    with pytest.raises(UnsupportedEncoding) as e:
        parse_codings("x" * 500 + "\x1b[31m")
    assert len(str(e.value)) < 200 and "\x1b" not in str(e.value)


def _damaged(coding: str) -> list[bytes]:
    good = ENCODERS[coding](BODY)
    middle = len(good) // 2
    return [good[:-9], good + b"JUNK-AFTER-END", good[:middle] + bytes(64) + good[middle + 64:]]


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_truncated_trailing_junk_and_corrupt_data_are_refused(coding):
    truncated, junk, corrupt = _damaged(coding)
    for bad in (truncated, junk):
        with pytest.raises(DecodeError) as e:
            decode(bad, coding, limit=4 * MiB)
        assert CANARY.decode() not in str(e.value) and "JUNK" not in str(e.value)
    try:
        got = decode(corrupt, coding, limit=4 * MiB).body
    except DecodeError:
        return
    # brotli and (by default) zstd carry no checksum: damage can decode to other bytes.
    # Then what we inspect must be exactly what a standard decoder (the service's) makes of it.
    assert coding in ("br", "zstd") and got == mitm_encoding.decode(corrupt, coding)


def _zeros_compressed(coding: str, total: int) -> bytes:
    """`total` zero bytes compressed, built without holding them (except brotli: small enough)."""
    chunk = bytes(MiB)
    if coding in ("gzip", "deflate"):
        c = zlib.compressobj(9, zlib.DEFLATED, 31 if coding == "gzip" else 15)
        return b"".join(c.compress(chunk) for _ in range(total // MiB)) + c.flush()
    if coding == "zstd":
        c = zstandard.ZstdCompressor().compressobj()
        return b"".join(c.compress(chunk) for _ in range(total // MiB)) + c.flush()
    comp = brotli.Compressor(quality=5)
    return b"".join(comp.process(chunk) for _ in range(total // MiB)) + comp.finish()


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_bomb_is_refused_after_about_limit_bytes(coding):
    limit = 4 * MiB
    bomb = _zeros_compressed(coding, 64 * MiB)
    assert len(bomb) < MiB
    tracemalloc.start()
    try:
        with pytest.raises(InflatesTooLarge, match=f"inflates to more than {limit} bytes") as e:
            decode(bomb, coding, limit=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert e.value.limit == limit
    # the output buffer (<= limit, grown by BytesIO) plus one overshooting piece: brotli
    # before 1.2 cannot cap its output, so one input byte may release one meta-block
    slack = dec.BROTLI_MAX_PER_INPUT_BYTE if coding == "br" else dec.OUT_CHUNK
    assert peak < 2 * limit + slack + MiB, peak


def test_stacked_bomb_is_refused_at_the_inner_layer():
    inner = _zeros_compressed("gzip", 64 * MiB)   # ~64 KB
    raw = brotli.compress(inner)                   # "gzip, br": br outermost
    with pytest.raises(InflatesTooLarge):
        decode(raw, "gzip, br", limit=4 * MiB)


def test_body_just_under_the_limit_passes_and_just_over_is_refused():
    body = b"a" * 1000
    assert decode(gzip.compress(body), "gzip", limit=1000).body == body
    with pytest.raises(InflatesTooLarge):
        decode(gzip.compress(body + b"a"), "gzip", limit=1000)
    assert decode(brotli.compress(body), "br", limit=1000).body == body
    assert decode(zstd(body), "zstd", limit=1000).body == body


def test_deadline_in_the_past_stops_decoding():
    raw = gzip.compress(os.urandom(2 * MiB))
    with pytest.raises(DecodeDeadline):
        decode(raw, "gzip", limit=8 * MiB, deadline=time.monotonic() - 1)


_RealBrotli = brotli.Decompressor


class _CappedBrotli:
    """brotli >= 1.2's Decompressor API (output_buffer_limit, can_accept_more_data), emulated
    over the installed one, to exercise the capped code path."""

    def __init__(self) -> None:
        self._d = _RealBrotli()
        self._pending = b""
        self.max_seen = 0

    def process(self, data, output_buffer_limit=None):
        if data:
            assert not self._pending, "fed input while output was pending"
            self._pending = self._d.process(bytes(data))
        out, self._pending = self._pending[:output_buffer_limit], self._pending[output_buffer_limit:]
        self.max_seen = max(self.max_seen, len(out))
        return out

    def can_accept_more_data(self):
        return not self._pending

    def is_finished(self):
        return self._d.is_finished() and not self._pending


def test_brotli_capped_api_path(monkeypatch):
    made = []

    def factory():
        made.append(_CappedBrotli())
        return made[-1]
    monkeypatch.setattr(brotli, "Decompressor", factory)
    assert decode(brotli.compress(BODY), "br", limit=4 * MiB).body == BODY
    assert made[-1].max_seen <= dec.OUT_CHUNK
    with pytest.raises(InflatesTooLarge):
        decode(_zeros_compressed("br", 16 * MiB), "br", limit=MiB)
