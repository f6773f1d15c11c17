"""The guard addon: no exifguard, no traffic.

In-process (mitmproxy's taddons) for the decisions, and real `mitmdump -s
addons/exifguard_addon.py` runs for what a person running mitmdump by hand sees.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow, tutils

from exifguard.proxy import guard as g
from exifguard.proxy.addon import make_addons

ROOT = Path(__file__).resolve().parents[2]
REPO_SCRIPT = ROOT / "addons" / "exifguard_addon.py"
PACKAGED_SCRIPT = ROOT / "src" / "exifguard" / "proxy" / "mitmdump_script.py"


def upload(host: str = "claude.ai") -> http.HTTPFlow:
    req = tutils.treq(method=b"POST", host=host, port=443, scheme=b"https", path=b"/api/upload",
                      content=b"\xff\xd8\xff\xe1GPS")
    return tflow.tflow(req=req)


class _Deferred:
    """Stands in for mitmproxy's options object: only `.deferred` matters here."""

    def __init__(self, **values):
        self.deferred = dict(values)


class _Strs:
    def __init__(self, *val):
        self.val = list(val)


# ---- deferred options (the silent fail-open) -----------------------------------------
def test_check_deferred_reports_and_removes_what_mitmproxy_would_choke_on():
    specs = g.option_specs()
    opts = _Deferred(exifguard_mode=_Strs("strip", "audit"),          # run + passthrough: two values
                     exifguard_on_error=_Strs("pass"),                 # fine, stays for mitmproxy
                     exifguard_mod=_Strs("audit"),                     # misspelled
                     exifguard_keep_icc="maybe",                       # config.yaml, wrong type
                     exifguard_log_values=_Strs(),                     # `--set exifguard_log_values`
                     exifguard_audit_log="/tmp/x.jsonl",               # config.yaml, fine
                     other_script_option=_Strs("1"))                   # not ours: untouched
    problems = g.check_deferred(opts, specs)
    text = "\n".join(problems)
    assert "Received multiple values for exifguard_mode" in text
    assert "unknown option exifguard_mod " in text
    assert "exifguard_keep_icc" in text
    assert len(problems) == 3
    assert set(opts.deferred) == {"exifguard_on_error", "exifguard_log_values", "exifguard_audit_log",
                                  "other_script_option"}
    # what stays is typed, so mitmproxy's own parse (which cannot parse typing.Sequence
    # lists) never runs on it
    assert opts.deferred["exifguard_on_error"] == "pass" and opts.deferred["exifguard_log_values"] is True


def test_check_deferred_types_host_lists():
    opts = _Deferred(exifguard_hosts=_Strs("a.example", "*.b.example"))
    assert g.check_deferred(opts, g.option_specs()) == []
    assert opts.deferred["exifguard_hosts"] == ["a.example", "*.b.example"]


def test_check_value_enforces_choices_mitmproxy_does_not():
    specs = g.option_specs()
    with pytest.raises(ValueError, match="exifguard_mode: 'bogus' is not one of strip, audit, block"):
        g.check_value(specs, "exifguard_mode", g._Strings(["bogus"]))
    assert g.check_value(specs, "exifguard_mode", g._Strings(["audit"])) == "audit"
    assert g.check_value(specs, "exifguard_hosts", g._Strings(["a.example", "b.example"])) == ["a.example",
                                                                                              "b.example"]


# ---- refusing traffic ----------------------------------------------------------------
def _guarded(*, problems=()):
    addons = make_addons()
    guard = g.Guard()
    guard.track(addons, list(problems))
    return addons, guard


def test_guard_refuses_until_checked_then_passes():
    addons, guard = _guarded()
    with taddons.context(*addons, guard) as tctx:
        f = upload()
        guard.requestheaders(f)
        assert f.response is not None and f.response.status_code == 503  # still starting
        assert b"nothing was sent" in f.response.content
        tctx.configure(addons[0])  # the script's addons get configured ...
        for a in addons[1:]:
            if hasattr(a, "configure"):
                a.configure(set(tctx.options.keys()))
        guard.running()            # ... then mitmproxy calls running
        assert guard.healthy()
        import asyncio
        f = upload(host="example.com")

        def chain(hook: str, f, skip: object = None) -> None:
            """Each script addon's hook in order (the guard wraps them all), then the guard's."""
            for a in addons:
                fn = getattr(a, hook, None)
                if fn is not None and a is not skip:
                    r = fn(f.client_conn if hook == "client_connected" else f)
                    if asyncio.iscoroutine(r):
                        asyncio.run(r)
            getattr(guard, hook)(f)

        addons[0].client_connected(f.client_conn)  # the chain: exifguard's hooks, then the guard's
        chain("requestheaders", f)
        chain("request", f)
        assert f.response is None
        f = upload(host="example.com")  # exifguard's request hook did not run for this flow
        addons[0].client_connected(f.client_conn)
        chain("requestheaders", f)
        chain("request", f, skip=addons[0])
        assert f.response.status_code == 503 and "exifguard.request failed" in f.response.text


