"""The check page and the status page in real Chromium (issue 12, items 4 and 9).

One `exifguard run` on loopback; the status page is served by `pac.serve` in this process
with the run's facts (as `exifguard run` serves it).  Three fresh browser profiles, one
after another (Chromium is heavy on a small machine):

  A. trusts exifguard's CA (installed by `exifguard cert install`), full PAC: the check page
     on claude.ai says every service is protected and the live test shows what exifguard
     removed from the sample photo;
  B. trusts the CA, but its PAC leaves one host out: that row says "not routed";
  C. does not trust the CA: the check page cannot load, and the status page's table says
     "certificate not trusted" for every routed host and "not routed" for the one left out.

Nothing leaves loopback: exifguard answers /.well-known/exifguard* itself (never
forwarded, connection_strategy=lazy), and Chromium's --host-resolver-rules make every name
unresolvable for direct connections, so a host that is not routed fails to connect.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exifguard.proxy import pac, probe, status
from exifguard.proxy.hosts import HostSet

from .harness import CHROMIUM, CHROMIUM_FLAGS, OUTPUT, REPO, TIMEOUT_S, exifguard, exifguard_cmd, free_port, \
    port_open

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: apt-get install chromium "
                       "libnss3-tools (scripts/test installs them when run as root)"),
    pytest.mark.skipif(shutil.which("certutil") is None, reason="certutil missing: apt-get install libnss3-tools"),
]

LEFT_OUT = "api.openai.com"  # the host the B and C PACs do not send to exifguard
SCREENSHOT = REPO / "docs" / "screenshots" / "check-page.png"


@dataclass
class Setup:
    work: Path
    port: int
    certs: Path
    audit_log: Path
    status_url: str
    pw: object

    def pac(self, *remove: str) -> str:
        args = ["pac", "--data-url", "--proxy", f"127.0.0.1:{self.port}"]
        for h in remove:
            args += ["--remove-host", h]
        return exifguard(*args).stdout.strip()

    @contextlib.contextmanager
    def browser(self, name: str, *, trust: bool, pac_url: str) -> Iterator[object]:
        home = self.work / f"home-{name}"
        nssdb = home / ".pki" / "nssdb"
        env = {**os.environ, "HOME": str(home)}
        if trust:
            exifguard("cert", "install", "--certs", str(self.certs), "--nssdb", str(nssdb), env=env)
        else:
            nssdb.mkdir(parents=True)
            subprocess.run(["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True,
                           capture_output=True, timeout=60)
        context = self.pw.chromium.launch_persistent_context(
            str(self.work / f"profile-{name}"), executable_path=str(CHROMIUM), headless=True, env=env,
            viewport={"width": 1000, "height": 900},
            args=[*CHROMIUM_FLAGS, f"--proxy-pac-url={pac_url}",
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"])
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[Setup]:
    from playwright.sync_api import sync_playwright
    work = tmp_path_factory.mktemp("checkpage-browser")
    port = free_port()
    certs, audit_log = work / "certs", work / "audit.jsonl"
    log = work / "exifguard-run.log"
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("ab"))
        proc = subprocess.Popen([*exifguard_cmd(), "run", "--port", str(port), "--pac-port", "-1",
                                 "--certs", str(certs), "--audit-log", str(audit_log)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work)

        def stop() -> None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        stack.callback(stop)
        deadline = time.monotonic() + 90
        while not (certs / "run.json").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("`exifguard run` did not start:\n" + log.read_text(errors="replace"))
            time.sleep(0.1)
        assert port_open(port)
        hosts = HostSet.build()
        src = status.StatusSource(started=time.time(), proxy=f"127.0.0.1:{port}",
                                  ca_cert=certs / "mitmproxy-ca-cert.pem", audit_log=audit_log,
                                  hosts=hosts, mode="strip")
        srv, pac_url = pac.serve(pac.pac_text(hosts, f"127.0.0.1:{port}"), 0, status=src)
        stack.callback(srv.server_close)
        stack.callback(srv.shutdown)
        pw = stack.enter_context(sync_playwright())
        yield Setup(work, port, certs, audit_log, pac.status_url(pac_url), pw)


def table_states(page) -> dict[str, str]:
    page.wait_for_selector('#probes[data-done="1"]', timeout=TIMEOUT_S * 2000)
    return page.eval_on_selector_all("#probes tbody tr", "rows => Object.fromEntries(rows.map("
                                                         "r => [r.dataset.host, r.dataset.state]))")


def test_a_trusting_routed_browser_sees_every_service_protected_and_the_live_test(setup):
    with setup.browser("trusted", trust=True, pac_url=setup.pac()) as context:
        page = context.new_page()
        page.goto(f"https://claude.ai{probe.WELL_KNOWN}", wait_until="load", timeout=TIMEOUT_S * 1000)
        assert "reaches claude.ai through exifguard and trusts its certificate" in page.inner_text("#verdict")
        states = table_states(page)
        expected = {t.host for t in probe.probe_targets(HostSet.build())}
        assert set(states) == expected
        assert set(states.values()) == {"protected"}, states
        assert "services protected in this browser" in page.inner_text("#probe-summary")
        # the live test: the sample photo went through exifguard's normal inspection
        page.wait_for_function("['cleaned','blocked','audit','failed','error','passed','refused',"
                               "'not-inspected'].includes(document.getElementById('live').dataset.state)",
                               timeout=TIMEOUT_S * 1000)
        assert page.get_attribute("#live", "data-state") == "cleaned"
        text = page.inner_text("#live-result")
        assert "exifguard removed: location (GPS)" in text
        assert "GPSLatitude" in text and "BodySerialNumber" in text
        assert "GPS gone, marker gone" in text and "(same length)" in text
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(OUTPUT / "check-page.png"), full_page=True)
        if os.environ.get("EXIFGUARD_UPDATE_SCREENSHOTS"):
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        # exifguard's audit log has the test upload, marked so `exifguard report` leaves it out
        records = [r for r in status.read_tail(setup.audit_log)[0] if r.get("path") == probe.TEST_PATH]
        assert records and records[-1]["action"] == "stripped" and records[-1]["selftest"] is True
        # and the status page (plain http, same browser) shows it as a test upload
        page.goto(setup.status_url, wait_until="load", timeout=TIMEOUT_S * 1000)
        assert "(test)" in page.inner_text("#last")
        assert set(table_states(page).values()) == {"protected"}


def test_a_host_left_out_of_the_pac_is_not_routed(setup):
    with setup.browser("partial-pac", trust=True, pac_url=setup.pac(LEFT_OUT)) as context:
        page = context.new_page()
        page.goto(f"https://claude.ai{probe.WELL_KNOWN}", wait_until="load", timeout=TIMEOUT_S * 1000)
        states = table_states(page)
        assert states.pop(LEFT_OUT) == "not-routed"
        assert set(states.values()) == {"protected"}, states
        row = page.locator(f'#probes tr[data-host="{LEFT_OUT}"]').inner_text()
        assert "not routed" in row


def test_a_browser_without_the_ca_sees_certificate_not_trusted_on_the_status_page(setup):
    with setup.browser("untrusted", trust=False, pac_url=setup.pac(LEFT_OUT)) as context:
        page = context.new_page()
        with pytest.raises(Exception):  # the check page itself cannot load: the certificate is refused
            page.goto(f"https://claude.ai{probe.WELL_KNOWN}", wait_until="load", timeout=TIMEOUT_S * 1000)
        page = context.new_page()
        page.goto(setup.status_url, wait_until="load", timeout=TIMEOUT_S * 1000)
        assert "is running" in page.inner_text("h1")
        states = table_states(page)
        assert states.pop(LEFT_OUT) == "not-routed"
        assert set(states.values()) == {"untrusted"}, states
        row = page.locator('#probes tr[data-host="claude.ai"]').inner_text()
        assert "certificate not trusted" in row
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(OUTPUT / "status-page-untrusted.png"), full_page=True)
