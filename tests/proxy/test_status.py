"""The status page at the PAC server's root: uptime, counts, last uploads, probe table."""

from __future__ import annotations

import http.client
import json
import re
import time
from pathlib import Path

import pytest

from exifguard.proxy import pac, probe, status
from exifguard.proxy.audit import AuditLog, ImageRecord
from exifguard.proxy.hosts import HostSet
from exifguard.engine.report import Category, Removal, ScrubResult

STARTED = 1_800_000_000.0  # 2027-01-15


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


def record(t: float, host="claude.ai", action="stripped", **extra) -> dict:
    d = {"time": stamp(t), "host": host, "path": "/api/x", "method": "POST", "request_id": f"r{t}",
         "carrier": "multipart part 'file'", "format": "JPEG", "action": action,
         "removed": [{"carrier": "APP1 Exif", "bytes": 10, "tags": ["GPSLatitude", "Make"],
                      "categories": ["device", "location"], "values": {"GPSLatitude": "48.8566 N"}}],
         "categories": ["device", "location"], "tags": ["GPSLatitude", "Make"], "filename": "IMG_home.jpg"}
    d.update(extra)
    return d


def write_log(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def served(tmp_path):
    log = tmp_path / "audit.jsonl"
    src = status.StatusSource(started=time.time() - 3725, proxy="127.0.0.1:9", audit_log=log,
                              hosts=HostSet.build(), mode="strip",
                              cert_install="./scripts/exifguard cert install --certs '/a b'")
    srv, url = pac.serve(pac.pac_text(HostSet.build()), 0, status=src)
    port = srv.server_address[1]

    def get(path="/", host=f"127.0.0.1:{port}", method="GET"):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request(method, path, headers={"Host": host})
        r = c.getresponse()
        body = r.read()
        c.close()
        return r, body
    try:
        yield src, log, get, port, url
    finally:
        srv.shutdown()
        srv.server_close()


def test_root_is_the_status_page_and_the_pac_stays_at_its_path(served):
    src, log, get, port, url = served
    now = time.time()
    write_log(log, [record(now - 10), record(now - 5, host="api.openai.com", action="blocked"),
                    record(now - 4, selftest=True), record(src.started - 100, host="claude.ai")])
    r, body = get("/")
    page = body.decode()
    assert r.status == 200 and r.getheader("content-type").startswith("text/html")
    assert "1 h 02 min" in page  # uptime
    assert 'href="https://claude.ai/.well-known/exifguard"' in page
    counts = re.search(r'<table id="counts">.*?</table>', page, re.S).group(0)
    assert "<td>Claude</td><td>1</td><td>0</td>" in counts  # the one before the start is not counted
    assert "<td>OpenAI API</td><td>0</td><td>1</td>" in counts
    assert "1 test upload(s) not counted" in page
    assert "./scripts/exifguard cert install --certs &#x27;/a b&#x27;" in page
    last = re.search(r'<table id="last">.*?</table>', page, re.S).group(0)
    assert "GPSLatitude" in last and "location" in last and "(test)" in last
    # names, never values or file names, even when the log holds them (log_values)
    assert "48.8566" not in page and "IMG_home" not in page
    r, body = get(pac.PAC_PATH)
    assert r.status == 200 and r.getheader("content-type") == pac.PAC_TYPE and b"FindProxyForURL" in body
    assert pac.status_url(url) == f"http://127.0.0.1:{port}/"


def test_status_json_and_head(served):
    src, log, get, port, _ = served
    write_log(log, [record(time.time())])
    r, body = get(status.STATUS_JSON)
    d = json.loads(body)
    assert d["counts"] == {"Claude": {"stripped": 1, "blocked": 0, "passed": 0, "audit": 0}}
    assert d["proxy"] == "127.0.0.1:9" and d["mode"] == "strip" and d["uptime_s"] >= 3725
    assert "48.8566" not in body.decode()
    r, body = get("/", method="HEAD")
    assert r.status == 200 and body == b"" and int(r.getheader("content-length")) > 0


def test_strict_policy_and_no_external_resources(served):
    _, _, get, _, _ = served
    r, body = get("/")
    policy = r.getheader("content-security-policy")
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    page = body.decode()
    assert "default-src 'none'" in policy and "img-src 'none'" in policy
    assert page.count(f'nonce="{nonce}"') == 2
    assert not re.search(r"""src=["']?(https?:)?//""", page)
    for t in probe.probe_targets(HostSet.build()):
        assert f'data-host="{t.host}"' in page and f"https://{t.host}" in policy


def test_a_foreign_host_header_is_refused(served):
    """A DNS-rebinding page (evil.example resolving to 127.0.0.1) cannot read the history."""
    _, log, get, port, _ = served
    write_log(log, [record(time.time())])
    for host in (f"evil.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}"):
        for path in ("/", status.STATUS_JSON, status.SEEN + "?host=claude.ai"):
            r, body = get(path, host=host)
            assert r.status == 421 and b"GPSLatitude" not in body, (host, path)
    r, _ = get(pac.PAC_PATH, host="anything.example")
    assert r.status == 200  # the PAC itself is public information


def test_everything_from_the_log_is_escaped(served):
    _, log, get, _, _ = served
    evil = "<script>alert(1)</script>"
    write_log(log, [record(time.time(), host=evil, action=evil,
                           removed=[{"carrier": evil, "tags": [evil], "categories": [evil]}])])
    _, body = get("/")
    assert evil not in body.decode() and "&lt;script&gt;" in body.decode()


def test_seen_asks_only_about_intercepted_hosts_and_says_when_not_attached(served, tmp_path):
    src, _, get, port, _ = served
    src.ca_cert = tmp_path / "no-ca.pem"
    r, body = get(status.SEEN + "?host=www.bank.example")
    assert r.status == 400
    r, body = get(status.SEEN + "?host=claude.ai&since=1")
    d = json.loads(body)
    assert d["tls_failed"] is False and "could not ask the proxy" in d["error"]  # nothing listens on :9
    lone = status.StatusSource()
    assert "not attached" in status.ask_proxy_seen(lone, "claude.ai", 0)["error"]


def test_tail_reads_a_bounded_end_of_a_large_log(tmp_path):
    log = tmp_path / "audit.jsonl"
    old = [record(STARTED - 10_000 + i) for i in range(3000)]
    new = [record(STARTED + 10 + i, host="api.openai.com") for i in range(5)]
    write_log(log, old + new)
    assert log.stat().st_size > 4 * 64 * 1024
    records, truncated = status.read_tail(log, max_bytes=64 * 1024)
    assert truncated and 5 < len(records) < 3005
    assert all(isinstance(r, dict) for r in records)  # the cut first line was dropped, not half-parsed
    s = status.summarise(records, STARTED, HostSet.build(), truncated)
    assert s["counts"] == {"OpenAI API": {"stripped": 5, "blocked": 0, "passed": 0, "audit": 0}}
    assert not s["counts_partial"]  # older records than the start were reached
    assert len(s["last"]) == status.LAST_UPLOADS and s["last"][0]["host"] == "api.openai.com"
    s = status.summarise(records[-3:], STARTED - 2000, HostSet.build(), True)
    assert s["counts_partial"]


def test_a_torn_last_line_is_skipped(tmp_path):
    log = tmp_path / "audit.jsonl"
    log.write_text(json.dumps(record(STARTED)) + "\n" + '{"time": "2027-01-15T0')
    records, truncated = status.read_tail(log)
    assert len(records) == 1 and not truncated


def test_a_real_audit_log_record_shows_names_not_values(tmp_path):
    log = tmp_path / "audit.jsonl"
    al = AuditLog(log, with_values=True)
    res = ScrubResult(b"x" * 10, "JPEG", (Removal("APP1 Exif", 2, 8, ("GPSLatitude",), frozenset({Category.LOCATION}),
                                                  values=(("GPSLatitude", "51.5 N"),)),), (), 10)
    al.write(ImageRecord("claude.ai", "/up", "POST", "r1", "raw body", "JPEG", 10, "stripped", res,
                         filename="IMG_at_home.jpg"))
    al.close()
    src = status.StatusSource(started=time.time() - 60, audit_log=log, hosts=HostSet.build())
    page = status.render(status.snapshot(src), [], "n")
    assert "GPSLatitude" in page and "location" in page
    assert "51.5" not in page and "IMG_at_home" not in page


def test_uptime_text():
    assert status.uptime_text(59) == "0 min 59 s"
    assert status.uptime_text(3725) == "1 h 02 min"
    assert status.uptime_text(90000) == "1 d 1 h 00 min"


def test_without_a_proxy_the_page_says_so():
    page = status.render(status.snapshot(status.StatusSource()), [], "n")
    assert "not attached to a running proxy" in page and "No audit log" in page
