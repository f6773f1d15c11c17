"""A real browser that trusts a CA made for an older host list fails closed for a new host.

Debian's Chromium (Playwright), a fresh NSS database holding an exifguard CA whose name
constraints predate chat.z.ai, the PAC of the current table (chat.z.ai goes to the
proxy) and `exifguard run` with the current table (chat.z.ai decrypted and mapped to the
sink).  A photo upload to chat.z.ai must not reach the sink at all (certificate error),
while claude.ai, which the old CA covers, still works.  After the printed `cert reissue`
(run as printed, into the same NSS database) the same upload arrives, cleaned.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from support import corpus

from exifguard.proxy import ca, pac
from exifguard.proxy.hosts import HostSet

from .harness import clean_env, start_proxy
from .sink import Sink

CHROMIUM = Path(os.environ.get("EXIFGUARD_CHROMIUM", "/usr/bin/chromium"))
pytestmark = [pytest.mark.browser, pytest.mark.e2e,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing"),
              pytest.mark.skipif(shutil.which("certutil") is None, reason="certutil missing")]

FLAGS = ["--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
         "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-default-apps", "--disable-extensions",
         "--no-default-browser-check", "--metrics-recording-only"]

UPLOAD_JS = """async ([url, b64]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const fd = new FormData();
  fd.append("file", new Blob([bytes], {type: "image/jpeg"}), "IMG_20240102_030405.jpg");
  try { const r = await fetch(url, {method: "POST", body: fd, mode: "no-cors"}); return "sent " + r.type; }
  catch (e) { return "error " + e; }
}"""


def photo() -> bytes:
    fs = [f for f in corpus.files("JPEG") if f.entry.get("privacy", {}).get("gps")]
    if not fs:
        pytest.skip(corpus.missing("a JPEG with GPS"))
    return fs[0].data


def test_chromium_with_old_ca_cannot_upload_to_a_new_host_until_reissued(tmp_path):
    import base64

    from playwright.sync_api import sync_playwright
    sink = Sink(tmp_path)
    certs = tmp_path / "certs"
    ca.create_ca(certs, HostSet.build(remove=["chat.z.ai"]).domains(), hostname="old")
    home = tmp_path / "home"
    nssdb = home / ".pki" / "nssdb"
    env = dict(clean_env(), HOME=str(home))
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True, env=env)
    subprocess.run(["certutil", "-A", "-d", f"sql:{nssdb}", "-t", "C,,", "-n", "exifguard CA", "-i",
                    str(certs / ca.CERT_FILE)], check=True, env=env)
    mapped = ["chat.z.ai", "claude.ai"]
    alt = "|".join(re.escape(h) for h in mapped)
    b64 = base64.b64encode(photo()).decode()

    def journey(expect_zai: bool) -> str:
        p = start_proxy(tmp_path, sink.port, sink.cert, certs=certs,
                        extra=["--map-remote", f"#//({alt})/#//localhost:{sink.port}/"])
        try:
            pac_url = pac.data_url(pac.pac_text(HostSet.build(), f"127.0.0.1:{p.port}"))
            with sync_playwright() as pw:
                ctx = pw.chromium.launch_persistent_context(
                    str(tmp_path / f"profile-{expect_zai}"), executable_path=str(CHROMIUM), headless=True, env=env,
                    args=[*FLAGS, f"--proxy-pac-url={pac_url}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"])
                try:
                    page = ctx.new_page()
                    page.set_content("<p>upload test</p>")
                    sink.clear()
                    zai = page.evaluate(UPLOAD_JS, ["https://chat.z.ai/api/v1/files/", b64])
                    zai_received = list(sink.received)
                    sink.clear()
                    claude = page.evaluate(UPLOAD_JS, ["https://claude.ai/api/organizations/o/upload", b64])
                    assert claude == "sent opaque", (claude, p.output()[-3000:])
                    assert len(sink.received) == 1
                finally:
                    ctx.close()
            if expect_zai:
                assert zai == "sent opaque", (zai, p.output()[-1500:])
                assert len(zai_received) == 1 and photo() not in zai_received[0].body
            else:
                assert zai.startswith("error"), zai
                assert zai_received == [], "nothing may reach a host the CA cannot serve"
                assert p.wait_for("does not trust the proxy's certificate for chat.z.ai"), p.output()[-2000:]
            return p.output()
        finally:
            assert p.stop() == 0, p.output()

    out = journey(expect_zai=False)
    cmd = next(line.strip() for line in out.splitlines() if " cert reissue" in line)
    done = subprocess.run(cmd, shell=True, cwd=os.getcwd(), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = journey(expect_zai=True)
    assert "does not cover" not in out
    sink.close()
