"""Browser journey machinery: site + sink, the exifguard proxy process, and Chromium.

The set-up follows the README quickstart with the same commands a person types
(plus --certs/--audit-log/--port so a test run never touches the real ones):

    exifguard run --port P                                  # the proxy (creates its CA)
    exifguard cert install --nssdb ~/.pki/nssdb             # trust the CA in Chromium's NSS db
    exifguard pac --data-url --proxy 127.0.0.1:P               # only AI hosts go to the proxy
    chromium --proxy-pac-url="data:application/x-ns-proxy-autoconfig;base64,..."

Only two things are test-specific, and both sit *outside* exifguard:
  * mitmdump's map_remote sends the intercepted AI hosts to the local sink, which
    mitmproxy trusts through ssl_verify_upstream_trusted_ca (the sink's throwaway CA
    stands in for the public web PKI);
  * Chromium's --host-resolver-rules point every test hostname at the same sink for
    *direct* connections and make every other name unresolvable.  The chat origins
    exifguard leaves alone (chatgpt.com, gemini.google.com) load that way.  So would an
    AI upload that bypassed the proxy -- it would arrive at the sink with its metadata
    and the oracle would fail the test, so a fail-open set-up cannot pass silently.

Nothing leaves loopback.  One proxy and one browser serve the whole module.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .sink import SITE_HOSTS, Sink, TestPKI

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("EXIFGUARD_CHROMIUM", "/usr/bin/chromium"))
OUTPUT = REPO / "test-output" / "browser"

#: AI hosts the test uses that exifguard intercepts (the PAC sends them to the proxy, whose
#: map_remote sends them on to the sink).  The other SITE_HOSTS (chatgpt.com,
#: gemini.google.com, devapp.exifguard.test) are left alone by exifguard and load directly.
INTERCEPTED = ("claude.ai", "files.oaiusercontent.com", "push.clients6.google.com", "api.openai.com")

CHROMIUM_FLAGS = [
    # keep a headless browser off the network and quiet
    "--disable-background-networking", "--disable-component-update", "--no-first-run",
    "--disable-sync", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
    "--metrics-recording-only", "--disable-features=Translate,OptimizationHints,MediaRouter",
]
TIMEOUT_S = 30


def exifguard_cmd() -> list[str]:
    """The console script next to this interpreter (the venv's), else `python -m`."""
    script = Path(sys.executable).with_name("exifguard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "exifguard.cli"]


def exifguard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*exifguard_cmd(), *args], capture_output=True, text=True,
                          timeout=60, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"`exifguard {' '.join(args)}` failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class ProxyProcess:
    """`exifguard run` as a subprocess, restartable (the fail-closed test stops it)."""

    def __init__(self, workdir: Path, sink_port: int, upstream_ca: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.certs = workdir / "certs"
        self.audit_log = workdir / "audit.jsonl"
        self.log = workdir / "exifguard-run.log"
        self.sink_port = sink_port
        self.upstream_ca = upstream_ca
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        # `exifguard run` already sets connection_strategy=lazy, so mitmproxy never
        # contacts the real hosts before map_remote has pointed the request at the sink.
        mitmdump = ["--set", f"ssl_verify_upstream_trusted_ca={self.upstream_ca}"]
        for host in INTERCEPTED:
            pattern = re.escape(host)
            mitmdump += ["--map-remote", f"|//{pattern}/|//127.0.0.1:{self.sink_port}/"]
        return [*exifguard_cmd(), "run", "--host", "127.0.0.1", "--port", str(self.port),
                "--certs", str(self.certs), "--audit-log", str(self.audit_log), "--", *mitmdump]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir)
        deadline = time.monotonic() + TIMEOUT_S
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("`exifguard run` did not start listening:\n" + self.tail())
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        deadline = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no output)"

    def audit_records(self) -> list[dict]:
        try:
            lines = self.audit_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                pass
        return out


@dataclass
class Outcome:
    state: str
    """"done" or "failed" (what the page reported)."""
    text: str
    screenshot: Path


