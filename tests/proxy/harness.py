"""Start `exifguard run` (which starts mitmdump) for end-to-end tests, and stop it with Ctrl-C.

Real AI hostnames in client requests are sent to the local HTTPS sink with mitmproxy's
`map_remote` (run always uses connection_strategy=lazy, so nothing contacts the real
services); the sink's certificate is trusted upstream with ssl_verify_upstream_trusted_ca.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MAPPED = ["claude.ai", "files.oaiusercontent.com", "api.openai.com", "api.anthropic.com"]
#: the banner's first line, printed only once the guard reported the addon loaded and configured
#: (mitmdump's own "HTTP(S) proxy listening at" comes earlier, before exifguard is checked)
LISTEN = re.compile(r"exifguard proxy: http://[^ ]*?:(\d+)  \(ready")


@dataclass
class ProxyProc:
    proc: subprocess.Popen
    certs: Path
    audit: Path
    port: int = 0
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.certs / "mitmproxy-ca-cert.pem"

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.output():
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # what Ctrl-C does
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode


def clean_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for k in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)
    return env


def spawn_run(args: list[str], certs: Path, audit: Path | None = None, *, cwd: Path | None = None,
              python_code: str | None = None) -> ProxyProc:
    """`exifguard run ARGS` (or `python -c CODE` that runs it) with its output collected."""
    argv = [sys.executable, "-c", python_code] if python_code else [sys.executable, "-m", "exifguard.cli", "run"]
    proc = subprocess.Popen([*argv, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=clean_env(), cwd=cwd)
    pp = ProxyProc(proc, certs, audit or certs / "audit.jsonl")

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            pp.lines.append(line.rstrip("\n"))
    threading.Thread(target=pump, daemon=True).start()
    return pp


def wait_banner(pp: ProxyProc, timeout: float = 90) -> bool:
    """True once the ready banner is out (pp.port set); False if `run` ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = LISTEN.search(pp.output())
        if m and "stop: Ctrl-C" in pp.output():
            pp.port = int(m.group(1))
            return True
        if pp.proc.poll() is not None:
            time.sleep(0.2)  # let the pump read the last lines
            return False
        time.sleep(0.05)
    return False


def start_proxy(tmp: Path, sink_port: int, sink_cert: Path, *run_args: str, certs: Path | None = None,
                extra: list[str] | None = None, cwd: Path | None = None, audit_flag: bool = True,
                script: Path | None = None) -> ProxyProc:
    """`exifguard run` in front of the sink; `audit_flag=False` leaves out --audit-log (for tests
    that set exifguard_audit_log after --); `script` replaces the `mitmdump -s` script."""
    certs = certs or tmp / "certs"
    audit = tmp / "audit.jsonl"
    hosts = "|".join(re.escape(h) for h in MAPPED)
    args = ["--certs", str(certs), "--port", "0", *(["--audit-log", str(audit)] if audit_flag else []),
            *run_args, "--",
            "--set", f"ssl_verify_upstream_trusted_ca={sink_cert}",
            "--map-remote", f"#//({hosts})/#//localhost:{sink_port}/", *(extra or [])]
    code = None
    if script is not None:  # a test's own `mitmdump -s` script instead of exifguard's
        code = ("import sys; from pathlib import Path; from exifguard.cli import main, proxy; "
                f"proxy.script_path = lambda: Path({str(script)!r}); sys.exit(main(['run'] + sys.argv[1:]))")
    pp = spawn_run(args, certs, audit, cwd=cwd, python_code=code)
    if wait_banner(pp):
        return pp
    pp.stop()
    raise RuntimeError("exifguard run did not start:\n" + pp.output())
