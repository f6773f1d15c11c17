"""Process life of `exifguard run`, with real processes on free ports and tmp certs folders.

One instance per certs folder and per port; a busy port gets exifguard's own advice;
run.json belongs to the run that wrote it; mitmdump never outlives exifguard (not even
`kill -9`); SIGINT/SIGTERM end the run, escalating when mitmdump does not react.
Time bounds below only protect against hangs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .harness import ProxyProc, spawn_run, wait_banner

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX process semantics")

HANG = 60.0


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie nobody reaped yet is dead for our purpose
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    except OSError:
        return True


def wait_until(cond, timeout: float = HANG) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


def start(tmp: Path, *args: str, certs: Path | None = None) -> ProxyProc:
    certs = certs or tmp / "certs"
    pp = spawn_run(["--certs", str(certs), "--port", "0", "--pac-port", "0", *args], certs)
    if not wait_banner(pp):
        pp.stop()
        raise AssertionError("exifguard run did not become ready:\n" + pp.output())
    return pp


def run_once(*args: str, timeout: float = HANG) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exifguard.cli", "run", *args], capture_output=True,
                          text=True, timeout=timeout)


def state(pp: ProxyProc) -> dict:
    return json.loads((pp.certs / "run.json").read_text())


def pac_port(pp: ProxyProc) -> int:
    line = next(l for l in pp.lines if l.startswith("PAC URL:"))
    return int(line.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])


def test_second_run_on_the_same_certs_folder_leaves_the_first_alone(tmp_path):
    first = start(tmp_path)
    try:
        before = (first.certs / "run.json").read_bytes()
        p = run_once("--certs", str(first.certs), "--port", "0", "--pac-port", "-1")
        out = p.stdout + p.stderr
        assert p.returncode != 0
        assert f"already running (pid {first.proc.pid}, port {first.port}" in out
        assert "exifguard proxy:" not in out and "regular@" not in out  # no banner, no mitmproxy advice
        assert (first.certs / "run.json").read_bytes() == before
        assert first.proc.poll() is None and port_open(first.port)
        st = subprocess.run([sys.executable, "-m", "exifguard.cli", "selftest", "--certs", str(first.certs)],
                            capture_output=True, text=True, timeout=HANG)
        assert "no running proxy found" not in st.stderr
        assert "selftest via 127.0.0.1:%d" % first.port in st.stdout, st.stdout + st.stderr
    finally:
        assert first.stop() == 0, first.output()


def test_second_run_on_the_same_port_is_refused(tmp_path):
    first = start(tmp_path)
    try:
        p = run_once("--certs", str(tmp_path / "other"), "--port", str(first.port), "--pac-port", "-1")
        out = p.stdout + p.stderr
        assert p.returncode != 0
        assert f"already running (pid {first.proc.pid}, port {first.port}" in out
        assert "exifguard proxy:" not in out and "regular@" not in out
        assert first.proc.poll() is None and port_open(first.port)
        assert not (tmp_path / "other" / "run.json").exists()
    finally:
        assert first.stop() == 0, first.output()


def test_port_held_by_another_program_gets_exifguards_advice(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        p = run_once("--certs", str(tmp_path / "certs"), "--port", str(busy), "--pac-port", "-1")
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert f"port {busy} on 127.0.0.1 is in use by another program" in out
    assert " run --port " in out            # exifguard's flag, with a port that was free
    assert "exifguard proxy:" not in out and "regular@" not in out and "--mode" not in out
    assert not (tmp_path / "certs" / "run.json").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["INT", "TERM", "HUP"])
def test_signal_ends_the_run_and_frees_everything(tmp_path, sig):
    pp = start(tmp_path)
    child = state(pp)["mitmdump_pid"]
    pac = pac_port(pp)
    assert port_open(pp.port) and port_open(pac)
    pp.proc.send_signal(sig)
    rc = pp.proc.wait(timeout=HANG)
    assert rc == 0, pp.output()
    assert wait_until(lambda: "exifguard: stopped." in pp.output(), 10)
    assert not pid_alive(child)
    assert not port_open(pp.port) and not port_open(pac)
    assert not (pp.certs / "run.json").exists()


def test_stop_escalates_when_mitmdump_does_not_react(tmp_path):
    """A stopped (SIGSTOP) mitmdump ignores SIGINT and SIGTERM: SIGKILL ends it, and the run."""
    pp = start(tmp_path)
    child = state(pp)["mitmdump_pid"]
    os.kill(child, signal.SIGSTOP)
    try:
        pp.proc.send_signal(signal.SIGTERM)
        assert pp.proc.wait(timeout=HANG) == 0
        assert wait_until(lambda: not pid_alive(child), 10)
        assert not port_open(pp.port)
    finally:
        if pid_alive(child):
            os.kill(child, signal.SIGKILL)


def test_kill_9_leaves_no_orphan_mitmdump(tmp_path):
    pp = start(tmp_path)
    child = state(pp)["mitmdump_pid"]
    port = pp.port
    pp.proc.kill()
    pp.proc.wait(timeout=HANG)
    try:
        assert wait_until(lambda: not pid_alive(child)), "mitmdump outlived exifguard"
        assert wait_until(lambda: not port_open(port))
    finally:
        if pid_alive(child):
            os.kill(child, signal.SIGKILL)
    # the flock died with its holder: the next run starts and is the owner of run.json
    again = start(tmp_path, certs=pp.certs)
    assert state(again)["pid"] == again.proc.pid
    assert again.stop() == 0


def _patched_run(script: Path, ready_timeout: float, certs: Path) -> list[str]:
    code = ("import sys; from pathlib import Path; from exifguard.cli import main, proxy, run; "
            f"proxy.script_path = lambda: Path({str(script)!r}); run.READY_TIMEOUT_S = {ready_timeout}; "
            "sys.exit(main(['run'] + sys.argv[1:]))")
    return [sys.executable, "-c", code, "--certs", str(certs), "--port", "0", "--pac-port", "-1"]


@pytest.mark.parametrize("script_text,needle", [
    ("raise ImportError('simulated: exifguard could not load')\n", "before exifguard's addon was ready"),
    ("addons = []\n", "did not report ready"),
], ids=["script-raises", "no-guard"])
def test_run_without_a_ready_addon_exits_non_zero_and_kills_mitmdump(tmp_path, script_text, needle):
    script = tmp_path / "broken_script.py"
    script.write_text(script_text)
    p = subprocess.run(_patched_run(script, 8, tmp_path / "certs"), capture_output=True, text=True,
                       timeout=HANG, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert needle in out
    assert "exifguard proxy:" not in out and "stop: Ctrl-C" not in out
    assert not (tmp_path / "certs" / "run.json").exists()
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "certs")], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "a mitmdump was left running"
