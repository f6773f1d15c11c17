"""The ICAP parser (sans I/O): framing, Encapsulated validation, preview, and every split.

Requests are fed whole, byte by byte, and split at every boundary in two: TCP may hand
the server any piece in any read, and the events must not depend on where it cut.
"""

from __future__ import annotations

import pytest

from exifguard.icap.protocol import (BodyData, BodyEnd, HTTPHead, ICAPError, Parser, PreviewEnd, RequestHead,
                                     chunked, parse_encapsulated, response_head)

HTTP_HEAD = (b"POST https://claude.ai/api/upload HTTP/1.1\r\nHost: claude.ai\r\n"
             b"Content-Type: application/octet-stream\r\nContent-Length: 11\r\n\r\n")


def reqmod(body_chunks: list[bytes] | None, *, preview: int | None = None, ieof: bool = False,
           extra: str = "", head: bytes = HTTP_HEAD) -> bytes:
    h = [b"REQMOD icap://127.0.0.1:1344/reqmod ICAP/1.0", b"Host: 127.0.0.1:1344", b"Allow: 204"]
    if preview is not None:
        h.append(b"Preview: %d" % preview)
    if extra:
        h.append(extra.encode())
    if body_chunks is None:
        h.append(b"Encapsulated: req-hdr=0, null-body=%d" % len(head))
        return b"\r\n".join(h) + b"\r\n\r\n" + head
    h.append(b"Encapsulated: req-hdr=0, req-body=%d" % len(head))
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in body_chunks)
    body += b"0; ieof\r\n\r\n" if ieof else b"0\r\n\r\n"
    return b"\r\n".join(h) + b"\r\n\r\n" + head + body


def collect(p: Parser, pieces: list[bytes]) -> list:
    out = []
    for piece in pieces:
        out += p.feed(piece)
    return out


def summarise(events: list) -> tuple:
    """Events with body data merged (split points may cut data events anywhere)."""
    out: list = []
    for ev in events:
        if isinstance(ev, BodyData) and out and isinstance(out[-1], BodyData):
            out[-1] = BodyData(out[-1].data + ev.data)
        else:
            out.append(ev)
    return tuple((type(e).__name__, e.request.method if isinstance(e, RequestHead) else
                  e.data if isinstance(e, BodyData) else e.ieof if isinstance(e, PreviewEnd) else None)
                 for e in out)


