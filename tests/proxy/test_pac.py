import json
import shutil
import subprocess
import urllib.request

import pytest

from exifguard.proxy import pac
from exifguard.proxy.hosts import HostSet

# Standard PAC helpers, in case a future PAC uses them (ours does not need them).
SHIM = """
function dnsDomainIs(h, d) { return h.length >= d.length && h.substring(h.length - d.length) === d; }
function shExpMatch(s, p) { return new RegExp("^" + p.replace(/[.+^${}()|[\\]\\\\]/g, "\\\\$&")
  .replace(/\\*/g, ".*").replace(/\\?/g, ".") + "$").test(s); }
function isPlainHostName(h) { return h.indexOf(".") < 0; }
"""

AI = ["claude.ai", "files.oaiusercontent.com", "sdmntpreastus.oaiusercontent.com", "api.openai.com",
      "CLAUDE.AI", "claude.ai.", "mistralaichatupprodswe.blob.core.windows.net", "rupload.meta.ai",
      "push.clients6.google.com"]
OTHER = ["acct.blob.core.windows.net", "tenant.sharepoint.com", "huggingface.co", "api.cloudinary.com",
         "bucket.s3.amazonaws.com", "chatgpt.com", "example.com", "evilclaude.ai", "claude.ai.evil.com", "oaiusercontent.com.evil",
         "google.com", "www.bank.example", "localhost", "xoaiusercontent.com"]


def evaluate(text, hosts):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node missing")
    js = SHIM + text + "\nconsole.log(JSON.stringify(" + json.dumps(hosts) + \
        ".map(function (h) { return FindProxyForURL('https://' + h + '/x', h); })));"
    p = subprocess.run([node, "-e", js], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return dict(zip(hosts, json.loads(p.stdout)))


def test_pac_routes_only_ai_hosts_with_no_direct_fallback():
    text = pac.pac_text(HostSet.build(), "127.0.0.1:8089")
    res = evaluate(text, AI + OTHER)
    for h in AI:
        assert res[h] == "PROXY 127.0.0.1:8089", h  # exactly this: no "; DIRECT"
    for h in OTHER:
        assert res[h] == "DIRECT", h


def test_every_default_host_goes_to_the_proxy():
    hs = HostSet.build()
    hosts = [d for d, _ in hs.pac_entries()] + [f"x.{d}" for d, sub in hs.pac_entries() if sub]
    res = evaluate(pac.pac_text(hs), hosts)
    assert set(res.values()) == {"PROXY 127.0.0.1:8080"}
    assert "DIRECT" not in pac.pac_text(hs).split("return \"DIRECT\"")[0].split("function FindProxyForURL")[1]


def test_bad_proxy_rejected():
    for bad in ["127.0.0.1", "a; DIRECT", 'x"y:1']:
        with pytest.raises(ValueError):
            pac.pac_text(HostSet.build(), bad)


def test_serve_on_loopback():
    text = pac.pac_text(HostSet.build())
    srv, url = pac.serve(text)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/proxy.pac")
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.headers["content-type"] == pac.PAC_TYPE
            assert r.read().decode() == text
    finally:
        srv.shutdown()
        srv.server_close()
    with pytest.raises(ValueError):
        pac.serve(text, host="0.0.0.0")


def test_data_url_carries_the_same_pac() -> None:
    import base64

    from exifguard.proxy.pac import data_url, pac_text

    text = pac_text([("claude.ai", False), ("oaiusercontent.com", True)], "127.0.0.1:9999")
    url = data_url(text)
    prefix = "data:application/x-ns-proxy-autoconfig;base64,"
    assert url.startswith(prefix)
    assert base64.b64decode(url[len(prefix):]).decode() == text


def test_head_is_answered_like_get_without_a_body():
    """Before: http.server answered HEAD /proxy.pac with 501 Unsupported method."""
    import http.client
    text = pac.pac_text(HostSet.build())
    srv, url = pac.serve(text)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
        conn.request("HEAD", pac.PAC_PATH)
        r = conn.getresponse()
        assert r.status == 200
        assert r.getheader("content-type") == pac.PAC_TYPE
        assert int(r.getheader("content-length")) == len(text.encode())
        assert r.read() == b""
        conn.request("HEAD", "/elsewhere")
        r = conn.getresponse()
        assert r.status == 404
        r.read()
        conn.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_ipv6_proxy_in_the_pac_is_bracketed():
    for given in ("::1:8089", "[::1]:8089"):
        res = evaluate(pac.pac_text(HostSet.build(), given), ["claude.ai", "example.com"])
        assert res == {"claude.ai": "PROXY [::1]:8089", "example.com": "DIRECT"}