class _Rejecting:
    """An addon whose configure fails the way Exifguard's does for an unusable audit log."""

    name = "exifguard"

    def __init__(self) -> None:
        self.fail = False

    def configure(self, updated):
        if self.fail:
            raise exceptions.OptionsError("cannot open exifguard audit log /x/audit.jsonl: No such file")


def test_guard_refuses_after_a_failed_configure(caplog):
    addon = _Rejecting()
    guard = g.Guard()
    guard.track([addon], [])
    with taddons.context(addon, guard):
        addon.configure(set())      # the wrapper mitmproxy calls: ok
        guard.running()
        assert guard.healthy()
        addon.fail = True
        with pytest.raises(exceptions.OptionsError):
            addon.configure({"exifguard_audit_log"})
        caplog.set_level(logging.ERROR)
        f = upload()
        guard.requestheaders(f)
        assert f.response is not None and f.response.status_code == 503
        assert "option error: exifguard: cannot open exifguard audit log" in f.response.text
        assert "REFUSED a request to claude.ai" in caplog.text
        addon.fail = False          # mitmproxy's rollback re-configures with the old values
        addon.configure({"exifguard_audit_log"})
        f = upload()
        guard.requestheaders(f)
        assert f.response is None


def test_guard_refuses_when_the_addon_is_not_in_the_chain():
    """What mitmproxy does when a script's registration fails: the addon never joins the chain."""
    addons, guard = _guarded()
    with taddons.context(guard):    # the script's addons are missing from the master
        for a in addons:            # even if they had been configured
            if hasattr(a, "configure"):
                guard.configured[id(a)] = ""
        guard.running()
        assert not guard.healthy()
        f = upload()
        guard.requestheaders(f)
        assert f.response.status_code == 503 and "is not active" in f.response.text


def test_guard_with_option_problems_never_becomes_ready(tmp_path):
    addons, guard = _guarded(problems=["unknown option exifguard_mod"])
    ready = tmp_path / "ready.json"
    with taddons.context(*addons, guard) as tctx:
        tctx.configure(guard, exifguard_ready_file=str(ready))
        tctx.configure(addons[0])
        guard.running()
        rec = json.loads(ready.read_text())
        assert rec["ok"] is False and rec["faults"] == ["unknown option exifguard_mod"]
        assert rec["pid"] == os.getpid()
        assert "exifguard_selftest_token" not in rec["options"] and "exifguard_mode" in rec["options"]
        f = upload()
        guard.requestheaders(f)
        assert f.response.status_code == 503


def test_failed_import_of_the_addon_fails_closed(monkeypatch):
    """exifguard.proxy.addon raising on import: the guard alone, refusing everything."""
    monkeypatch.setitem(sys.modules, "exifguard.proxy.addon", None)  # import raises ImportError
    monkeypatch.setattr(g, "_running_master", lambda: None)
    addons = g.install()
    assert [type(a).__name__ for a in addons] == ["Guard"]
    guard = addons[0]
    assert any("could not be loaded" in p for p in guard.problems)
    f = upload()
    guard.requestheaders(f)
    assert f.response.status_code == 503


