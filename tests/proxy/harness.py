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


def start_proxy(tmp: Path, sink_port: int, sink_cert: Path, *run_args: str, certs: Path | None = None,
                extra: list[str] | None = None) -> ProxyProc:
    certs = certs or tmp / "certs"
    audit = tmp / "audit.jsonl"
    hosts = "|".join(re.escape(h) for h in MAPPED)
    argv = [sys.executable, "-m", "exifguard.cli", "run", "--certs", str(certs), "--port", "0",
            "--audit-log", str(audit), *run_args, "--",
            "--set", f"ssl_verify_upstream_trusted_ca={sink_cert}",
            "--map-remote", f"#//({hosts})/#//localhost:{sink_port}/", *(extra or [])]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for k in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    pp = ProxyProc(proc, certs, audit)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            pp.lines.append(line.rstrip("\n"))
    threading.Thread(target=pump, daemon=True).start()
    end = time.monotonic() + 60
    while time.monotonic() < end:
        m = LISTEN.search(pp.output())
        if m:
            pp.port = int(m.group(1))
            return pp
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    pp.stop()
    raise RuntimeError("exifguard run did not start:\n" + pp.output())