class Journey:
    """Everything a test needs: the browser context, the sink, the proxy."""

    def __init__(self, context, sink: Sink, proxy: ProxyProcess, pac_url: str) -> None:
        self.context = context
        self.sink = sink
        self.proxy = proxy
        self.pac_url = pac_url

    def open(self, url: str):
        page = self.context.new_page()
        page.goto(url, wait_until="load", timeout=TIMEOUT_S * 1000)
        return page

    def attach(self, page, how: str, name: str, data: bytes, mime: str = "image/jpeg",
               path: Path | None = None) -> None:
        """Attach a photo the way a person does: picker, drag-and-drop, or paste."""
        if how == "picker":
            page.set_input_files("#file", path if path is not None else
                                 {"name": name, "mimeType": mime, "buffer": data})
            return
        b64 = base64.b64encode(data).decode()
        page.evaluate(
            """([how, name, mime, b64]) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], name, {type: mime}));
                const init = {bubbles: true, cancelable: true};
                if (how === "drop") {
                    const zone = document.getElementById("drop");
                    for (const type of ["dragenter", "dragover", "drop"]) {
                        zone.dispatchEvent(new DragEvent(type, {...init, dataTransfer: dt}));
                    }
                } else if (how === "paste") {
                    document.body.focus();
                    document.dispatchEvent(new ClipboardEvent("paste", {...init, clipboardData: dt}));
                } else {
                    throw new Error("unknown attach method " + how);
                }
            }""", [how, name, mime, b64])

    def wait_outcome(self, page, shot: Path) -> Outcome:
        page.wait_for_function(
            "['done', 'failed'].includes(document.getElementById('status').dataset.state)",
            timeout=TIMEOUT_S * 1000)
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))
        status = page.locator("#status")
        return Outcome(status.get_attribute("data-state") or "", status.inner_text(), shot)


def _certutil(*args: str) -> None:
    proc = subprocess.run(["certutil", *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"certutil {' '.join(args)} failed: {proc.stderr.strip()}")


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journey]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing: apt-get install chromium libnss3-tools "
                    "(scripts/test installs them)")
    if shutil.which("certutil") is None:
        pytest.skip("certutil missing: apt-get install libnss3-tools")
    from playwright.sync_api import sync_playwright

    work = tmp_path_factory.mktemp("journey")
    pki = TestPKI.create(work / "pki")
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(Sink(pki))

        # 1. the proxy: exifguard run (creates its name-constrained CA in --certs)
        proxy = ProxyProcess(work, sink.port, pki.ca_cert)
        stack.callback(proxy.stop)
        proxy.start()
        ca_cert = proxy.certs / "mitmproxy-ca-cert.pem"
        assert ca_cert.exists(), f"`exifguard run` wrote no CA certificate at {ca_cert}"

        # 2. the PAC, as the README tells Chromium users: a data: URL from `exifguard pac
        #    --data-url`.  It needs no server, so with the proxy down the AI hosts still point
        #    at it and uploads fail closed (a served PAC that stops answering makes Chromium
        #    go DIRECT, i.e. fail open).
        pac_url = exifguard("pac", "--data-url", "--proxy", f"127.0.0.1:{proxy.port}").stdout.strip()
        assert pac_url.startswith("data:application/x-ns-proxy-autoconfig;base64,"), pac_url[:80]

        # 3. trust: a fresh $HOME whose NSS db gets the exifguard CA from `exifguard cert
        #    install`, plus the test web PKI (standing in for the public roots)
        home = work / "home"
        nssdb = home / ".pki" / "nssdb"
        env = {**os.environ, "HOME": str(home)}
        exifguard("cert", "install", "--certs", str(proxy.certs), "--nssdb", str(nssdb), env=env)
        assert (nssdb / "cert9.db").exists(), "`exifguard cert install` created no NSS database"
        _certutil("-A", "-d", f"sql:{nssdb}", "-t", "C,,", "-n", "browser-test web PKI",
                  "-i", str(pki.ca_cert))

        # 4. the browser: fresh profile, PAC, no network beyond loopback
        rules = [f"MAP {h} 127.0.0.1:{sink.port}" for h in SITE_HOSTS if h != "localhost"]
        rules += ["MAP * ~NOTFOUND", "EXCLUDE 127.0.0.1"]
        pw = stack.enter_context(sync_playwright())
        context = pw.chromium.launch_persistent_context(
            str(work / "profile"), executable_path=str(CHROMIUM), headless=True,
            env=env, viewport={"width": 820, "height": 520},
            args=[*CHROMIUM_FLAGS, f"--proxy-pac-url={pac_url}",
                  "--host-resolver-rules=" + ", ".join(rules)])
        stack.callback(context.close)
        yield Journey(context, sink, proxy, pac_url)