@pytest.mark.parametrize("script", [REPO_SCRIPT, PACKAGED_SCRIPT], ids=["addons/", "package"])
def test_script_fallback_when_exifguard_cannot_be_imported(script, monkeypatch):
    monkeypatch.setitem(sys.modules, "exifguard.proxy.guard", None)
    spec = importlib.util.spec_from_file_location("eg_script_under_test", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert [a.name for a in mod.addons] == ["exifguard_failed_to_load"]
    f = upload()
    mod.addons[0].requestheaders(f)
    assert f.response.status_code == 503 and "exifguard could not be imported" in f.response.text


def test_exposure_warning_for_non_loopback_and_unconstrained_ca(tmp_path, caplog):
    from exifguard.proxy import ca
    ca.create_ca(tmp_path, [], constrained=False)
    addons, guard = _guarded()
    caplog.set_level(logging.WARNING)
    with taddons.context(*addons, guard) as tctx:
        tctx.options.update(listen_host="0.0.0.0", confdir=str(tmp_path))
        tctx.configure(addons[0])
        guard._warn_exposure()
    text = caplog.text
    assert "exifguard WARNING: this mitmproxy set-up exposes you" in text
    assert "listens on EVERY interface" in text and "NO name constraints" in text
    assert "no body_size_limit" in text


# ---- a real mitmdump run by hand --------------------------------------------------------
def mitmdump(*args: str, tmp: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("mitmdump")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([str(exe), "--listen-host", "127.0.0.1", "-p", "0", "--set", f"confdir={tmp}",
                           "-s", str(REPO_SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


@pytest.mark.parametrize("args,needle", [
    (["--set", "exifguard_mode=strip", "--set", "exifguard_mode=audit"],
     "Received multiple values for exifguard_mode"),
    (["--set", "exifguard_mode=bogus"], "'bogus' is not one of strip, audit, block"),
    (["--set", "exifguard_mod=audit"], "unknown option exifguard_mod"),
])
def test_hand_run_mitmdump_with_bad_exifguard_options_does_not_serve(tmp_path, args, needle):
    """Before: the script was dropped silently and mitmdump proxied uncleaned.  Now the
    errors are logged during start-up and mitmdump refuses to run."""
    p = mitmdump(*args, tmp=tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert needle in out and "exifguard option errors" in out


def test_hand_run_mitmdump_warns_about_exposure(tmp_path):
    """Plain mitmdump creates its own CA (no name constraints) and sets no body_size_limit:
    the guard says so loudly.  Runs until SIGINT; read the log as it comes."""
    import signal
    import time
    exe = Path(sys.executable).with_name("mitmdump")
    proc = subprocess.Popen([str(exe), "--listen-host", "127.0.0.1", "-p", "0", "--set", f"confdir={tmp_path}",
                             "-s", str(REPO_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines: list[str] = []
    try:
        end = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < end:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("!!!!") and any("exposes you" in x for x in lines):
                break
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = "".join(lines)
    assert "guard check passed" in text
    assert "exifguard WARNING: this mitmproxy set-up exposes you" in text
    assert "NO name constraints" in text and "no body_size_limit" in text


# ---- an exception escaping exifguard's request hooks -----------------------------------
class _Raising:
    name = "exifguard"

    def requestheaders(self, flow):
        if flow.request.path.endswith("/sync-boom"):
            raise RuntimeError("GPS 48.8566 SECRET")

    async def request(self, flow):
        raise ValueError("GPS 48.8566 SECRET")


@pytest.mark.parametrize("mode,refused", [("strip", True), ("audit", False)])
def test_escaping_hook_exceptions_refuse_the_request(mode, refused, caplog):
    import asyncio
    addon = _Raising()
    guard = g.Guard()
    guard.track([addon], [])
    caplog.set_level(logging.ERROR)
    with taddons.context(guard) as tctx:
        f = upload()
        f.request.path = "/api/sync-boom"
        with _options(tctx, exifguard_mode=mode):
            addon.requestheaders(f)
            assert (f.response is not None and f.response.status_code == 503) is refused
            f = upload()
            asyncio.run(addon.request(f))
            assert (f.response is not None and f.response.status_code == 503) is refused
    assert "exifguard.request raised ValueError at test_guard.py" in caplog.text
    assert "SECRET" not in caplog.text


class _options:
    """Temporarily add exifguard_mode to a bare taddons context."""

    def __init__(self, tctx, **values):
        self.tctx, self.values = tctx, values

    def __enter__(self):
        for k, v in self.values.items():
            if k not in self.tctx.options:
                self.tctx.options.add_option(k, str, v, "test")
            else:
                self.tctx.options.update(**{k: v})

    def __exit__(self, *exc):
        return False


def test_addon_raising_through_the_real_proxy_sends_nothing(tmp_path):
    """Issue 11 point 8, one fault: the addon's request hook raises; nothing reaches the sink."""
    from .harness import start_proxy
    from .sink import Sink
    httpx = pytest.importorskip("httpx")
    script = tmp_path / "raising_script.py"
    script.write_text(
        "from exifguard.proxy import addon as _a\n"
        "async def _boom(self, flow):\n"
        "    raise RuntimeError('GPS-CANARY-IN-MESSAGE')\n"
        "_a.Exifguard.request = _boom\n"
        "from exifguard.proxy.guard import install\n"
        "addons = install()\n")
    (tmp_path / "sink").mkdir()
    sink = Sink(tmp_path / "sink")
    try:
        p = start_proxy(tmp_path, sink.port, sink.cert, script=script)
        try:
            with httpx.Client(proxy=p.url, verify=str(p.ca), timeout=60) as c:
                r = c.put("https://files.oaiusercontent.com/files/abc/raw", content=b"\xff\xd8\xff\xe1GPS",
                          headers={"content-type": "image/jpeg"})
            assert r.status_code == 503 and "nothing was sent" in r.text
            assert sink.received == []
            assert p.wait_for("exifguard.request raised RuntimeError")
            assert "GPS-CANARY-IN-MESSAGE" not in p.output()
        finally:
            assert p.stop() == 0, p.output()
    finally:
        sink.close()


def test_client_connected_raising_refuses_the_client(caplog):
    class _Admission:
        name = "exifguard"

        def client_connected(self, client):
            if client.peername[0] != "127.0.0.1":
                raise RuntimeError("peer 203.0.113.9")
    addon = _Admission()
    guard = g.Guard()
    guard.track([addon], [])
    caplog.set_level(logging.ERROR)
    with taddons.context(addon, guard):
        guard.checked = True
        from mitmproxy.test import tflow as _tf
        client = _tf.tclient_conn()
        client.peername = ("203.0.113.9", 1234)
        addon.client_connected(client)
        assert client.error == "exifguard could not check this client"
        f = upload(host="example.com")   # the hook never completed for this client (e.g. an
        f.client_conn = _tf.tclient_conn()  # exception from around it): its requests are refused
        guard.requestheaders(f)
        assert f.response.status_code == 503 and "proxy client" in f.response.text
        f = upload(host="example.com")
        f.client_conn.peername = ("127.0.0.1", 1234)
        addon.client_connected(f.client_conn)
        guard.requestheaders(f)
        assert f.response is None
    assert "203.0.113.9" not in caplog.text
