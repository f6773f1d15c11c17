"""The ICAP service over real sockets (in-process): OPTIONS, errors, preview, 204 rules,
the upload shapes cleaned, refusals as encapsulated HTTP responses, bounds, audit log.

No proxy here (tests/icap/test_squid.py puts a real Squid in front): this client sends
exactly what the RFC allows, split and pipelined as a proxy may.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time

import pytest

from exifguard.icap.handler import Reqmod, ServiceConfig
from exifguard.proxy.policy import Mode
from proxy import faultharness as fh

from .icapclient import Client, exchange, reqmod

M = fh.MARK_PREFIX


def image(n: int = 0, fmt: str = "JPEG") -> bytes:
    return fh.make_image(fmt, f"{M}-icap-{n}", seed=n)


def shape_request(up: fh.Upload) -> list[tuple[str, str]]:
    return [("Host", up.url.split("/")[2]), *up.headers.items(), ("Content-Length", str(len(up.body)))]


# ---- OPTIONS and errors ------------------------------------------------------------------
def test_options(service):
    s = service()
    c = Client(s.port)
    c.send(b"OPTIONS icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: 127.0.0.1\r\nEncapsulated: null-body=0\r\n\r\n")
    r = c.read()
    assert r.status == 200
    h = r.headers
    assert h["methods"] == "REQMOD" and h["allow"] == "204" and h["preview"] == "32768"
    assert h["istag"].startswith('"EG') and len(h["istag"]) <= 34 and h["encapsulated"] == "null-body=0"
    assert int(h["max-connections"]) >= 1 and int(h["options-ttl"]) > 0
    # the connection persists
    c.send(b"OPTIONS icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: x\r\nConnection: close\r\n\r\n")
    r2 = c.read()
    assert r2.status == 200 and r2.headers.get("connection") == "close" and c.expect_closed()


def test_istag_follows_the_policy():
    a, b = ServiceConfig(), ServiceConfig(mode=Mode.AUDIT)
    assert a.istag() == ServiceConfig().istag() != b.istag()
    assert len(a.istag()) <= 34


@pytest.mark.parametrize("data,status", [
    (b"OPTIONS icap://127.0.0.1/nope ICAP/1.0\r\nEncapsulated: null-body=0\r\n\r\n", 404),
    (b"RESPMOD icap://127.0.0.1/reqmod ICAP/1.0\r\nEncapsulated: null-body=0\r\n\r\n", 405),
    (b"PATCH icap://127.0.0.1/reqmod ICAP/1.0\r\nEncapsulated: null-body=0\r\n\r\n", 501),
    (b"OPTIONS icap://127.0.0.1/reqmod ICAP/1.1\r\nEncapsulated: null-body=0\r\n\r\n", 505),
    (b"REQMOD icap://127.0.0.1/reqmod ICAP/1.0\r\nEncapsulated: req-hdr=0, req-body=3\r\n\r\nabc", 400),
    (b"garbage\r\n\r\n", 400),
])
def test_error_statuses_close_the_connection(service, data, status):
    s = service()
    c = Client(s.port)
    c.send(data)
    r = c.read()
    assert r.status == status and "istag" in r.headers and r.headers.get("connection") == "close"
    assert c.expect_closed()


def test_max_connections(service):
    s = service(ServiceConfig(max_connections=1))
    a = Client(s.port)
    a.send(b"OPTIONS icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: x\r\n\r\n")
    assert a.read().status == 200
    b = Client(s.port)
    b.send(b"OPTIONS icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: x\r\n\r\n")
    assert b.read().status == 503 and b.expect_closed()


# ---- what is not an upload candidate costs almost nothing ------------------------------------
def test_non_ai_host_answered_from_the_preview(service):
    s = service()
    c = Client(s.port)
    body = image(1) * 20
    first, _rest = reqmod("POST", "https://example.org/upload", [("Host", "example.org")], body, preview=4096)
    c.send(first)
    r = c.read()
    assert r.status == 204  # no 100 Continue: the rest of the body is never asked for
    # the same connection goes on with the next request
    first, _ = reqmod("GET", "https://claude.ai/", [("Host", "claude.ai")], None)
    c.send(first)
    assert c.read().status == 204


def test_non_ai_host_without_preview_or_204_is_echoed(service):
    s = service()
    c = Client(s.port)
    body = image(2)
    first, _ = reqmod("POST", "https://example.org/u", [("Host", "example.org"),
                                                          ("Content-Length", str(len(body)))],
                      body, allow_204=False, chunk=1000)
    r = exchange(c, first, b"")
    assert r.status == 200 and r.body == body and r.sections["req-hdr"].startswith(b"POST https://example.org/u")


def test_shared_storage_needs_an_ai_origin(service):
    from exifguard.proxy.hosts import HostSet
    assert HostSet.build().classify("acct.blob.core.windows.net", "https://chat.mistral.ai") is None  # opt-in
    s = service(ServiceConfig(hosts=HostSet.build(extra=["service:azure-blob"])))
    c = Client(s.port)
    img = image(3)
    url = "https://acct.blob.core.windows.net/c/photo.jpg"
    hdrs = [("Host", "acct.blob.core.windows.net"), ("Content-Type", "image/jpeg"),
            ("Content-Length", str(len(img)))]
    r = exchange(c, *reqmod("PUT", url, hdrs, img, preview=1024))
    assert r.status == 204
    r = exchange(c, *reqmod("PUT", url, hdrs + [("Origin", "https://chat.mistral.ai")], img, preview=1024))
    assert r.status == 200 and r.body is not None and len(r.body) == len(img) and not fh.leaked(r.body)


def test_small_text_post_to_ai_host_is_204_in_answer_to_the_preview(service):
    s = service()
    c = Client(s.port)
    body = json.dumps({"prompt": "hello", "n": 1}).encode()
    r = exchange(c, *reqmod("POST", "https://claude.ai/api/chat", [("Host", "claude.ai"),
                                                                   ("Content-Length", str(len(body)))],
                            body, preview=65536, allow_204=False))
    assert r.status == 204


def test_large_text_post_to_ai_host_is_read_whole_and_echoed_when_204_not_allowed(service):
    s = service()
    c = Client(s.port)
    body = json.dumps({"prompt": "x" * 200_000}).encode()
    r = exchange(c, *reqmod("POST", "https://claude.ai/api/chat", [("Host", "claude.ai"),
                                                                   ("Content-Length", str(len(body)))],
                            body, preview=4096, allow_204=False))
    assert r.status == 200 and r.body == body


# ---- upload shapes ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", list(fh.SHAPES))
@pytest.mark.parametrize("preview", [None, 0, 1000])
def test_upload_shapes_come_back_clean(service, shape, preview):
    s = service()
    c = Client(s.port)
    n = list(fh.SHAPES).index(shape)
    up = fh.SHAPES[shape](image(10 + n), "JPEG", n)
    r = exchange(c, *reqmod(up.method, up.url, shape_request(up), up.body, preview=preview, chunk=777))
    assert r.status == 200, r
    assert r.body is not None and len(r.body) == len(up.body)
    assert not fh.leaked(r.body)
    clean = up.extract(r.body)
    assert fh.private_exif(clean) == []
    assert fh.decode(clean) == fh.decode(up.image)  # pixels untouched
    assert r.http_header("content-length") == str(len(up.body))


@pytest.mark.parametrize("fmt", fh.FORMATS)
def test_every_format_raw_put(service, fmt):
    s = service()
    c = Client(s.port)
    up = fh.raw_put(fh.make_image(fmt, f"{M}-fmt-{fmt}", seed=5), fmt, 5)
    r = exchange(c, *reqmod(up.method, up.url, shape_request(up), up.body, preview=1024))
    assert r.status == 200 and r.body is not None and not fh.leaked(r.body)


def test_gzip_body_cleaned_and_reencoded(service):
    s = service()
    c = Client(s.port)
    up = fh.raw_put(image(20), "JPEG", 20)
    raw = gzip.compress(up.body)
    hdrs = [("Host", "files.oaiusercontent.com"), ("Content-Type", "image/jpeg"), ("Content-Encoding", "gzip"),
            ("Content-Length", str(len(raw)))]
    r = exchange(c, *reqmod("PUT", up.url, hdrs, raw, preview=100))
    assert r.status == 200 and r.body is not None
    plain = gzip.decompress(r.body)
    assert len(plain) == len(up.body) and not fh.leaked(plain)
    assert r.http_header("content-length") == str(len(r.body))
    assert r.http_header("content-encoding") == "gzip"


def test_chunked_http_request_keeps_no_content_length(service):
    s = service()
    c = Client(s.port)
    up = fh.raw_put(image(21), "JPEG", 21)
    hdrs = [("Host", "files.oaiusercontent.com"), ("Content-Type", "image/jpeg"), ("Transfer-Encoding", "chunked")]
    r = exchange(c, *reqmod("PUT", up.url, hdrs, up.body, preview=100, allow_204=False))
    assert r.status == 200 and r.body is not None and not fh.leaked(r.body)
    assert r.http_header("content-length") is None


def test_unchanged_image_upload_is_echoed_or_204(service):
    """An image without metadata: unchanged, answered 204 only where allowed."""
    from PIL import Image
    import io
    b = io.BytesIO()
    Image.new("RGB", (8, 8)).save(b, "PNG")
    png = b.getvalue()
    s = service()
    c = Client(s.port)
    hdrs = [("Host", "files.oaiusercontent.com"), ("Content-Type", "image/png"), ("Content-Length", str(len(png)))]
    r = exchange(c, *reqmod("PUT", "https://files.oaiusercontent.com/f", hdrs, png, preview=10, allow_204=False))
    assert r.status == 200 and r.body == png
    r = exchange(c, *reqmod("PUT", "https://files.oaiusercontent.com/f", hdrs, png, preview=10, allow_204=True))
    assert r.status == 204


def test_byte_by_byte_request_gives_the_same_answer(service):
    s = service()
    up = fh.raw_put(image(22, "PNG"), "PNG", 22)
    first, rest = reqmod(up.method, up.url, shape_request(up), up.body, preview=64, chunk=300)
    c = Client(s.port)
    whole = exchange(c, first, rest)
    c2 = Client(s.port)
    for i in range(len(first)):
        c2.send(first[i:i + 1])
    r = c2.read()
    assert r.status == 100
    step = 97
    for i in range(0, len(rest), step):
        c2.send(rest[i:i + step])
    r2 = c2.read()
    assert r2.status == whole.status == 200 and r2.body == whole.body and not fh.leaked(r2.body)


# ---- refusals ---------------------------------------------------------------------------------
def test_uncleanable_image_is_refused_with_an_http_response(service):
    s = service()
    c = Client(s.port)
    up = fh.raw_put(fh.truncated_jpeg(f"{M}-trunc"), "JPEG", 30)
    r = exchange(c, *reqmod(up.method, up.url, shape_request(up), up.body, preview=None))
    assert r.status == 200 and r.http_status == 422
    assert b"exifguard blocked this upload" in r.body and not fh.leaked(r.body)
    assert r.http_header("x-exifguard", "res-hdr") == "blocked"


def test_block_mode_answers_403(service):
    s = service(ServiceConfig(mode=Mode.BLOCK))
    c = Client(s.port)
    up = fh.multipart_upload(image(31), "JPEG", 31)
    r = exchange(c, *reqmod(up.method, up.url, shape_request(up), up.body, preview=512))
    assert r.status == 200 and r.http_status == 403


def test_audit_mode_forwards_unchanged(service, tmp_path):
    s = service(ServiceConfig(mode=Mode.AUDIT, audit_log=tmp_path / "a.jsonl"))
    c = Client(s.port)
    up = fh.raw_put(image(32), "JPEG", 32)
    r = exchange(c, *reqmod(up.method, up.url, shape_request(up), up.body, preview=512, allow_204=False))
    assert r.status == 200 and r.body == up.body
    recs = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert recs and recs[0]["action"] == "audit"


def test_declared_over_limit_is_refused_in_answer_to_the_preview(service):
    s = service(ServiceConfig(inspect_limit=10_000))
    c = Client(s.port)
    body = image(33) * 10
    first, _ = reqmod("PUT", "https://files.oaiusercontent.com/f", [("Host", "files.oaiusercontent.com"),
                                                                    ("Content-Length", str(len(body)))],
                      body, preview=100)
    c.send(first)
    r = c.read()  # no 100 Continue: refused at once
    assert r.status == 200 and r.http_status == 413
    first, _ = reqmod("GET", "https://claude.ai/", [("Host", "claude.ai")], None)
    c.send(first)
    assert c.read().status == 204


def test_chunked_body_over_limit_is_refused_after_reading_it(service):
    s = service(ServiceConfig(inspect_limit=10_000))
    c = Client(s.port)
    body = b"\x00" * 50_000
    r = exchange(c, *reqmod("POST", "https://claude.ai/u", [("Host", "claude.ai"), ("Transfer-Encoding", "chunked")],
                            body, preview=100))
    assert r.status == 200 and r.http_status == 413


def _slow_rewrite(seconds: float, calls: list):
    from exifguard.carriers import rewrite_request

    def rw(*a, **k):
        calls.append(1)
        time.sleep(seconds)
        return rewrite_request(*a, **k)
    return rw


def test_busy_is_503_never_204(service):
    calls: list = []
    # regular slots only (the express lane for small bodies is tested in tests/proxy/test_workers.py)
    cfg = ServiceConfig(threads=1, queue=0, inspect_timeout=30, express=0)
    s = service(cfg, Reqmod(cfg, rewrite=_slow_rewrite(1.5, calls)))
    up = fh.raw_put(image(40), "JPEG", 40)
    results = []

    def go() -> None:
        c = Client(s.port)
        results.append(exchange(c, *reqmod(up.method, up.url, shape_request(up), up.body)))

    ts = [threading.Thread(target=go) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    statuses = sorted((r.status, r.http_status or 0) for r in results)
    assert (200, 503) in statuses and all(st == 200 for st, _ in statuses)
    ok = [r for r in results if r.http_status is None]
    assert len(ok) >= 1 and all(not fh.leaked(r.body) for r in ok)
    busy = [r for r in results if r.http_status == 503]
    assert all(r.http_header("retry-after", "res-hdr") == "5" for r in busy)


def test_deadline_is_503(service):
    calls: list = []
    cfg = ServiceConfig(inspect_timeout=0.3)
    s = service(cfg, Reqmod(cfg, rewrite=_slow_rewrite(2.0, calls)))
    up = fh.raw_put(image(41), "JPEG", 41)
    r = exchange(Client(s.port), *reqmod(up.method, up.url, shape_request(up), up.body, preview=10))
    assert r.status == 200 and r.http_status == 503


def test_internal_error_refuses(service):
    def boom(*a, **k):
        raise RuntimeError("EGFLTcanary secret in message")
    cfg = ServiceConfig()
    s = service(cfg, Reqmod(cfg, rewrite=boom))
    up = fh.raw_put(image(42), "JPEG", 42)
    r = exchange(Client(s.port), *reqmod(up.method, up.url, shape_request(up), up.body, preview=10))
    assert r.status == 200 and r.http_status == 422 and b"RuntimeError" in r.body
    assert not fh.leaked(r.body)


def test_audit_log_records_the_client_never_values(service, tmp_path):
    path = tmp_path / "audit.jsonl"
    s = service(ServiceConfig(audit_log=path))
    up = fh.multipart_upload(image(43), "JPEG", 43)
    user = base64.b64encode(b"Local://alice").decode()
    r = exchange(Client(s.port), *reqmod(up.method, up.url, shape_request(up), up.body, preview=100,
                                         icap_headers=[("X-Client-IP", "10.1.2.3"),
                                                       ("X-Authenticated-User", user)]))
    assert r.status == 200
    text = path.read_text()
    rec = json.loads(text.splitlines()[0])
    assert rec["client_ip"] == "10.1.2.3" and rec["user"] == user and rec["via"] == "icap"
    assert rec["action"] == "stripped" and rec["host"] == "claude.ai" and "GPS" in " ".join(rec["tags"])
    assert not fh.leaked(text.encode())


def test_one_slow_image_does_not_hold_the_others(service):
    """Two inspection threads: a quick upload finishes while a slow one is still inspected."""
    from exifguard.carriers import rewrite_request
    slow_started, slow_done = threading.Event(), threading.Event()

    def rw(method, url, headers, body, options):
        if b"SLOWSLOW" in body:
            slow_started.set()
            time.sleep(3)
        return rewrite_request(method, url, headers, body, options)

    cfg = ServiceConfig(threads=2)
    s = service(cfg, Reqmod(cfg, rewrite=rw))
    slow = fh.multipart_upload(image(50), "JPEG", 50, "SLOWSLOW")
    quick = fh.raw_put(image(51), "JPEG", 51)

    def go_slow() -> None:
        exchange(Client(s.port), *reqmod(slow.method, slow.url, shape_request(slow), slow.body))
        slow_done.set()

    t = threading.Thread(target=go_slow)
    t.start()
    assert slow_started.wait(30)
    r = exchange(Client(s.port), *reqmod(quick.method, quick.url, shape_request(quick), quick.body))
    assert r.status == 200 and not fh.leaked(r.body)
    assert not slow_done.is_set(), "the quick upload waited for the slow one"
    t.join(30)
    assert slow_done.is_set()


def test_delete_with_an_image_body_is_inspected_like_the_proxy_does(service):
    s = service()
    up = fh.raw_put(image(52), "JPEG", 52)
    r = exchange(Client(s.port), *reqmod("DELETE", up.url, shape_request(up), up.body, preview=100))
    assert r.status == 200 and r.body is not None and not fh.leaked(r.body)


def test_no_body_without_allow_204_is_echoed(service):
    s = service()
    c = Client(s.port)
    first, _ = reqmod("GET", "https://claude.ai/x", [("Host", "claude.ai")], None, allow_204=False)
    c.send(first)
    r = c.read()
    assert r.status == 200 and r.sections["req-hdr"].startswith(b"GET https://claude.ai/x") and r.body is None