CASES = {
    "body": reqmod([b"hello", b" world"]),
    "null-body": reqmod(None),
    "preview ieof": reqmod([b"hello world"], preview=11, ieof=True),
    "options": b"OPTIONS icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: x\r\nEncapsulated: null-body=0\r\n\r\n",
    "chunk ext": reqmod([b"hello world"]).replace(b"b\r\nhello", b"b;name=v\r\nhello"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_split_gives_the_same_events(name):
    data = CASES[name]
    whole = summarise(Parser().feed(data))
    assert whole[0][0] == "RequestHead"
    assert whole[-1][0] in ("BodyEnd", "PreviewEnd", "RequestHead")
    assert summarise(collect(Parser(), [data[i:i + 1] for i in range(len(data))])) == whole
    for cut in range(1, len(data)):
        assert summarise(collect(Parser(), [data[:cut], data[cut:]])) == whole, cut


def test_body_content_and_head():
    ev = Parser().feed(reqmod([b"hello", b" world"]))
    req = ev[0].request
    assert req.method == "REQMOD" and req.service == "/reqmod" and req.allow_204 and req.has_body
    head = req.http_head()
    assert head.method == "POST" and head.host() == "claude.ai" and head.path() == "/api/upload"
    assert head.url() == "https://claude.ai/api/upload"
    assert b"".join(e.data for e in ev if isinstance(e, BodyData)) == b"hello world"
    assert isinstance(ev[-1], BodyEnd)


def test_preview_then_continue_then_rest_split_everywhere():
    head = reqmod([b"hello"], preview=5).rsplit(b"0\r\n\r\n", 1)[0] + b"0\r\n\r\n"
    rest = b"6\r\n world\r\n0\r\n\r\n"
    for cut in range(len(rest) + 1):
        p = Parser()
        ev = p.feed(head)
        assert isinstance(ev[-1], PreviewEnd) and not ev[-1].ieof and p.waiting
        ev2 = p.feed(rest[:cut])  # arrives before the server decided: held back
        assert ev2 == []
        ev3 = p.continue_body() + p.feed(rest[cut:])
        assert b"".join(e.data for e in ev3 if isinstance(e, BodyData)) == b" world"
        assert isinstance(ev3[-1], BodyEnd)


def test_preview_answered_then_next_request_is_parsed():
    first = reqmod([b"hello"], preview=5)  # ends "0\r\n\r\n": preview without ieof
    second = reqmod(None)
    p = Parser()
    ev = p.feed(first + second)
    assert isinstance(ev[-1], PreviewEnd) and p.waiting
    ev2 = p.next_request()  # the server answered from the preview (204)
    assert isinstance(ev2[0], RequestHead) and not ev2[0].request.has_body


def test_ieof_preview_completes_the_request():
    p = Parser()
    ev = p.feed(reqmod([b"hello world"], preview=11, ieof=True))
    assert isinstance(ev[-1], PreviewEnd) and ev[-1].ieof and not p.waiting


def test_pipelined_requests():
    p = Parser()
    ev = p.feed(reqmod([b"a"]) + reqmod([b"b"]))
    assert [type(e).__name__ for e in ev] == ["RequestHead", "BodyData", "BodyEnd"]
    ev2 = p.next_request()
    assert [type(e).__name__ for e in ev2] == ["RequestHead", "BodyData", "BodyEnd"]
    assert ev2[1].data == b"b"


@pytest.mark.parametrize("value,method", [
    ("req-hdr=0, req-body=10", "REQMOD"), ("req-hdr=0, null-body=5", "REQMOD"), ("null-body=0", "OPTIONS"),
    ("req-hdr=0, res-hdr=10, res-body=20", "RESPMOD"),
])
def test_encapsulated_valid(value, method):
    assert parse_encapsulated(value, method)


@pytest.mark.parametrize("value", [
    "req-hdr=5, req-body=10",         # does not start at 0
    "req-body=0, req-hdr=10",         # body not last
    "req-hdr=0, req-body=0",          # empty header section
    "req-hdr=0",                      # no body entry
    "req-hdr=0, req-body=10, null-body=12",
    "req-hdr=0, req-hdr=5, req-body=9",
    "req-hdr=zero, req-body=10", "req-hdr=0; req-body=10", "req-hdr=-1, req-body=3",
    "foo=0, req-body=10", "res-hdr=0, res-body=10",  # response sections in REQMOD
    "null-body=0",                    # REQMOD without the request header
    "req-hdr=0, req-body=99999999999999999",
])
def test_encapsulated_invalid(value):
    with pytest.raises(ICAPError) as e:
        parse_encapsulated(value, "REQMOD")
    assert e.value.status == 400


def test_reqmod_without_encapsulated_is_400():
    with pytest.raises(ICAPError) as e:
        Parser().feed(b"REQMOD icap://x/reqmod ICAP/1.0\r\nHost: x\r\n\r\n")
    assert e.value.status == 400


def test_encapsulated_offset_not_at_end_of_headers_is_400():
    bad = reqmod([b"x"]).replace(b"req-body=%d" % len(HTTP_HEAD), b"req-body=%d" % (len(HTTP_HEAD) - 2))
    with pytest.raises(ICAPError) as e:
        Parser().feed(bad)
    assert e.value.status == 400


@pytest.mark.parametrize("line,status", [
    (b"REQMOD icap://x/reqmod ICAP/1.1", 505), (b"REQMOD icap://x/reqmod ICAP/2.0", 505),
    (b"REQMOD icap://x/reqmod HTTP/1.1", 400), (b"FOO icap://x/reqmod ICAP/1.0", 501),
    (b"REQMOD icap://x/reqmod", 400), (b"REQMOD  icap://x/reqmod ICAP/1.0", 400),
])
def test_request_line_errors(line, status):
    with pytest.raises(ICAPError) as e:
        Parser().feed(line + b"\r\nEncapsulated: null-body=0\r\n\r\n")
    assert e.value.status == status


@pytest.mark.parametrize("mutate", [
    lambda b: b.replace(b"5\r\nhello", b"g\r\nhello"),        # not hex
    lambda b: b.replace(b"5\r\nhello", b"4\r\nhello"),        # data longer than its size
    lambda b: b.replace(b"5\r\nhello", b"-5\r\nhello"),
    lambda b: b.replace(b"Host: 127", b" Host: 127"),         # folded ICAP header
    lambda b: b.replace(b"Allow: 204", b"Allow 204"),         # no colon
    lambda b: b.replace(b"Allow: 204", b"Preview: lots"),
])
def test_malformed_bodies_and_headers_are_400(mutate):
    data = mutate(reqmod([b"hello"]))
    with pytest.raises(ICAPError) as e:
        collect(Parser(), [data[i:i + 7] for i in range(0, len(data), 7)])
    assert e.value.status == 400


def test_oversized_lines_are_refused_without_buffering_forever():
    with pytest.raises(ICAPError):
        Parser().feed(b"REQMOD icap://x/reqmod ICAP/1.0\r\nX: " + b"a" * 70000)
    p = Parser()
    data = reqmod([b"hello"])
    head = data[: data.index(b"5\r\nhello")]
    p.feed(head)
    with pytest.raises(ICAPError):
        p.feed(b"5" * 5000)


def test_http_head_render_roundtrip_and_set():
    h = HTTPHead.parse(HTTP_HEAD)
    assert h.render() == HTTP_HEAD
    h.headers.set("content-length", "12")
    assert b"Content-Length: 12\r\n" in h.render() and b"11" not in h.render()


def test_response_head_encapsulated_offsets():
    http = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n"
    out = response_head(200, [("ISTag", '"x"')], [("res-hdr", http)], "res-body")
    head, sep, rest = out.partition(b"\r\n\r\n")
    assert b"Encapsulated: res-hdr=0, res-body=%d" % len(http) in head and rest == http
    assert b"Encapsulated" not in response_head(204, [("ISTag", '"x"')])
    assert b"Encapsulated: null-body=0" in response_head(200, [])
    assert b"".join(chunked(b"ab" * 5, size=4)) == b"4\r\nabab\r\n4\r\nabab\r\n2\r\nab\r\n0\r\n\r\n"


from hypothesis import given, settings, strategies as st


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_any_bytes_give_events_or_icap_error(data, step):
    """Garbage, truncations and mutations: only ICAPError ever escapes the parser."""
    p = Parser()
    try:
        for i in range(0, len(data), step):
            p.feed(data[i:i + step])
    except ICAPError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 255), st.integers(1, 40))
def test_mutated_valid_requests_give_events_or_icap_error(pos, byte, step):
    base = reqmod([b"hello", b" world"], preview=5)
    data = bytearray(base)
    data[pos % len(data)] = byte
    p = Parser()
    try:
        for i in range(0, len(data), step):
            for ev in p.feed(bytes(data[i:i + step])):
                if isinstance(ev, PreviewEnd) and not ev.ieof:
                    p.continue_body()  # (its events are not needed here)
    except ICAPError:
        pass
