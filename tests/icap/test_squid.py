"""Through a real Squid: client -> Squid (ssl_bump, `exifguard squid-config`) -> exifguard
ICAP -> local HTTPS sink.

What an organisation would see: every upload shape arrives clean with its declared
sizes and hashes still true; hosts outside the table are spliced (the client sees the
server's own certificate and exifguard is never asked); refusals reach the client as
exifguard's explanation; and when the service is down or dies mid-body, the client
gets an error and the origin receives nothing (bypass=off).

Skips with the reason when squid (Debian squid-openssl) is absent or not root.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

import pytest

from carriers import builders
from exifguard.icap.handler import ServiceConfig
from exifguard.proxy.hosts import Kind, load_table
from proxy import faultharness as fh
from proxy.sink import Sink

from .conftest import Running
from .squidharness import HOSTS, ICAP_ARGS, ai_sink_cert, require_squid, send, start_squid, wait_port

M = fh.MARK_PREFIX
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def squid_version():
    return require_squid()


@pytest.fixture(scope="module")
def sink(tmp_path_factory, squid_version):
    d = tmp_path_factory.mktemp("sink")
    s = Sink(d)
    ai_sink_cert(s, d)
    yield s
    s.close()


@pytest.fixture(scope="module")
def audit_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def svc(audit_path, squid_version):
    r = Running(ServiceConfig(audit_log=audit_path, hosts=HOSTS))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def squid(svc, sink):
    sq = start_squid([f"icap://127.0.0.1:{svc.port}/reqmod"], sink.port, sink.cert)
    yield sq
    sq.stop()


@pytest.fixture
def fresh(sink):
    sink.clear()
    return sink


def through(squid, sink, method: str, url: str, headers, body: bytes | None, **kw):
    u = urlsplit(url)
    path = u.path + (f"?{u.query}" if u.query else "")
    return send(squid, method, u.hostname, sink.port, path or "/", headers, body, **kw)


def leaks(data: bytes) -> list[str]:
    """The marker anywhere: raw, base64, hex..., also after undoing %-encoding and JSON escapes."""
    return fh.leaked(data) + fh.leaked(unquote_to_bytes(data)) + fh.leaked(data.replace(b"\\/", b"/"))


# ---- upload shapes -------------------------------------------------------------------------
def _origin(url: str, headers: list[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """A shared storage host is checked only for its service's web app: send that Origin
    (unless the shape already carries one)."""
    e = HOSTS.lookup(urlsplit(url).hostname or "")
    if e is None or e.kind is not Kind.SHARED or any(k.lower() == "origin" for k, _ in headers):
        return []
    svc = load_table().get(e.service_id) if e.service_id else None
    origin = svc.origins[0] if svc is not None and svc.origins else "perplexity.ai"
    return [("Origin", f"https://www.{origin}")]


@pytest.mark.parametrize("build", builders.SHAPES, ids=lambda b: b.__name__)
def test_builder_shapes_arrive_clean(squid, svc, fresh, build):
    img = fh.make_image("JPEG", f"{M}-sq-{build.__name__}", seed=len(build.__name__))
    shape = build(img)
    host = urlsplit(shape.url).hostname or ""
    if HOSTS.lookup(host) is None:
        pytest.skip(f"{host} is not in exifguard's host table: Squid splices it, exifguard never sees it")
    r = through(squid, fresh, shape.method, shape.url, shape.headers + _origin(shape.url, shape.headers), shape.body)
    assert r.status is not None and 200 <= r.status < 300, (r, squid.output()[-2000:])
    assert len(fresh.received) == 1
    got = fresh.received[0]
    assert got.method == shape.method
    if "x-www-form-urlencoded" not in dict((k.lower(), v) for k, v in shape.headers).get("content-type", ""):
        assert len(got.body) == len(shape.body)  # length-preserving; %-encoding may change a form's length
    assert got.body != shape.body and leaks(got.body) == []
    assert got.headers.get("content-length", str(len(got.body))) == str(len(got.body))
    for what, value, kind in shape.declared:
        assert value == (len(got.body) if kind == "body" else len(img)), what
    # body hashes the storage service checks were recomputed for the cleaned body
    md5 = base64.b64encode(hashlib.md5(got.body).digest()).decode()
    for name in ("content-md5", "x-ms-blob-content-md5"):
        if name in got.headers:
            assert got.headers[name] == md5, name
    if "content-crc32" in got.headers:
        sent = dict((k.lower(), v) for k, v in shape.headers)["content-crc32"]
        hex_form = sent == f"{zlib.crc32(shape.body):08x}"  # else decimal, as the client sent it
        crc = zlib.crc32(got.body)
        assert got.headers["content-crc32"] == (f"{crc:08x}" if hex_form else str(crc))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIC"])
@pytest.mark.parametrize("shape", list(fh.SHAPES))
def test_shapes_and_formats_pixels_untouched(squid, fresh, shape, fmt):
    n = list(fh.SHAPES).index(shape) * 10 + fh.FORMATS.index(fmt)
    up = fh.SHAPES[shape](fh.make_image(fmt, f"{M}-sqf-{n}", seed=n), fmt, n)
    r = through(squid, fresh, up.method, up.url, up.headers, up.body)
    assert r.status is not None and 200 <= r.status < 300, r
    got = fh.arrivals(fresh, up)
    assert len(got) == 1 and not fh.leaked(got[0].body)
    clean = up.extract(got[0].body)
    assert fh.private_exif(clean) == [] and fh.decode(clean) == fh.decode(up.image)


def test_chunked_upload(squid, fresh):
    up = fh.raw_put(fh.make_image("JPEG", f"{M}-sq-chunked", seed=77, size=(640, 480)), "JPEG", 77)
    headers = {**up.headers, "Transfer-Encoding": "chunked"}
    r = through(squid, fresh, up.method, up.url, headers, up.body)
    assert r.status == 201, r
    got = fh.arrivals(fresh, up)
    assert len(got) == 1 and len(got[0].body) == len(up.body) and not fh.leaked(got[0].body)


def test_20mb_upload(squid, fresh):
    img = fh.make_image("JPEG", f"{M}-sq-20mb", seed=20, size=(8000, 5200))
    assert len(img) > 20_000_000 and M.encode() in img
    up = fh.raw_put(img, "JPEG", 20)
    r = through(squid, fresh, up.method, up.url, up.headers, up.body)
    assert r.status == 201, (r, squid.output()[-2000:])
    got = fh.arrivals(fresh, up)
    body = got[0].body if len(got) == 1 else b""
    assert len(body) == len(img) and body[:3] == b"\xff\xd8\xff"
    # (fh.leaked inflates at every zlib-looking offset: 15 s on 20 MB of noise; a JPEG's markers
    # sit in its segments as plain text or UTF-16, so these searches cover what it carries)
    assert M.encode() not in body and M.encode("utf-16-le") not in body and M.encode("utf-16-be") not in body
    assert fh.private_exif(body) == []
    assert json.loads(r.body)["received"] == len(img)


# ---- cheap paths ------------------------------------------------------------------------------
def test_non_ai_host_is_spliced_and_never_sent_to_exifguard(squid, svc, fresh):
    before = svc.server.reqmod.counters.requests
    img = fh.make_image("JPEG", f"{M}-sq-splice", seed=5)
    r = through(squid, fresh, "POST", "https://example.org/upload", {"Content-Type": "image/jpeg"}, img,
                verify=False)
    assert r.status == 201
    # the client talked TLS with the sink itself: its own certificate, not one Squid made
    assert r.peer_cert is not None
    from cryptography import x509
    assert x509.load_der_x509_certificate(r.peer_cert).subject.rfc4514_string() == "CN=exifguard icap test sink"
    assert fresh.last().body == img  # not ours to clean: untouched
    assert svc.server.reqmod.counters.requests == before


def test_small_text_post_takes_the_204_path(squid, svc, fresh):
    body = json.dumps({"prompt": "hello", "attachments": []}).encode()
    c = svc.server.reqmod.counters
    before = (c.requests, c.candidates)
    r = through(squid, fresh, "POST", "https://claude.ai/api/chat", {"Content-Type": "application/json"}, body)
    assert r.status == 201 and fresh.last().body == body
    assert (c.requests, c.candidates) == (before[0] + 1, before[1] + 1)


def test_70kb_text_post_is_echoed_unchanged(squid, fresh):
    body = json.dumps({"prompt": "y" * 70_000}).encode()
    r = through(squid, fresh, "POST", "https://claude.ai/api/chat", {"Content-Type": "application/json"}, body)
    assert r.status == 201 and fresh.last().body == body


def test_get_to_ai_host_is_not_adapted(squid, svc, fresh):
    before = svc.server.reqmod.counters.requests
    r = through(squid, fresh, "GET", "https://claude.ai/api/x", {}, None)
    assert r.status == 201 and svc.server.reqmod.counters.requests == before


# ---- refusals -----------------------------------------------------------------------------------
def test_uncleanable_image_reaches_the_client_as_exifguards_explanation(squid, fresh):
    up = fh.raw_put(fh.truncated_jpeg(f"{M}-sq-trunc"), "JPEG", 90)
    r = through(squid, fresh, up.method, up.url, up.headers, up.body)
    assert r.status == 422 and b"exifguard blocked this upload" in r.body
    assert fresh.received == []


def test_audit_log_names_the_client(squid, fresh, audit_path):
    up = fh.multipart_upload(fh.make_image("JPEG", f"{M}-sq-audit", seed=91), "JPEG", 91)
    r = through(squid, fresh, up.method, up.url, up.headers, up.body)
    assert r.status == 201
    text = audit_path.read_text()
    recs = [json.loads(x) for x in text.splitlines()]
    assert any(x.get("client_ip") == "127.0.0.1" and x["host"] == "claude.ai" for x in recs)
    assert not fh.leaked(text.encode())


# ---- the service fails: nothing reaches the origin ---------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MidBodyCrash:
    """An ICAP 'service' that answers OPTIONS properly, then dies half-way through each body
    (an abrupt reset, as a crashed process leaves it)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.bodies_started = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c: socket.socket) -> None:
        import struct
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                if head.startswith(b"OPTIONS"):
                    c.sendall(b'ICAP/1.0 200 OK\r\nMethods: REQMOD\r\nISTag: "crash"\r\nAllow: 204\r\n'
                              b"Encapsulated: null-body=0\r\n\r\n")
                    continue
                self.bodies_started += 1
                while len(buf) < 20000:
                    d = c.recv(65536)
                    if not d:
                        break
                    buf += d
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
        finally:
            c.close()

    def close(self) -> None:
        self.sock.close()


