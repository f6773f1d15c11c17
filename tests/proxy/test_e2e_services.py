"""End to end for the services added from upload-shapes.md §9: each request shape goes
through `exifguard run` (a real mitmdump) to the local HTTPS sink and arrives with a clean
image, the same length, and recomputed checksums (Content-CRC32, Content-MD5).

Also the growing table: a CA made for an older host list leaves a new host uncovered;
`exifguard run` names it and prints one command; a TLS client trusting the old CA cannot
reach that host through the proxy (nothing is sent, not even uncleaned); the printed
command, run as printed, re-issues the CA (now covering the host) and installs it.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import re
import shutil
import ssl
import subprocess
import zlib
from urllib.parse import urlsplit

import pytest

from carriers import builders
from support import canary, corpus, generated, oracle

from exifguard.proxy import ca
from exifguard.proxy.hosts import HostSet

from .harness import clean_env, start_proxy
from .sink import Sink
from .test_pac import evaluate

#: the shapes of opt-in services (shared storage, whole sites) are tested with them enabled
OPT_IN_ARGS = [a for sid in ("grok-x", "doubao", "genspark-files", "huggingchat", "m365-sharepoint",
                             "perplexity-cloudinary", "azure-blob", "aws-s3", "kimi-tos")
               for a in ("--add-service", sid)]

pytestmark = [pytest.mark.e2e, oracle.requires_exiftool]

E2E_SHAPES = [builders.qwen_oss_put, builders.sora_multipart, builders.notebooklm_resumable,
              builders.zai_multipart, builders.doubao_tos_hex, builders.doubao_tos_decimal,
              builders.yuanbao_cos_put, builders.kimi_tos_put, builders.genspark_blob_put,
              builders.genspark_convert_heic, builders.meta_vibes, builders.grok_x_attachment]


def photo() -> bytes:
    """A real camera JPEG with GPS from the corpus, else the generated one (a fresh clone
    still sends every service shape through the proxy)."""
    fs = [f for f in corpus.files("JPEG") if f.entry.get("privacy", {}).get("gps")]
    return fs[0].data if fs else generated.image("JPEG")


def _map(hosts: list[str], port: int) -> list[str]:
    alt = "|".join(re.escape(h) for h in sorted(set(hosts)))
    return ["--map-remote", f"#//({alt})/#//localhost:{port}/"]


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    s = Sink(tmp_path_factory.mktemp("sink"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, sink):
    hosts = [urlsplit(b(b"x").url).hostname for b in E2E_SHAPES]
    p = start_proxy(tmp_path_factory.mktemp("services"), sink.port, sink.cert, *OPT_IN_ARGS,
                    extra=_map(hosts, sink.port))
    yield p
    assert p.stop() == 0, p.output()


def _send(proxy, method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> int:
    u = urlsplit(url)
    ctx = ssl.create_default_context(cafile=str(proxy.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=ctx, timeout=60)
    conn.set_tunnel(u.hostname, 443)
    try:
        path = u.path + (f"?{u.query}" if u.query else "")
        conn.request(method, path, body=body, headers=dict(headers))
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def assert_clean(img: bytes) -> None:
    assert canary.find(img, generated.MARKER) == []  # the generated photo's private values
    tags = oracle.exiftool_bytes(img, ".jpg")
    assert oracle.leaks("JPEG", tags) == []
    assert not any("GPS" in k for k in tags)


@pytest.mark.parametrize("build", E2E_SHAPES, ids=lambda b: b.__name__)
def test_service_shape_arrives_clean_same_length_checksums_recomputed(proxy, sink, build):
    img = photo()
    shape = build(img)
    if shape.before is not None and HostSet.build().lookup(urlsplit(shape.before[1]).hostname):
        # (Qwen's token request goes to chat.qwen.ai, which is not decrypted: it is tunnelled)
        sink.clear()
        m, u, h, b = shape.before
        assert _send(proxy, m, u, h, b) == 201
        assert sink.last().body == b  # the create/start request passes byte-identical
    sink.clear()
    assert _send(proxy, shape.method, shape.url, shape.headers, shape.body) == 201, proxy.output()[-2000:]
    got = sink.last()
    assert got.method == shape.method
    assert len(got.body) == len(shape.body), "length kept"
    i = shape.body.find(img)
    if i >= 0:  # raw or multipart: the image sits at the same offset, everything else identical
        assert got.body[:i] == shape.body[:i] and got.body[i + len(img):] == shape.body[i + len(img):]
        cleaned = got.body[i:i + len(img)]
    else:
        j = got.body.find(b"\xff\xd8\xff")
        cleaned = got.body[j:j + len(img)]
    assert cleaned != img
    assert_clean(cleaned)
    sent = {k.lower(): v for k, v in shape.headers}
    recv = {k.lower(): v for k, v in got.headers.items()}
    if "content-crc32" in sent:
        c = zlib.crc32(got.body)
        assert recv["content-crc32"] == (str(c) if sent["content-crc32"].isdigit() and
                                         len(sent["content-crc32"]) != 8 else f"{c:08x}")
    if "content-md5" in sent:
        assert recv["content-md5"] == base64.b64encode(hashlib.md5(got.body).digest()).decode()


# ---- an older CA and a grown table -------------------------------------------------------------
def test_old_ca_fails_closed_for_a_new_host_and_the_printed_command_reissues(tmp_path, sink):
    certs = tmp_path / "certs"
    old_hosts = HostSet.build(remove=["chat.z.ai"])
    old = ca.create_ca(certs, old_hosts.domains(), hostname="old")
    assert not old.covers("chat.z.ai")
    old_pem = old.cert_path.read_bytes()
    p = start_proxy(tmp_path, sink.port, sink.cert, certs=certs,
                    extra=_map(["chat.z.ai", "claude.ai"], sink.port))
    try:
        out = p.output()
        assert "does not cover: chat.z.ai (Z.ai (GLM))" in out
        cmd = next(line.strip() for line in out.splitlines() if " cert reissue" in line)
        img = photo()
        shape = builders.zai_multipart(img)
        sink.clear()
        with pytest.raises(ssl.SSLCertVerificationError, match="(?i)permitted|name constraint"):
            _send(p, shape.method, shape.url, shape.headers, shape.body)
        assert sink.received == []  # nothing reached the service, cleaned or not
        # hosts the old CA covers keep working through the same proxy
        claude = builders.claude(img)
        assert _send(p, claude.method, claude.url, claude.headers, claude.body) == 201
    finally:
        assert p.stop() == 0, p.output()
    if shutil.which("certutil") is None:
        pytest.skip("certutil missing: cannot install into a test NSS database")
    home = tmp_path / "home"
    home.mkdir()
    env = dict(clean_env(), HOME=str(home))
    r = subprocess.run(cmd, shell=True, cwd=os.getcwd(), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    new = ca.load_ca(certs)
    assert new.covers("chat.z.ai") and new.cert_path.read_bytes() != old_pem
    assert not HostSet.build().uncovered(new.domains)
    listed = subprocess.run(["certutil", "-L", "-d", f"sql:{home / '.pki' / 'nssdb'}"], capture_output=True,
                            text=True, timeout=60)
    assert "exifguard CA" in listed.stdout
    exported = subprocess.run(["certutil", "-L", "-d", f"sql:{home / '.pki' / 'nssdb'}", "-n", "exifguard CA",
                               "-a"], capture_output=True, text=True, timeout=60).stdout
    assert exported.strip() == new.cert_path.read_text().strip()


def test_user_services_file_reaches_the_addon(tmp_path, sink):
    """A person's own service (no code edited): decrypted, PAC-routed and cleaned by the addon."""
    f = tmp_path / "mine.toml"
    f.write_text('[[service]]\nid = "my-ai"\norigins = ["chat.my-ai.example"]\n'
                 '[[service.hosts]]\nhost = "up-*.my-ai.example"\nkind = "dedicated"\n')
    p = start_proxy(tmp_path, sink.port, sink.cert, "--services", str(f),
                    extra=_map(["up-eu.my-ai.example"], sink.port))
    try:
        assert f"--services {f}" in p.output()  # printed commands carry it
        img = photo()
        sink.clear()
        assert _send(p, "PUT", "https://up-eu.my-ai.example/files/1", [("Content-Type", "image/jpeg")], img) == 201
        got = sink.last().body
        assert len(got) == len(img) and got != img
        assert_clean(got)
        routes = evaluate((p.certs / "proxy.pac").read_text(), ["up-eu.my-ai.example", "www.my-ai.example"])
        assert routes["up-eu.my-ai.example"].startswith("PROXY ") and routes["www.my-ai.example"] == "DIRECT"
    finally:
        assert p.stop() == 0, p.output()
