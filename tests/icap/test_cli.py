"""`exifguard icap` as a process (worker processes, restart, stop, no orphans) and
`exifguard squid-config` (generated from the host table, bypass=off, the 5.7 workaround)."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path


from exifguard.cli import icap as cli_icap
from exifguard.icap.squid import squid_names
from exifguard.proxy.hosts import HostSet

from .icapclient import Client

SRC = str(Path(__file__).resolve().parents[2] / "src")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="exifguard")
    cli_icap.register(p.add_subparsers(dest="command", required=True))
    return p


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exifguard.icap", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": SRC})


# ---- squid-config ------------------------------------------------------------------------
def test_squid_config_from_the_host_table(capsys):
    args = parser().parse_args(["squid-config", "--ca-cert", "/etc/squid/ca.pem", "--add-host", "ai.example.com"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "bypass=off" in out and "bypass=on" not in out
    assert "icap_service exifguard reqmod_precache icap://127.0.0.1:1344/reqmod bypass=off" in out
    assert "client_request_buffer_max_size 64 MB" in out and re.search(r"icap_service_revival_delay \d+", out)
    assert "ssl_bump bump exifguard_ai_sni" in out and out.index("ssl_bump bump") < out.index("ssl_bump splice all")
    assert "adaptation_access exifguard allow exifguard_ai_dst exifguard_upload" in out
    assert "acl exifguard_upload method POST PUT PATCH" in out
    names = " ".join(line for line in out.splitlines() if line.startswith("acl exifguard_ai_sni")).split()
    for e in HostSet.build(extra=["ai.example.com"]).entries:
        assert e.domain in names or f".{e.domain}" in names or any(
            n.startswith(".") and e.domain.endswith(n) for n in names), e.domain
    assert "chatgpt.com" not in names and "example.org" not in names


def test_squid_names_drop_overlaps():
    names = squid_names(HostSet.build())  # shared storage is opt-in: named exactly by default
    assert ".s3.amazonaws.com" not in names and "ppl-ai-file-upload.s3.amazonaws.com" in names
    names = squid_names(HostSet.build(extra=["service:aws-s3", "service:azure-blob"]))
    assert ".s3.amazonaws.com" in names and "ppl-ai-file-upload.s3.amazonaws.com" not in names
    assert ".blob.core.windows.net" in names and not any(n.endswith(".blob.core.windows.net") and
                                                          n != ".blob.core.windows.net" for n in names)
    assert "claude.ai" in names and ".claude.ai" not in names


def test_squid_config_failover_set_and_bad_url(capsys):
    args = parser().parse_args(["squid-config", "--icap", "icap://10.0.0.1:1344/reqmod",
                                "--icap", "icap://10.0.0.2:1344/reqmod"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "adaptation_service_set exifguard_set exifguard1 exifguard2" in out
    assert len(re.findall(r"^icap_service .* bypass=off$", out, re.M)) == 2
    assert "adaptation_access exifguard_set allow" in out
    args = parser().parse_args(["squid-config", "--icap", "http://x/reqmod"])
    assert args.func(args) == 2
    args = parser().parse_args(["squid-config", "--remove-host", "nothere.example"])
    assert args.func(args) == 2


def test_icap_refuses_bad_options():
    r = run_cli("icap", "--inspect-limit", "lots")
    assert r.returncode == 2 and "not a size" in r.stderr
    r = run_cli("icap", "--port", "70000")
    assert r.returncode == 2


# ---- the service as a process --------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(*args: str) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([sys.executable, "-m", "exifguard.icap", "icap", "--port", "0", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "PYTHONPATH": SRC})
    line = p.stdout.readline()
    m = re.search(r"icap://127\.0\.0\.1:(\d+)/reqmod", line)
    assert m, line
    return p, int(m.group(1))


def _wait(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_worker_processes_restart_and_stop():
    p, port = _start("--workers", "2")
    try:
        assert _wait(lambda: len(_children(p.pid)) == 2)
        c = Client(port)
        c.send(b"OPTIONS icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: x\r\n\r\n")
        r = c.read()
        assert r.status == 200 and r.headers["max-connections"] == "128"
        first = _children(p.pid)
        os.kill(first[0], signal.SIGKILL)  # a worker crashes: another takes its place
        assert _wait(lambda: len(_children(p.pid)) == 2 and first[0] not in _children(p.pid))
        c2 = Client(port)
        c2.send(b"OPTIONS icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: x\r\n\r\n")
        assert c2.read().status == 200
        kids = _children(p.pid)
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        assert _wait(lambda: not any(_alive(k) for k in kids))
        assert "starting another" in p.stdout.read()
    finally:
        if p.poll() is None:
            p.kill()


def test_workers_die_with_a_killed_parent():
    p, port = _start("--workers", "2")
    assert _wait(lambda: len(_children(p.pid)) == 2)
    kids = _children(p.pid)
    p.kill()
    p.wait(5)
    assert _wait(lambda: not any(_alive(k) for k in kids)), "orphaned ICAP workers"


def test_generated_config_parses_cleanly_with_squid(tmp_path):
    """`squid -k parse` accepts the generated file as an administrator would install it."""
    import shutil

    from exifguard.icap.squid import squid_config
    from exifguard.proxy.ca import create_ca
    squid = shutil.which("squid") or ("/usr/sbin/squid" if os.path.exists("/usr/sbin/squid") else None)
    if squid is None:
        import pytest
        pytest.skip("squid is not installed (Debian: apt-get install squid-openssl)")
    create_ca(tmp_path / "ca", HostSet.build().domains())
    conf = tmp_path / "squid.conf"
    conf.write_text(squid_config(HostSet.build(), ca_cert=tmp_path / "ca" / "mitmproxy-ca.pem",
                                 ssl_db=str(tmp_path / "ssl_db")))
    r = subprocess.run([squid, "-k", "parse", "-f", str(conf)], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-2000:]
    assert not re.search(r"WARNING|ERROR|FATAL|Bungled|unrecognized", out, re.I), out[-2000:]


def test_squid_config_and_icap_take_the_opt_in_services(capsys):
    """Shared storage is off by default in Squid's bump list too; --add-service turns it on,
    with the same ids as `exifguard run`; an unknown id is an error naming the valid ones."""
    args = parser().parse_args(["squid-config"])
    assert args.func(args) == 0
    default = capsys.readouterr().out
    assert " .blob.core.windows.net" not in default and ".sharepoint.com" not in default
    args = parser().parse_args(["squid-config", "--add-service", "azure-blob", "--add-service", "m365-sharepoint"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert " .blob.core.windows.net" in out and " .sharepoint.com" in out
    args = parser().parse_args(["squid-config", "--add-service", "nope"])
    assert args.func(args) == 2
    assert "unknown service 'nope'" in capsys.readouterr().err
    args = parser().parse_args(["icap", "--add-service", "huggingchat"])
    from exifguard.cli.icap import _hosts
    assert _hosts(args).classify("huggingface.co") is not None
