"""Faults injected into a real `exifguard run` (mitmdump), with on_error=block (the default).

For every fault: no original image byte reaches the sink (no canary marker in any
encoding, not the original body), the client gets an error status, the proxy keeps
serving (a clean follow-up upload arrives cleaned, pixels identical), and the fault is
logged once, clearly (lines counted).

The faults come from tests/proxy/fault_addon.py, a second `-s` script in the same
mitmdump; it fires per request (a trigger in the image or body, a request header, or the
client's loopback address) and records each firing, so a test also proves the fault
really happened.  Faults outside the process: the sink resetting mid-upload, the audit
log's filesystem filling up (a real tmpfs when mount works), its folder removed, and an
audit log that cannot be opened at start.

Known product bugs are strict xfails naming the bug (see /work/notes/fault-findings.md).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from . import fault_addon
from . import faultharness as fh
from .harness import ProxyProc

pytestmark = [pytest.mark.e2e]

SLOW_SECONDS = 1.5
VERDICT = r"exifguard: .*(BLOCKED|[Kk]illed|refused)"
DIAGNOSTIC = r"exifguard: internal error"

# ---- which exifguard hooks exist, and what a fault in each must lead to --------------------
#: Flow events (the request carries FAULT_HEADER = "Class.hook"); the others are triggered
#: by the client's loopback address (EGFAULT_PEERS).
FLOW_EVENTS = {"requestheaders", "request", "responseheaders", "response", "error", "http_connect",
               "http_connected", "http_connect_error", "http_connect_upstream"}
#: Exifguard's admission hooks decide whether a client may use the proxy at all: when one
#: fails, the client must be refused (nothing else can make up for a check that did not
#: run).  A backup's hook failing (the Guard's) leaves exifguard's own check in force.
ADMISSION = {"Exifguard.client_connected", "Exifguard.tls_clienthello", "Exifguard.next_layer"}
#: The `error` event only fires for a flow that fails: those requests also reset upstream.
NEEDS_FLOW_ERROR = {"error", "http_connect_error", "server_connect_error", "tls_failed_server"}
#: `tls_failed_client` only fires when the browser rejects exifguard's certificate: those
#: requests come from a client that does not trust exifguard's CA.
NEEDS_UNTRUSTING_CLIENT = {"tls_failed_client"}

#: "Class.hook" -> the reason of a strict xfail, while a hook fault is a known open bug.
#: Fixed: fault-findings F1 (Exifguard.requestheaders/request raising forwarded the original
#: upload) and F2 (Exifguard.client_connected raising served the client), by the guard's
#: completion marks (commit f81667f).
KNOWN_HOOK_BUGS: dict[str, str] = {}


def exifguard_hooks() -> list[str]:
    """"Class.hook" for every per-connection/per-flow event an exifguard addon implements."""
    from exifguard.proxy.addon import make_addons
    objs: list[object] = list(make_addons())
    try:
        from exifguard.proxy.guard import Guard
        objs.append(Guard())
    except Exception:  # noqa: BLE001 - no guard (yet), or a different constructor
        pass
    events = fault_addon.event_hooks()
    return sorted({f"{type(a).__name__}.{h}" for a in objs for h in events if callable(getattr(a, h, None))})


HOOKS = exifguard_hooks()
PEER_HOOKS = [h for h in HOOKS if h.split(".")[1] not in FLOW_EVENTS]
PEERS = {h: f"127.0.0.{i + 2}" for i, h in enumerate(PEER_HOOKS)}


def _hook_param(h: str):  # type: ignore[no-untyped-def]
    if h in KNOWN_HOOK_BUGS:
        return pytest.param(h, marks=pytest.mark.xfail(strict=True, raises=AssertionError,
                                                       reason=KNOWN_HOOK_BUGS[h]))
    return h


# ---- fixtures --------------------------------------------------------------------------------
def start_fault_proxy(tmp: Path, sink: fh.Sink, *run_args: str, audit: Path | None = None,
                      mitmdump_args: tuple[str, ...] = (), **env: str) -> tuple[ProxyProc, Path]:
    """fh.start_fault_proxy with this module's client addresses for the connection hooks."""
    env = {"EGFAULT_SLOW": str(SLOW_SECONDS),
           "EGFAULT_PEERS": ",".join(f"{h}={ip}" for h, ip in PEERS.items()), **env}
    return fh.start_fault_proxy(tmp, sink, *run_args, audit=audit, mitmdump_args=mitmdump_args, **env)


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    s = fh.ResetSink(tmp_path_factory.mktemp("sink"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def fproxy(tmp_path_factory, sink):
    # termlog_verbosity=info: mitmproxy's per-connection lines (hidden by `exifguard run`
    # otherwise) are what tells whether HTTP/2 streams shared one connection
    p, fault_dir = start_fault_proxy(tmp_path_factory.mktemp("faults"), sink,
                                     mitmdump_args=("--set", "termlog_verbosity=info"))
    p.fault_dir = fault_dir  # type: ignore[attr-defined]
    yield p
    rc = p.stop()
    assert rc == 0, p.output()[-3000:]


@pytest.fixture
def fresh(sink):
    sink.clear()
    return sink


# ---- checks ----------------------------------------------------------------------------------
def fired(p: ProxyProc, name: str, more_than: int | None = None, timeout: float = 5.0) -> int:
    """How often the fault fired; with `more_than`, wait (hang-protected) until it fired again
    (a hook after the response, such as `response`, runs after the client has its answer)."""
    f = p.fault_dir / "fired.log"  # type: ignore[attr-defined]
    end = time.monotonic() + timeout
    while True:
        n = f.read_text().split().count(name) if f.exists() else 0
        if more_than is None or n > more_than or time.monotonic() > end:
            return n
        time.sleep(0.05)


def assert_nothing_original_arrived(sink: fh.ResetSink, up: fh.Upload) -> None:
    for r in [*sink.received, *sink.partial]:
        assert fh.leaked(fh.plain(r.body, r.headers)) == [], \
            f"a canary marker reached the sink ({r.method} {r.path})"
        assert up.image not in r.body, "the original image reached the sink"
        if len(r.body) >= 64:
            assert not up.body.startswith(r.body), "the original body (a prefix of it) reached the sink"


def assert_arrived_clean(sink: fh.ResetSink, up: fh.Upload) -> bytes:
    """The upload arrived once, its image cleaned and pixel-identical; returns the image."""
    got = fh.arrivals(sink, up)
    assert len(got) == 1, f"expected one arrival, got {len(got)}"
    img = up.extract(got[0].body)
    assert fh.leaked(img) == [] and fh.leaked(fh.plain(got[0].body, got[0].headers)) == []
    assert img != up.image
    assert fh.decode(img) == fh.decode(up.image), "pixels changed"
    assert fh.private_exif(img) == []
    return img


def follow_up(p: ProxyProc, sink: fh.ResetSink, shape: str = "raw PUT", n: int = 9000) -> None:
    """The proxy still serves: a clean upload right after the fault arrives cleaned."""
    sink.clear()
    up = fh.SHAPES[shape](fh.make_image("JPEG", f"{fh.MARK_PREFIX}-followup-{n}", seed=n), "JPEG", n)
    r = fh.send(p, up)
    assert r.status is not None and 200 <= r.status < 300, (r.status, r.error, r.body[:200])
    assert_arrived_clean(sink, up)


def fault_lines(p: ProxyProc, mark: int) -> list[str]:
    fh.settle(p, quiet=0.3)
    lines = fh.lines_since(p, mark)
    assert not any(fh.MARK_PREFIX in line for line in lines), "a private value reached the log"
    return lines


# ---- the engine, the verifier, the carrier layer, the policy ---------------------------------
BYTE_FAULTS = ["engine-runtime", "engine-memory", "verify-reject", "carrier-internal", "rewrite-raise",
               "policy-raise"]


@pytest.mark.parametrize("shape", list(fh.SHAPES))
@pytest.mark.parametrize("fault", BYTE_FAULTS)
def test_fault_while_checking_blocks_the_upload(fproxy, fresh, fault, shape):
    """The walker raises RuntimeError/MemoryError, the verifier rejects, the carrier layer or
    rewrite_request or the policy raise: the upload is refused, nothing leaves."""
    n = BYTE_FAULTS.index(fault) * 10 + list(fh.SHAPES).index(shape)
    img = fh.make_image("JPEG", f"{fh.MARK_PREFIX}-{fault}", seed=n, fault=fault)
    up = fh.SHAPES[shape](img, "JPEG", n, " " + fh.trigger(fault).decode())
    before = fired(fproxy, fault)
    mark = len(fproxy.lines)
    r = fh.send(fproxy, up)
    assert fired(fproxy, fault, before) > before, "the fault did not fire"
    assert r.status is not None and r.status >= 400, (r.status, r.error)
    assert b"exifguard" in r.body
    assert fresh.received == [] and fresh.partial == []
    lines = fault_lines(fproxy, mark)
    assert fh.count(lines, VERDICT) == 1, lines
    eg = [ln for ln in lines if "exifguard" in ln]
    assert len(eg) <= 2 and fh.count(eg, DIAGNOSTIC) == len(eg) - 1, eg
    assert fh.count(lines, r"Traceback|Addon error") == 0, lines
    follow_up(fproxy, fresh, shape, n=9000 + n)


@pytest.mark.parametrize("fault", BYTE_FAULTS + ["decode-raise", "encode-raise"])
def test_fault_in_a_gzip_upload_blocks_it(fproxy, fresh, fault):
    """The same faults in a gzip-encoded upload, plus decoding and re-encoding failing."""
    n = 400 + (BYTE_FAULTS + ["decode-raise", "encode-raise"]).index(fault)
    img = fh.make_image("JPEG", f"{fh.MARK_PREFIX}-gz-{fault}", seed=n, fault=fault)
    up = fh.gzipped(fh.multipart_upload(img, "JPEG", n, " " + fh.trigger(fault).decode()))
    before = fired(fproxy, fault)
    mark = len(fproxy.lines)
    r = fh.send(fproxy, up)
    assert fired(fproxy, fault, before) > before, "the fault did not fire"
    assert r.status is not None and r.status >= 400, (r.status, r.error)
    assert b"exifguard" in r.body
    assert fresh.received == [] and fresh.partial == []
    lines = fault_lines(fproxy, mark)
    assert fh.count(lines, VERDICT) == 1, lines
    assert fh.count(lines, r"Traceback|Addon error") == 0, lines
    follow_up(fproxy, fresh, n=9400 + n)
    gz = fh.gzipped(fh.multipart_upload(fh.make_image("JPEG", f"{fh.MARK_PREFIX}-gz-ok", seed=n), "JPEG", n + 50))
    fresh.clear()
    r = fh.send(fproxy, gz)
    assert r.status is not None and 200 <= r.status < 300, (r.status, r.body[:200])
    assert_arrived_clean(fresh, gz)


@pytest.mark.parametrize("fmt", [f for f in fh.FORMATS if f != "JPEG"])
@pytest.mark.parametrize("fault", ["engine-runtime", "verify-reject"])
def test_engine_fault_in_every_format_blocks_it(fproxy, fresh, fault, fmt):
    """The walker or the verifier of PNG, WebP, GIF, TIFF, HEIC fails: refused, nothing sent."""
    n = 300 + fh.FORMATS.index(fmt) * 2 + (fault == "verify-reject")
    up = fh.data_url_json(fh.make_image(fmt, f"{fh.MARK_PREFIX}-{fmt}-{fault}", seed=n, fault=fault), fmt, n)
    before = fired(fproxy, fault)
    mark = len(fproxy.lines)
    r = fh.send(fproxy, up)
    assert fired(fproxy, fault, before) > before, "the fault did not fire"
    assert r.status is not None and r.status >= 400 and b"exifguard" in r.body, (r.status, r.error)
    assert fresh.received == []
    lines = fault_lines(fproxy, mark)
    assert fh.count(lines, VERDICT) == 1, lines
    assert fh.count(lines, r"Traceback|Addon error") == 0, lines
    fresh.clear()
    ok = fh.data_url_json(fh.make_image(fmt, f"{fh.MARK_PREFIX}-{fmt}-ok", seed=n), fmt, n + 50)
    r = fh.send(fproxy, ok)
    assert r.status is not None and 200 <= r.status < 300, (r.status, r.body[:200])
    assert_arrived_clean(fresh, ok)


# ---- exifguard's own hooks raising -------------------------------------------------------------
def test_every_wrapped_hook_has_a_fault_case(fproxy):
    """Every hook the injector wrapped in the running proxy is one this module tests."""
    line = next(ln for ln in fproxy.lines if "FAULT-INJECTOR ready" in ln)
    wrapped = set(line.split("hooks wrapped:", 1)[1].split())
    assert {"Exifguard.requestheaders", "Exifguard.request"} <= wrapped
    assert wrapped <= set(HOOKS), f"untested hooks: {sorted(wrapped - set(HOOKS))}"


@pytest.mark.parametrize("hook", [_hook_param(h) for h in HOOKS])
def test_hook_raising_fails_closed(fproxy, fresh, hook):
    """An exifguard addon's hook raises: nothing original leaves; the upload is refused with
    an error or (for a hook whose work another one does too, or that runs after the upload
    left) arrives cleaned; one log line says so; the proxy serves the next upload."""
    cls, event = hook.split(".")
    n = 500 + HOOKS.index(hook)
    img = fh.make_image("JPEG", f"{fh.MARK_PREFIX}-hook-{event}", seed=n, size=(160, 120))
    up = fh.raw_put(img, "JPEG", n)
    headers = {fh.RESET_HEADER: "2000"} if event in NEEDS_FLOW_ERROR else {}
    before = fired(fproxy, hook)
    mark = len(fproxy.lines)
    if event in FLOW_EVENTS:
        r = fh.send(fproxy, up, {**headers, fault_addon.FAULT_HEADER: hook})
    elif event in NEEDS_UNTRUSTING_CLIENT:
        c = fh.Client(fproxy, source=PEERS[hook])
        c.ctx = ssl.create_default_context()  # the system's CAs only: exifguard's is rejected
        try:
            r = c.send(up, headers)
        finally:
            c.close()
        assert r.status is None  # the handshake failed: nothing was sent at all
    else:
        r = fh.send(fproxy, up, headers, source=PEERS[hook])
    assert fired(fproxy, hook, before) > before, "the fault did not fire"
    assert_nothing_original_arrived(fresh, up)
    lines = fault_lines(fproxy, mark)
    # logged once: by mitmproxy ("Addon error") or by exifguard's own guard, not both, not twice
    assert fh.count(lines, rf"Addon error: |{DIAGNOSTIC}") == 1, lines
    refused = r.status is None or r.status >= 400
    if hook in ADMISSION:
        assert refused, f"the client was served ({r.status}) although its admission check failed"
    if refused:
        assert fresh.received == [], "refused, yet forwarded"
        if r.status is not None and event not in NEEDS_FLOW_ERROR:
            assert fh.count(lines, VERDICT) == 1, lines
    else:
        assert_arrived_clean(fresh, up)
    follow_up(fproxy, fresh, n=9500 + n)


def test_faults_on_some_http2_streams_leave_the_others(fproxy, fresh, tmp_path):
    """One HTTP/2 connection (curl --parallel multiplexes), eight concurrent streams: three
    fail (engine, verifier, exifguard's request hook) and are refused; the five clean ones
    on the same connection arrive cleaned (a refusal must not take the others with it)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl missing")
    faults = {1: "engine-runtime", 4: "verify-reject", 6: "Exifguard.request"}
    ups = []
    argv = [curl, "-sS", "--parallel", "--parallel-max", "8"]
    for i in range(8):
        f = faults.get(i)
        img = fh.make_image("JPEG", f"{fh.MARK_PREFIX}-h2-{i}", seed=1000 + i,
                            fault=f if f and "." not in f else None)
        up = fh.multipart_upload(img, "JPEG", 1000 + i)
        ups.append(up)
        body = tmp_path / f"body{i}"
        body.write_bytes(up.body)
        argv += [*(["--next"] if i else []), "--http2", "--proxy", fproxy.url, "--cacert", str(fproxy.ca),
                 "-o", "/dev/null", "-w", f"{i} %{{http_code}} %{{http_version}}\n", "--data-binary", f"@{body}"]
        for k, v in {**up.headers, **({fault_addon.FAULT_HEADER: f} if f and "." in f else {})}.items():
            argv += ["-H", f"{k}: {v}"]
        argv.append(up.url)
    mark = len(fproxy.lines)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    got = {int(a): (int(b), c) for a, b, c in (ln.split() for ln in p.stdout.splitlines() if ln.strip())}
    assert sorted(got) == list(range(8)), p.stdout + p.stderr
    for i, up in enumerate(ups):
        status, version = got[i]
        assert version == "2", got
        if i in faults:
            assert status >= 400, (i, status)
            assert fh.arrivals(fresh, up) == []
        else:
            assert 200 <= status < 300, (i, status)
            assert_arrived_clean(fresh, up)
    for x in fresh.received:
        assert fh.leaked(x.body) == []
    lines = fault_lines(fproxy, mark)
    # mitmproxy logs each client connection at info level: one, so the streams shared it
    connects = fh.count(lines, r"client connect")
    assert connects == 1, f"the streams did not share one connection ({connects} client connects)"
    assert fh.count(lines, VERDICT) == len(faults), lines


# ---- the worker pool saturated ----------------------------------------------------------------
def test_slow_scrubs_holding_every_worker(fproxy, fresh):
    """More slow uploads than worker threads, then clean ones: every upload is answered,
    each arrives cleaned or is refused, nothing leaks, and the proxy serves afterwards."""
    slow = [fh.SHAPES[s](fh.make_image("JPEG", f"{fh.MARK_PREFIX}-slow-{i}", seed=700 + i, fault="engine-slow"),
                         "JPEG", 700 + i) for i, s in enumerate(list(fh.SHAPES) * 3)]
    quick = [fh.SHAPES[s](fh.make_image("JPEG", f"{fh.MARK_PREFIX}-quick-{i}", seed=800 + i), "JPEG", 800 + i)
             for i, s in enumerate(fh.SHAPES)]
    replies: dict[int, fh.Reply] = {}
    mark = len(fproxy.lines)

    def go(i: int, up: fh.Upload) -> None:
        replies[i] = fh.send(fproxy, up)
    threads = [threading.Thread(target=go, args=(i, up)) for i, up in enumerate(slow)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the slow ones now hold the workers
    late = [threading.Thread(target=go, args=(len(slow) + i, up)) for i, up in enumerate(quick)]
    for t in late:
        t.start()
    for t in threads + late:
        t.join(timeout=120)  # hang protection only
    assert not any(t.is_alive() for t in threads + late), "an upload hung"
    assert fired(fproxy, "engine-slow") >= 1
    ups = slow + quick
    assert sorted(replies) == list(range(len(ups))), "an upload got no answer"
    for i, up in enumerate(ups):
        r = replies[i]
        assert r.status is not None, f"upload {i} lost: {r.error}"
        if 200 <= r.status < 300:
            assert_arrived_clean(fresh, up)
        else:
            assert r.status >= 400 and fh.arrivals(fresh, up) == []
    for x in fresh.received:
        assert fh.leaked(x.body) == []
    lines = fault_lines(fproxy, mark)
    assert fh.count(lines, r"Traceback|Addon error") == 0
    # one line per image, whatever its fate
    assert fh.count(lines, r"exifguard: .*(claude\.ai|oaiusercontent\.com|openai\.com|anthropic\.com)") \
        >= len(ups)
    print("\nlatency under saturation: slow " + ", ".join(f"{replies[i].seconds:.2f}s" for i in range(len(slow)))
          + "; quick " + ", ".join(f"{replies[len(slow) + i].seconds:.2f}s" for i in range(len(quick))))
    follow_up(fproxy, fresh, n=9900)


def _concurrently(p: ProxyProc, ups: list[fh.Upload], stagger: float = 0.2) -> list[fh.Reply]:
    replies: dict[int, fh.Reply] = {}

    def go(i: int, up: fh.Upload) -> None:
        replies[i] = fh.send(p, up)
    threads = []
    for i, up in enumerate(ups):
        threads.append(threading.Thread(target=go, args=(i, up)))
        threads[-1].start()
        time.sleep(stagger)
    for t in threads:
        t.join(timeout=120)  # hang protection only
    assert not any(t.is_alive() for t in threads), "an upload hung"
    return [replies[i] for i in range(len(ups))]


def test_queue_full_refuses_with_503_and_sends_nothing(tmp_path, sink):
    """One worker, one waiting place, four slow uploads: the two that find no place are
    refused at once (503, Retry-After), the others arrive cleaned; nothing leaks."""
    p, fault_dir = start_fault_proxy(tmp_path, sink, mitmdump_args=(
        "--set", "exifguard_workers=1", "--set", "exifguard_queue=1", "--set", "exifguard_express=0"),
        EGFAULT_SLOW="2")
    p.fault_dir = fault_dir  # type: ignore[attr-defined]
    try:
        sink.clear()
        ups = [fh.raw_put(fh.make_image("JPEG", f"{fh.MARK_PREFIX}-busy-{i}", seed=60 + i, fault="engine-slow"),
                          "JPEG", 60 + i) for i in range(4)]
        mark = len(p.lines)
        replies = _concurrently(p, ups)
        statuses = [r.status for r in replies]
        assert None not in statuses, [r.error for r in replies]
        assert statuses.count(503) >= 1, statuses
        for up, r in zip(ups, replies):
            if r.status == 503:
                assert b"exifguard" in r.body
                assert fh.arrivals(sink, up) == []
            else:
                assert 200 <= r.status < 300, (r.status, r.body[:200])
                assert_arrived_clean(sink, up)
        for x in sink.received:
            assert fh.leaked(x.body) == []
        lines = fault_lines(p, mark)
        assert fh.count(lines, r"exifguard: .*busy") >= 1, lines
        assert fh.count(lines, r"Traceback|Addon error") == 0, lines
        follow_up(p, sink, n=9060)
    finally:
        assert p.stop() == 0


def test_inspection_past_its_deadline_is_refused_and_never_sent_late(tmp_path, sink):
    """The walker takes 4 s, the deadline is 1 s: the client gets an error at the deadline,
    and when the walker finally returns its result is not forwarded."""
    p, fault_dir = start_fault_proxy(tmp_path, sink, mitmdump_args=(
        "--set", "exifguard_inspect_timeout=1"), EGFAULT_SLOW="4")
    p.fault_dir = fault_dir  # type: ignore[attr-defined]
    try:
        sink.clear()
        up = fh.multipart_upload(fh.make_image("JPEG", f"{fh.MARK_PREFIX}-late", seed=70, fault="engine-slow"),
                                 "JPEG", 70)
        mark = len(p.lines)
        r = fh.send(p, up)
        assert fired(p, "engine-slow", 0) >= 1
        assert r.status is not None and r.status >= 400, (r.status, r.error)
        assert b"exifguard" in r.body
        time.sleep(4.5)  # the walker returns meanwhile: nothing may be sent now
        assert sink.received == [] and sink.partial == []
        lines = fault_lines(p, mark)
        assert fh.count(lines, VERDICT) == 1, lines
        assert fh.count(lines, r"Traceback|Addon error") == 0, lines
        follow_up(p, sink, "multipart", n=9070)
    finally:
        assert p.stop() == 0


# ---- the upstream resets mid-upload -------------------------------------------------------------
@pytest.mark.parametrize("shape", list(fh.SHAPES))
def test_upstream_reset_mid_upload(fproxy, fresh, shape):
    """The service reads 2000 bytes of the (cleaned) body and resets: the client gets an
    error, what went out before the reset was already clean, nothing is retried."""
    n = 600 + list(fh.SHAPES).index(shape)
    up = fh.SHAPES[shape](fh.make_image("JPEG", f"{fh.MARK_PREFIX}-reset", seed=n, size=(320, 240)), "JPEG", n)
    mark = len(fproxy.lines)
    r = fh.send(fproxy, up, {fh.RESET_HEADER: "2000"})
    assert r.status is None or r.status >= 500, (r.status, r.body[:200])
    assert fresh.received == []
    assert len(fresh.partial) == 1 and len(fresh.partial[0].body) == 2000
    assert_nothing_original_arrived(fresh, up)
    lines = fault_lines(fproxy, mark)
    assert fh.count(lines, r"exifguard: .* image \(JPEG") == 1, lines  # cleaned once, not twice
    assert fh.count(lines, r"Traceback|Addon error|exifguard: .*(BLOCKED|internal error)") == 0, lines
    follow_up(fproxy, fresh, shape, n=9600 + n)


# ---- the client aborts mid-upload -------------------------------------------------------------
def test_client_reset_mid_upload_sends_nothing(fproxy, fresh):
    """The client declares the whole body, sends half of it and resets: nothing leaves,
    nothing is logged as cleaned, and the proxy serves the next upload."""
    import http.client
    import socket
    import ssl
    import struct
    up = fh.raw_put(fh.make_image("JPEG", f"{fh.MARK_PREFIX}-abort", seed=80, size=(320, 240)), "JPEG", 80)
    mark = len(fproxy.lines)
    ctx = ssl.create_default_context(cafile=str(fproxy.ca))
    c = http.client.HTTPSConnection("127.0.0.1", fproxy.port, context=ctx, timeout=30)
    c.set_tunnel("files.oaiusercontent.com", 443)
    c.putrequest("PUT", "/files/abort/raw?sig=SECRETSIG")
    for k, v in up.headers.items():
        c.putheader(k, v)
    c.putheader("content-length", str(len(up.body)))
    c.endheaders()
    c.send(up.body[: len(up.body) // 2])
    time.sleep(0.3)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    socket.socket.close(c.sock)
    time.sleep(1.0)
    assert fresh.received == [] and fresh.partial == []
    lines = fault_lines(fproxy, mark)
    assert fh.count(lines, r"exifguard: .* image \(JPEG") == 0, lines
    assert fh.count(lines, r"Traceback|Addon error") == 0, lines
    follow_up(fproxy, fresh, n=9080)


# ---- the audit log ---------------------------------------------------------------------------------
def audit_records(p: ProxyProc) -> tuple[list[dict], list[str]]:
    """(records, lines that are not a JSON object)."""
    good, bad = [], []
    for line in p.audit.read_bytes().decode("utf-8", "replace").splitlines():
        try:
            d = json.loads(line)
            (good if isinstance(d, dict) else bad).append(d if isinstance(d, dict) else line)
        except json.JSONDecodeError:
            bad.append(line)
    return good, bad


def test_audit_log_write_fails_with_enospc(fproxy, fresh):
    """write(2) on the audit log fails (disk full) for three uploads in a row: each still
    leaves only cleaned, the failure is logged once (not once per upload), and the next
    upload is audited again."""
    mark = len(fproxy.lines)
    for k in range(3):
        fresh.clear()
        up = fh.raw_put(fh.make_image("JPEG", f"{fh.MARK_PREFIX}-enospc", seed=41 + k), "JPEG", 41 + k)
        before = fired(fproxy, "audit-enospc")
        r = fh.send(fproxy, up, {fault_addon.FAULT_HEADER: "audit-enospc"})
        assert fired(fproxy, "audit-enospc", before) > before, "the fault did not fire"
        assert r.status is not None, r.error
        assert_nothing_original_arrived(fresh, up)
        if 200 <= r.status < 300:
            assert_arrived_clean(fresh, up)
    lines = fault_lines(fproxy, mark)
    assert fh.count(lines, r"exifguard: .*audit log") == 1, lines
    assert fh.count(lines, r"Traceback|Addon error") == 0, lines
    follow_up(fproxy, fresh, n=9041)
    records, bad = audit_records(fproxy)
    assert bad == []
    assert records and records[-1]["sha256"] == hashlib.sha256(fresh.received[-1].body).hexdigest()


def test_audit_log_short_write_is_reported_and_does_not_corrupt_the_next_record(tmp_path, sink):
    """write(2) stores half the record and returns the short count, then the disk is full
    for the rest of that upload: reported once, and the next record is intact."""
    p, fault_dir = start_fault_proxy(tmp_path, sink)
    p.fault_dir = fault_dir  # type: ignore[attr-defined]
    try:
        fh.settle(p, quiet=0.3)
        sink.clear()
        up = fh.raw_put(fh.make_image("JPEG", f"{fh.MARK_PREFIX}-short", seed=42), "JPEG", 42)
        mark = len(p.lines)
        r = fh.send(p, up, {fault_addon.FAULT_HEADER: "audit-short"})
        assert fired(p, "audit-short", 0) >= 1, "the fault did not fire"
        assert r.status is not None, r.error
        assert_nothing_original_arrived(sink, up)
        lines = fault_lines(p, mark)
        follow_up(p, sink, n=9042)
        records, bad = audit_records(p)
        clean_sha = hashlib.sha256(sink.received[-1].body).hexdigest()
        assert any(rec.get("sha256") == clean_sha for rec in records), "the next record was lost"
        assert len(bad) <= 1, f"torn audit lines: {len(bad)}"  # at most the torn record itself
        assert fh.count(lines, r"exifguard: .*audit log") == 1, lines
    finally:
        assert p.stop() == 0


def _mount_tmpfs(where: Path, size: str) -> bool:
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    where.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                       capture_output=True, timeout=30)
    return p.returncode == 0


@pytest.fixture(scope="module")
def disk_full(tmp_path_factory, sink):
    """A real full disk: the audit log on a 64 KiB tmpfs, filled up while the proxy runs.

    Returns what happened: replies, the log lines, the audit log after space came back.
    """
    tmp = tmp_path_factory.mktemp("diskfull")
    fs = tmp / "fs"
    if not _mount_tmpfs(fs, "64k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the injected ENOSPC tests cover it")
    try:
        p, fault_dir = start_fault_proxy(tmp, sink, audit=fs / "audit.jsonl")
        out: dict = {"replies": [], "uploads": []}
        try:
            sink.clear()
            first = fh.raw_put(fh.make_image("JPEG", f"{fh.MARK_PREFIX}-disk-0", seed=300), "JPEG", 300)
            out["replies"].append(fh.send(p, first))
            out["uploads"].append(first)
            filler = fs / "filler"
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:  # take every free page
                while os.write(fd, b"\0" * 4096) > 0:
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
            finally:
                os.close(fd)
            mark = len(p.lines)
            out["loss_reported"] = None  # was the first record that did not fit reported?
            for i in range(1, 16):
                up = fh.raw_put(fh.make_image("JPEG", f"{fh.MARK_PREFIX}-disk-{i}", seed=300 + i), "JPEG", 300 + i)
                out["uploads"].append(up)
                out["replies"].append(fh.send(p, up))
                fh.settle(p, quiet=0.2)
                reported = fh.count(fh.lines_since(p, mark), r"exifguard: .*audit log") >= 1
                records, bad = audit_records(p)
                intact = len(records) == i + 1 and not bad and p.audit.read_bytes().endswith(b"\n")
                if not intact and out["loss_reported"] is None:
                    out["loss_reported"] = reported
                if reported:
                    break
            out["full_lines"] = fault_lines(p, mark)
            out["received"] = list(sink.received)
            filler.unlink()
            follow_up(p, sink, n=9300)
            out["followup_sha"] = hashlib.sha256(sink.received[-1].body).hexdigest()
            out["records"], out["bad"] = audit_records(p)
        finally:
            rc = p.stop()
        assert rc == 0, p.output()[-3000:]
        yield out
    finally:
        subprocess.run(["umount", "-l", str(fs)], capture_output=True, timeout=30)


def test_disk_full_audit_log_never_leaks_and_is_reported(disk_full):
    assert len(disk_full["replies"]) > 1
    for up, r in zip(disk_full["uploads"], disk_full["replies"]):
        assert r.status is not None and (200 <= r.status < 300 or r.status >= 400), r.error
    for x in disk_full["received"]:
        assert fh.leaked(x.body) == []
    assert fh.count(disk_full["full_lines"], r"exifguard: .*audit log") >= 1, \
        "the full disk was never reported"


def test_disk_full_audit_log_is_intact_after_space_returns(disk_full):
    assert any(r.get("sha256") == disk_full["followup_sha"] for r in disk_full["records"]), \
        "the first record written after space came back was lost"
    assert len(disk_full["bad"]) <= 1, f"{len(disk_full['bad'])} torn line(s) in the audit log"
    # the first record that did not fit was reported (not only a later ENOSPC)
    assert disk_full["loss_reported"] is not False, "a record was cut short and nothing was logged"


def test_audit_log_folder_removed_while_running(tmp_path, sink):
    """The audit log's folder disappears: uploads still leave only cleaned, the proxy serves."""
    folder = tmp_path / "auditdir"
    p, _ = start_fault_proxy(tmp_path, sink, audit=folder / "audit.jsonl")
    try:
        shutil.rmtree(folder)
        sink.clear()
        up = fh.multipart_upload(fh.make_image("JPEG", f"{fh.MARK_PREFIX}-rmdir", seed=51), "JPEG", 51)
        r = fh.send(p, up)
        assert r.status is not None, r.error
        assert_nothing_original_arrived(sink, up)
        if 200 <= r.status < 300:
            assert_arrived_clean(sink, up)
        follow_up(p, sink, n=9051)
    finally:
        assert p.stop() == 0


def test_audit_log_that_cannot_be_opened_stops_the_run(tmp_path, sink):
    """The proxy must not run without its audit log when one was asked for."""
    (tmp_path / "a-file").write_text("not a folder")
    bad = tmp_path / "a-file" / "audit.jsonl"
    argv = [sys.executable, "-m", "exifguard.cli", "run", "--certs", str(tmp_path / "certs"), "--port", "0",
            "--pac-port", "-1", "--audit-log", str(bad)]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert "audit log" in out and str(bad) in out, out