def test_service_stopped_or_crashing_mid_body_fails_closed(sink, fresh):
    dead = _free_port()  # nothing listens here
    crash = MidBodyCrash()
    sq = start_squid([f"icap://127.0.0.1:{crash.port}/reqmod"], sink.port, sink.cert)
    sq_dead = start_squid([f"icap://127.0.0.1:{dead}/reqmod"], sink.port, sink.cert)
    try:
        img = fh.make_image("JPEG", f"{M}-sq-down", seed=92, size=(800, 600))
        for q in (sq_dead, sq):
            for i in range(2):
                up = fh.raw_put(img, "JPEG", 920 + i)
                r = through(q, fresh, up.method, up.url, up.headers, up.body)
                assert r.status is None or r.status >= 500, r
                assert fresh.received == [], "the origin received an upload exifguard never checked"
        assert crash.bodies_started >= 1
        # traffic that needs no adaptation still flows
        r = through(sq_dead, fresh, "GET", "https://claude.ai/ok", {}, None)
        assert r.status == 201
    finally:
        sq.stop()
        sq_dead.stop()
        crash.close()


def _rss(pid: int) -> int:
    """Resident bytes: grows while the service buffers a body (socket reads do not show in rchar)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_real_service_killed_mid_body_forwards_nothing(sink, fresh):
    """`exifguard icap` itself is SIGKILLed while it is reading a large upload."""
    port = _free_port()
    p = _start_service(port)
    sq = start_squid([f"icap://127.0.0.1:{port}/reqmod"], sink.port, sink.cert)
    try:
        img = fh.make_image("JPEG", f"{M}-sq-kill", seed=94, size=(800, 600))
        up = fh.raw_put(img + b"\x00" * 60_000_000, "JPEG", 940)  # zero padding after EOI makes it large
        # warm up: Squid fetches OPTIONS first
        assert through(sq, fresh, "POST", "https://claude.ai/api/chat", {"Content-Type": "text/plain"},
                       b"hi").status == 201
        fresh.clear()
        base = _rss(p.pid)
        reply: list = []
        t = threading.Thread(target=lambda: reply.append(through(sq, fresh, up.method, up.url, up.headers,
                                                                 up.body)))
        t.start()
        end = time.monotonic() + 30
        while _rss(p.pid) - base < 3_000_000 and time.monotonic() < end:
            time.sleep(0.001)
        assert _rss(p.pid) - base >= 3_000_000, "the service never started reading the body"
        p.kill()
        t.join(60)
        assert reply and (reply[0].status is None or reply[0].status >= 500), reply
        assert fresh.received == [], "the origin received an upload exifguard never finished checking"
    finally:
        sq.stop()
        if p.poll() is None:
            p.kill()
        p.wait(5)


def test_overloaded_service_refuses_and_forwards_nothing_unchecked(sink, fresh):
    from exifguard.carriers import rewrite_request
    from exifguard.icap.handler import Reqmod

    def slow(*a, **k):
        time.sleep(1.0)
        return rewrite_request(*a, **k)

    cfg = ServiceConfig(threads=1, queue=0, express=0, hosts=HOSTS)  # regular slots only: small images
    svc = Running(cfg, Reqmod(cfg, rewrite=slow))
    sq = start_squid([f"icap://127.0.0.1:{svc.port}/reqmod"], sink.port, sink.cert)
    try:
        ups = [fh.raw_put(fh.make_image("JPEG", f"{M}-sq-busy-{i}", seed=95 + i), "JPEG", 950 + i) for i in range(4)]
        replies: dict[int, object] = {}

        def go(i: int) -> None:
            replies[i] = through(sq, fresh, ups[i].method, ups[i].url, ups[i].headers, ups[i].body)

        ts = [threading.Thread(target=go, args=(i,)) for i in range(len(ups))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        busy = [i for i, r in replies.items() if r.status == 503]
        assert busy and all(b"exifguard is busy" in replies[i].body for i in busy)
        for i, up in enumerate(ups):
            got = fh.arrivals(fresh, up)
            if i in busy:
                assert got == []
            else:
                assert replies[i].status == 201 and len(got) == 1 and not fh.leaked(got[0].body)
    finally:
        sq.stop()
        svc.stop()


# ---- two instances behind HAProxy ----------------------------------------------------------------
def _start_service(port: int, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "exifguard.icap", "icap", "--port", str(port), "--workers", "1",
                          *ICAP_ARGS, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})
    wait_port(port, proc=p)
    return p


def test_haproxy_two_instances_one_killed(sink, fresh, tmp_path):
    import shutil
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (Debian: apt-get install haproxy)")
    ports = [_free_port(), _free_port()]
    front = _free_port()
    procs = [_start_service(p) for p in ports]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("\n".join([
        "global", "  maxconn 256", "defaults", "  mode tcp", "  timeout connect 2s", "  timeout client 120s",
        "  timeout server 120s", "  retries 2", f"frontend icap", f"  bind 127.0.0.1:{front}",
        "  default_backend exifguard", "backend exifguard", "  balance leastconn", "  option tcp-check",
        r'  tcp-check send "OPTIONS icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: 127.0.0.1\r\n\r\n"',
        '  tcp-check expect string "ICAP/1.0 200"',
        *[f"  server s{i} 127.0.0.1:{p} check inter 500 fall 1 rise 1" for i, p in enumerate(ports)], ""]))
    ha = subprocess.Popen(["haproxy", "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sq = None
    try:
        wait_port(front, proc=ha)
        sq = start_squid([f"icap://127.0.0.1:{front}/reqmod"], sink.port, sink.cert)
        results: list[tuple[int, int | None]] = []
        img = fh.make_image("JPEG", f"{M}-sq-ha", seed=93, size=(400, 300))
        ups = [fh.SHAPES[s](img, "JPEG", 930 + i) for i, s in enumerate(list(fh.SHAPES) * 6)]

        def go(k: int) -> None:
            for i in range(k, len(ups), 4):
                r = through(sq, fresh, ups[i].method, ups[i].url, ups[i].headers, ups[i].body)
                results.append((i, r.status))

        ts = [threading.Thread(target=go, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        time.sleep(0.3)
        procs[0].kill()  # one instance dies mid-run
        for t in ts:
            t.join(120)
        # afterwards, uploads keep arriving clean through the survivor
        after = [fh.SHAPES[s](img, "JPEG", 990 + i) for i, s in enumerate(fh.SHAPES)]
        for up in after:
            r = through(sq, fresh, up.method, up.url, up.headers, up.body)
            assert r.status == 201 or r.status == 200, (r, sq.output()[-1500:])
        for up in ups + after:
            for got in fh.arrivals(fresh, up):
                assert not fh.leaked(got.body)
                assert fh.private_exif(up.extract(got.body)) == []
        ok = [i for i, st in results if st is not None and st < 300]
        assert all(len(fh.arrivals(fresh, ups[i])) == 1 for i in ok)
        failed = [i for i, st in results if st is None or st >= 300]
        assert all(fh.arrivals(fresh, ups[i]) == [] for i in failed)
    finally:
        if sq is not None:
            sq.stop()
        ha.kill()
        ha.wait(5)
        for p in procs:
            p.kill()
            p.wait(5)
