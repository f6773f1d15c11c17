"""The check-page addon: /.well-known/exifguard* answered by exifguard itself, never forwarded.

Unit tests run the real Exifguard addon (real carriers and engine) and the CheckPage addon
under mitmproxy's taddons, in make_addons() order; the end-to-end tests at the bottom go
through a real `exifguard run` (mitmdump) on loopback.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils

from exifguard.proxy import audit, probe
from exifguard.proxy.addon import Exifguard
from exifguard.proxy.checkpage import CheckPage, first_jpeg_part
from exifguard.proxy.hosts import HostSet
from exifguard.proxy.selftest import exif_tag_names

BOUNDARY = "exifguard-test-boundary"


def make_flow(host="claude.ai", path=probe.JSON_PATH, method="GET", body=b"", headers=(), scheme="https"):
    hdrs = http.Headers([(k.encode(), v.encode()) for k, v in headers])
    req = tutils.treq(method=method.encode(), host=host, port=443, scheme=scheme.encode(), path=path.encode(),
                      headers=hdrs, content=body)
    return tflow.tflow(req=req)


def multipart(jpeg: bytes) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"exifguard-sample.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + jpeg + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, (("content-type", f"multipart/form-data; boundary={BOUNDARY}"),)


async def run_chain(eg: Exifguard, cp: CheckPage, f: http.HTTPFlow) -> None:
    """The hook order of make_addons(): Exifguard then CheckPage, per event."""
    eg.requestheaders(f)
    cp.requestheaders(f)
    if f.live and not f.error:
        await eg.request(f)
        cp.request(f)


@pytest.fixture
def chain(tmp_path):
    eg, cp = Exifguard(), CheckPage()
    with taddons.context(eg, cp) as tctx:
        tctx.configure(eg, exifguard_audit_log=str(tmp_path / "audit.jsonl"))
        yield SimpleNamespace(eg=eg, cp=cp, tctx=tctx, audit=tmp_path / "audit.jsonl")


def answer(f: http.HTTPFlow) -> dict:
    assert f.response is not None, "exifguard did not answer: the request would have been forwarded"
    return json.loads(f.response.content)


# ---- the JSON answer ------------------------------------------------------------------------
async def test_json_is_answered_by_exifguard_on_every_intercepted_host(chain):
    for host in ("claude.ai", "files.oaiusercontent.com", "api.openai.com"):
        f = make_flow(host)
        await run_chain(chain.eg, chain.cp, f)
        d = answer(f)
        assert d == {"exifguard": True, "protected": True, "host": host, "version": d["version"], "mode": "strip"}
        assert f.response.headers["cache-control"] == "no-store"
        assert f.response.headers["content-type"] == "application/json"


async def test_other_hosts_are_left_alone(chain):
    f = make_flow("example.com")
    await run_chain(chain.eg, chain.cp, f)
    assert f.response is None


async def test_audit_mode_is_not_protected(chain):
    chain.tctx.configure(chain.eg, exifguard_mode="audit")
    f = make_flow()
    await run_chain(chain.eg, chain.cp, f)
    assert answer(f)["protected"] is False and answer(f)["mode"] == "audit"


async def test_cors_only_for_exifguards_own_pages(chain):
    cases = {"https://api.openai.com": True, "http://127.0.0.1:8081": True, "http://localhost:8081": True,
             "https://evil.example": False, "http://claude.ai": False, "null": False}
    for origin, allowed in cases.items():
        f = make_flow(headers=(("origin", origin),))
        await run_chain(chain.eg, chain.cp, f)
        got = f.response.headers.get("access-control-allow-origin")
        assert (got == origin) if allowed else got is None, origin


async def test_the_whole_namespace_is_answered_never_forwarded(chain):
    for method, path, status in (("GET", probe.WELL_KNOWN + "/nope", 404), ("PUT", probe.JSON_PATH, 405),
                                 ("DELETE", probe.WELL_KNOWN, 405), ("OPTIONS", probe.JSON_PATH, 204)):
        f = make_flow(method=method, path=path)
        await run_chain(chain.eg, chain.cp, f)
        assert f.response is not None and f.response.status_code == status, (method, path)


async def test_plain_http_claims_nothing_and_is_not_forwarded(chain):
    for path in (probe.JSON_PATH, probe.WELL_KNOWN):
        f = make_flow(path=path, scheme="http")
        await run_chain(chain.eg, chain.cp, f)
        assert f.response.status_code == 400 and b"protected" not in f.response.content
        assert b"https://claude.ai/.well-known/exifguard" in f.response.content


# ---- exifguard not healthy: never "protected" ----------------------------------------------
class FakeGuard:
    name = "exifguard_guard"

    def __init__(self, healthy: bool):
        self._healthy = healthy
        self.hooked = {"requestheaders": [], "request": []}

    def healthy(self):
        return self._healthy

    def faults(self):
        return [] if self._healthy else ["option error: exifguard: bad value"]


async def test_an_unhealthy_guard_means_a_refusal_not_protected():
    eg, cp = Exifguard(), CheckPage()
    with taddons.context(eg, cp, FakeGuard(healthy=False)):
        for path in (probe.JSON_PATH, probe.WELL_KNOWN, probe.SEEN_PATH + "?host=claude.ai"):
            f = make_flow(path=path)
            await run_chain(eg, cp, f)
            assert f.response.status_code == 503, path
            assert b"protected" not in f.response.content
            assert b"option error" in f.response.content
        body, hdrs = multipart(cp.sample())
        f = make_flow(path=probe.TEST_PATH, method="POST", body=body, headers=hdrs)
        await run_chain(eg, cp, f)
        assert f.response.status_code == 503 and answer(f)["outcome"] == "refused"


async def test_with_the_real_guard_nothing_is_answered_before_exifguard_is_checked():
    """Issue 11: until the guard's check passed (or after a configure failed), every request is
    refused; the check page must not answer "protected" in between."""
    from exifguard.proxy.guard import Guard
    eg, cp, guard = Exifguard(), CheckPage(), Guard()
    guard.track([eg, cp], [])
    with taddons.context(eg, cp, guard) as tctx:
        tctx.configure(eg)
        for checked in (False, True):
            if checked:
                guard.check()
                guard.configured[id(eg)] = "exifguard: bad option"  # a later configure failed
            f = make_flow()
            for hook in ("requestheaders", "request"):  # the master's order: script addons, then the guard
                for addon in (eg, cp, guard):
                    r = getattr(addon, hook)(f)
                    if hasattr(r, "__await__"):
                        await r
            assert f.response.status_code == 503, checked
            assert b'"protected"' not in f.response.content


async def test_a_healthy_guard_whose_exifguard_hook_did_not_finish_refuses():
    eg, cp = Exifguard(), CheckPage()
    guard = FakeGuard(healthy=True)
    guard.hooked = {"requestheaders": ["exifguard.requestheaders"], "request": ["exifguard.request"]}
    with taddons.context(eg, cp, guard):
        f = make_flow()
        await run_chain(eg, cp, f)  # no wrapper marked the hooks done
        assert f.response.status_code == 503


async def test_without_the_exifguard_addon_nothing_claims_protection():
    cp = CheckPage()
    with taddons.context(cp):
        f = make_flow()
        cp.request(f)
        assert f.response is None  # no host table: not ours to answer (and no guard: nothing loaded)


# ---- the HTML page ---------------------------------------------------------------------------
async def test_page_says_routed_and_trusted_with_a_strict_policy_and_no_external_resources(chain):
    f = make_flow(path=probe.WELL_KNOWN)
    await run_chain(chain.eg, chain.cp, f)
    page = f.response.get_text()
    assert "reaches <code>claude.ai</code> through exifguard and trusts its certificate" in page
    policy = f.response.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert page.count(f'nonce="{nonce}"') == 3  # one style, two scripts: nothing else runs
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "an external resource"
    for t in probe.probe_targets(chain.eg.hosts):
        assert f'data-host="{t.host}"' in page
        assert f"https://{t.host}" in policy
    assert "<script>" not in page  # every executed script carries the nonce
    assert " cert install --certs " in page  # the taddons confdir is not the default certs folder


def test_page_escapes_what_it_shows():
    from exifguard.proxy.checkpage import render_check_page
    page = render_check_page(host="<img src=x>", mode="strip", since=1.0, nonce="n", sample_bytes=1,
                             targets=[probe.ProbeTarget("</script><b>", "a.example")])
    assert "<img src=x>" not in page and "&lt;img src=x&gt;" in page
    assert "</script><b>" not in page


# ---- failed handshakes: host names only, bounded -----------------------------------------------
def tls_data(sni):
    return SimpleNamespace(conn=SimpleNamespace(sni=sni))


async def test_seen_tells_a_refused_certificate_from_no_contact(chain):
    since = 1.0
    chain.cp.tls_failed_client(tls_data("claude.ai"))
    chain.cp.tls_failed_client(tls_data("www.bank.example"))  # not ours: not recorded
    assert len(chain.cp.failures) == 1
    for host, failed in (("claude.ai", True), ("api.openai.com", False)):
        f = make_flow(path=f"{probe.SEEN_PATH}?host={host}&since={since}")
        await run_chain(chain.eg, chain.cp, f)
        assert answer(f) == {"host": host, "intercepted": True, "tls_failed": failed}
    f = make_flow(path=f"{probe.SEEN_PATH}?host=www.bank.example")
    await run_chain(chain.eg, chain.cp, f)
    assert answer(f) == {"host": "", "intercepted": False, "tls_failed": False}


def test_failure_memory_is_bounded_in_time_and_size():
    now = [1000.0]
    mem = probe.TlsFailures(ttl=60, slots=4, clock=lambda: now[0])
    mem.record("claude.ai")
    assert mem.failed_since("claude.ai", 999)
    assert not mem.failed_since("claude.ai", 1001)  # before the page started probing
    now[0] += 61
    assert not mem.failed_since("claude.ai", 0)  # forgotten
    for i in range(10):
        mem.record(f"h{i}.example")
    assert len(mem) == 4


def test_since_is_clamped_to_the_window():
    assert probe.parse_since("nan", 500.0, 100) == 400.0
    assert probe.parse_since("x", 500.0, 100) == 400.0
    assert probe.parse_since("1e300", 500.0, 100) == 500.0
    assert probe.parse_since("450", 500.0, 100) == 450.0


# ---- probe hosts -----------------------------------------------------------------------------
def test_one_probe_host_per_service_that_maps_back_to_it():
    hosts = HostSet.build(extra=["up-*.example.org"])
    targets = probe.probe_targets(hosts)
    services = {e.service for e in hosts.entries}
    assert {t.service for t in targets} == services
    for t in targets:
        assert "*" not in t.host
        assert hosts.lookup(t.host).service == t.service
    assert "up-probe.example.org" in {t.host for t in targets}


# ---- the live test upload --------------------------------------------------------------------
async def test_live_test_is_cleaned_like_any_upload_then_answered_not_forwarded(chain):
    sample = chain.cp.sample()
    assert any(t.startswith("GPS") for t in exif_tag_names(sample))
    body, hdrs = multipart(sample)
    f = make_flow(path=probe.TEST_PATH, method="POST", body=body, headers=hdrs)
    await run_chain(chain.eg, chain.cp, f)
    d = answer(f)
    assert d["outcome"] == "cleaned" and d["ok"] is True
    v = d["verification"]
    assert v["gps_left"] is False and v["marker_left"] is False and v["same_length"] is True
    assert "GPSLatitude" in v["removed_tags"]
    tags = {t for x in d["removed"] for t in x["tags"]}
    assert "GPSLatitude" in tags and "location" in {c for x in d["removed"] for c in x["categories"]}
    assert "location (GPS)" in d["summary"]
    # names, never values: neither the coordinates nor the marker nor the camera model
    text = f.response.get_text()
    for value in (chain.cp.marker, "ExifguardCam", "Selftest 1", "2024:01:02"):
        assert value not in text
    # the normal inspection ran: the audit log has it, marked so `report` leaves it out
    records = audit.read_records(chain.audit)
    assert len(records) == 1 and records[0]["action"] == "stripped" and records[0]["selftest"] is True
    assert records[0]["path"] == probe.TEST_PATH
    s = audit.summarise(records)
    assert s["images"] == 0 and s["selftest_uploads_not_counted"] == 1
    assert chain.eg.stats.stripped == 1
    # never sent anywhere: exifguard's own answer, and the request still points at claude.ai
    assert f.request.host == "claude.ai" and f.response.status_code == 200


async def test_live_test_blocked_by_policy_says_so(chain):
    chain.tctx.configure(chain.eg, exifguard_mode="block")
    body, hdrs = multipart(chain.cp.sample())
    f = make_flow(path=probe.TEST_PATH, method="POST", body=body, headers=hdrs)
    await run_chain(chain.eg, chain.cp, f)
    d = answer(f)
    assert d["outcome"] == "blocked" and f.response.status_code == d["status"] >= 400
    assert d["reason"] and chain.cp.marker not in f.response.get_text()


async def test_live_test_in_audit_mode_shows_the_photo_went_unchanged(chain):
    chain.tctx.configure(chain.eg, exifguard_mode="audit")
    body, hdrs = multipart(chain.cp.sample())
    f = make_flow(path=probe.TEST_PATH, method="POST", body=body, headers=hdrs)
    await run_chain(chain.eg, chain.cp, f)
    d = answer(f)
    assert d["outcome"] == "audit" and d["ok"] is False and d["verification"]["gps_left"] is True


async def test_live_test_on_a_shared_host_is_not_inspected_and_not_forwarded(chain):
    from exifguard.proxy.hosts import Kind, load_table
    with_shared = [s.id for s in load_table().services if any(r.kind is Kind.SHARED for r in s.hosts)]
    chain.tctx.configure(chain.eg, exifguard_hosts=[f"service:{sid}" for sid in with_shared[:1]])
    shared = next((e for e in chain.eg.hosts.entries if e.kind is Kind.SHARED), None)
    if shared is None:
        pytest.skip("no shared (Origin-gated) host in the service table")
    host = probe.concrete_host(shared)
    body, hdrs = multipart(chain.cp.sample())
    f = make_flow(host=host, path=probe.TEST_PATH, method="POST", body=body, headers=hdrs)
    await run_chain(chain.eg, chain.cp, f)
    assert answer(f)["outcome"] == "not-inspected"


def test_multipart_part_is_taken_byte_for_byte():
    jpeg = b"\xff\xd8\xff\xe0\r\n\r\nline\r\n--not-the-boundary\r\n\xff\xd9"
    body, hdrs = multipart(jpeg)
    assert first_jpeg_part(hdrs[0][1], body) == jpeg
    assert first_jpeg_part("text/plain", body) is None


# ---- end to end: a real `exifguard run` (mitmdump) -----------------------------------------------
@pytest.fixture(scope="module")
def running(tmp_path_factory):
    from .harness import spawn_run, wait_banner
    tmp = tmp_path_factory.mktemp("checkpage-e2e")
    certs = tmp / "certs"
    pp = spawn_run(["--certs", str(certs), "--port", "0", "--pac-port", "-1",
                    "--audit-log", str(tmp / "audit.jsonl")], certs, tmp / "audit.jsonl")
    if not wait_banner(pp):
        pp.stop()
        raise RuntimeError("exifguard run did not start:\n" + pp.output())
    yield pp
    pp.stop()


def opener(pp, trusted=True):
    ctx = ssl.create_default_context(cafile=str(pp.ca)) if trusted else ssl.create_default_context()
    return urllib.request.build_opener(urllib.request.ProxyHandler({"https": pp.url}),
                                       urllib.request.HTTPSHandler(context=ctx))


@pytest.mark.e2e
def test_e2e_json_page_and_live_test_through_mitmdump(running):
    op = opener(running)
    with op.open(f"https://claude.ai{probe.JSON_PATH}", timeout=30) as r:
        d = json.loads(r.read())
    assert d["protected"] is True and d["host"] == "claude.ai" and d["mode"] == "strip"
    with op.open(f"https://claude.ai{probe.WELL_KNOWN}", timeout=30) as r:
        assert b"through exifguard and trusts its certificate" in r.read()
    with op.open(f"https://claude.ai{probe.SAMPLE_PATH}", timeout=30) as r:
        sample = r.read()
    body, hdrs = multipart(sample)
    req = urllib.request.Request(f"https://claude.ai{probe.TEST_PATH}", data=body, method="POST", headers=dict(hdrs))
    with op.open(req, timeout=60) as r:
        d = json.loads(r.read())
    assert d["outcome"] == "cleaned" and d["ok"] is True, d
    assert running.wait_for("exifguard: claude.ai image (JPEG")
    records = audit.read_records(running.audit)
    assert records and records[-1]["selftest"] is True and records[-1]["path"] == probe.TEST_PATH


@pytest.mark.e2e
def test_e2e_a_refused_certificate_is_remembered_for_the_seen_question(running):
    import time
    since = time.time() - 1
    with pytest.raises(urllib.error.URLError) as err:
        opener(running, trusted=False).open(f"https://api.openai.com{probe.JSON_PATH}", timeout=30)
    assert isinstance(err.value.reason, ssl.SSLError)
    from exifguard.proxy.status import StatusSource, ask_proxy_seen
    src = StatusSource(proxy=running.url.removeprefix("http://"), ca_cert=running.ca)
    d = {}
    for _ in range(20):  # the proxy logs the failure a moment after the client gave up
        d = ask_proxy_seen(src, "api.openai.com", since)
        if d["tls_failed"]:
            break
        time.sleep(0.2)
    assert d["tls_failed"] is True and d["error"] is None
    assert ask_proxy_seen(src, "claude.ai", time.time())["tls_failed"] is False


@pytest.mark.e2e
def test_e2e_exifguard_check_asks_the_running_proxy(running):
    p = subprocess.run([sys.executable, "-m", "exifguard.cli", "check", "--no-browser", "--certs",
                        str(running.certs)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "https://claude.ai/.well-known/exifguard" in p.stdout
    assert "protected (exifguard" in p.stdout
