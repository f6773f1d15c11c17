"""End to end: clients -> `exifguard run` (a real mitmdump) -> local HTTPS sink.

With the corpus, the photo is a real camera JPEG; without it, the generated one (so a
fresh clone covers the same paths), and a raw PUT of every generated format.

Real AI hostnames in the client requests, mapped to the sink with map_remote.  The sink
checks what arrived: images clean by ExifTool's account (allowlists), every other byte
unchanged.  One proxy per configuration, started once per module.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import ssl
import stat
import subprocess
import sys

import pytest

from support import canary, corpus, generated, oracle

from .harness import start_proxy
from .sink import Sink

pytestmark = [pytest.mark.e2e, oracle.requires_exiftool]

UPLOAD = "https://claude.ai/api/organizations/o1/conversations/c1/wiggle/upload-file"
PUT_URL = "https://files.oaiusercontent.com/files/abc/raw?se=2030&sp=w&sig=SECRETSIG"


def photo() -> bytes:
    """A real camera JPEG with GPS from the corpus; without the corpus, the generated JPEG
    (GPS, serial, owner, XMP, IPTC, comment: tests/support/generated.py), so a fresh clone
    still sends every client and path below through the proxy."""
    fs = [f for f in corpus.files("JPEG") if f.entry.get("privacy", {}).get("gps")]
    return fs[0].data if fs else generated.image("JPEG")


def truncated() -> bytes:
    """A JPEG that ends inside its Exif segment: no safe rewrite exists."""
    img = photo()
    i = img.find(b"Exif\x00\x00")
    assert 0 < i < 100
    return img[:i + 100]


def assert_clean(img: bytes) -> None:
    assert img[:3] == b"\xff\xd8\xff"
    assert canary.find(img, generated.MARKER) == []  # the generated photo's private values
    tags = oracle.exiftool_bytes(img, ".jpg")
    assert oracle.leaks("JPEG", tags) == []
    assert not any("GPS" in k for k in tags)


def assert_only_image_changed(sent: bytes, got: bytes, img: bytes) -> bytes:
    """Same length; outside the image span byte-identical; returns the cleaned image."""
    assert len(got) == len(sent)
    i = sent.find(img)
    assert i >= 0
    assert got[:i] == sent[:i] and got[i + len(img):] == sent[i + len(img):]
    clean = got[i:i + len(img)]
    assert clean != img
    return clean


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    s = Sink(tmp_path_factory.mktemp("sink"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, sink):
    p = start_proxy(tmp_path_factory.mktemp("strip"), sink.port, sink.cert)
    yield p
    rc = p.stop()
    assert rc == 0, p.output()
    assert "stopped" in p.output()


@pytest.fixture
def fresh(sink):
    sink.clear()
    return sink


def multipart(img: bytes, boundary: str = "----egBoundary7MA4YWxk") -> tuple[bytes, str]:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"orgUuid\"\r\n\r\no1\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"IMG_20240102_030405.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + img + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def curl(proxy, *args: str) -> subprocess.CompletedProcess:
    if shutil.which("curl") is None:
        pytest.skip("curl missing")
    return subprocess.run(["curl", "-sS", "--proxy", proxy.url, "--cacert", str(proxy.ca),
                           "-o", "-", "-w", "\n%{http_code} %{http_version}", *args],
                          capture_output=True, timeout=60)


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_curl_multipart_to_claude(proxy, fresh, tmp_path, version):
    img = photo()
    body, ctype = multipart(img)
    f = tmp_path / "body"
    f.write_bytes(body)
    r = curl(proxy, version, "-H", f"Content-Type: {ctype}", "-H", "Origin: https://claude.ai",
             "--data-binary", f"@{f}", UPLOAD)
    code, ver = r.stdout.decode().rsplit("\n", 1)[1].split()
    assert code == "201", r.stdout + r.stderr
    assert ver == ("1.1" if version == "--http1.1" else "2")
    got = fresh.last()
    assert got.method == "POST" and got.path.startswith("/api/organizations/o1/")
    assert_clean(assert_only_image_changed(body, got.body, img))


def test_curl_form_upload_and_raw_put(proxy, fresh, tmp_path):
    img = photo()
    f = tmp_path / "photo.jpg"
    f.write_bytes(img)
    r = curl(proxy, "--http1.1", "-F", f"file=@{f};type=image/jpeg", UPLOAD)
    assert r.stdout.decode().rsplit("\n", 1)[1].startswith("201"), r.stderr
    got = fresh.last().body
    start = got.find(b"\xff\xd8\xff")
    assert_clean(got[start:start + len(img)])
    assert img not in got
    r = curl(proxy, "--http2", "-X", "PUT", "-H", "x-ms-blob-type: BlockBlob", "-H", "Content-Type: image/jpeg",
             "--data-binary", f"@{f}", PUT_URL)
    assert r.stdout.decode().rsplit("\n", 1)[1].startswith("201"), r.stderr
    put = fresh.last()
    assert put.method == "PUT" and put.headers["x-ms-blob-type"] == "BlockBlob"
    assert_clean(assert_only_image_changed(img, put.body, img))
    assert proxy.wait_for("exifguard: files.oaiusercontent.com image (JPEG")
    line = [l for l in proxy.lines if "exifguard: files.oaiusercontent.com image" in l][-1]
    assert "removed location (GPS)" in line
    text = proxy.audit.read_text()
    assert "SECRETSIG" not in text and "sig=" not in text
    recs = [json.loads(l) for l in text.splitlines()]
    assert recs[-1]["host"] == "files.oaiusercontent.com" and recs[-1]["path"] == "/files/abc/raw"
    assert recs[-1]["action"] == "stripped" and "location" in recs[-1]["categories"]
    import hashlib
    assert recs[-1]["sha256"] == hashlib.sha256(put.body).hexdigest()


def test_httpx_multipart(proxy, fresh):
    httpx = pytest.importorskip("httpx")
    img = photo()
    with httpx.Client(proxy=proxy.url, verify=str(proxy.ca), timeout=30) as c:
        r = c.post(UPLOAD, files={"file": ("photo.jpg", img, "image/jpeg")}, data={"orgUuid": "o1"})
    assert r.status_code == 201
    got = fresh.last().body
    assert len(got) == int(fresh.last().headers["content-length"])
    i = got.find(b"\xff\xd8\xff")
    assert_clean(got[i:i + len(img)])
    assert b'name="orgUuid"\r\n\r\no1\r\n' in got and b'filename="photo.jpg"' in got


def _data_url_image(s: str) -> bytes:
    return base64.b64decode(s.split(",", 1)[1] if s.startswith("data:") else s)


def test_openai_sdk_data_url(proxy, fresh):
    openai = pytest.importorskip("openai")
    httpx = pytest.importorskip("httpx")
    img = photo()
    url = "data:image/jpeg;base64," + base64.b64encode(img).decode()
    client = openai.OpenAI(api_key="sk-test", max_retries=0,
                           http_client=httpx.Client(proxy=proxy.url, verify=str(proxy.ca)))
    resp = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
        {"type": "text", "text": "where was this taken?"},
        {"type": "image_url", "image_url": {"url": url}}]}])
    assert resp.choices[0].message.content == "ok"
    got = fresh.last()
    assert got.path == "/v1/chat/completions"
    sent_url = json.loads(got.body)["messages"][0]["content"][1]["image_url"]["url"]
    assert len(sent_url) == len(url) and sent_url.startswith("data:image/jpeg;base64,")
    assert json.loads(got.body)["messages"][0]["content"][0]["text"] == "where was this taken?"
    assert_clean(_data_url_image(sent_url))


def test_anthropic_sdk_base64_via_env_proxy(proxy, fresh, monkeypatch):
    anthropic = pytest.importorskip("anthropic")
    img = photo()
    data = base64.b64encode(img).decode()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = anthropic.Anthropic(api_key="sk-ant-test", max_retries=0)
    msg = client.messages.create(model="claude-test", max_tokens=10, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": data}},
        {"type": "text", "text": "describe"}]}])
    assert msg.content[0].text == "ok"
    got = json.loads(fresh.last().body)
    sent = got["messages"][0]["content"][0]["source"]["data"]
    assert len(sent) == len(data) and sent != data
    assert_clean(base64.b64decode(sent))


def test_unscrubbable_image_is_blocked_with_4xx(proxy, fresh):
    httpx = pytest.importorskip("httpx")
    with httpx.Client(proxy=proxy.url, verify=str(proxy.ca), timeout=30) as c:
        r = c.put(PUT_URL, content=truncated(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 422
    assert r.text.startswith("exifguard blocked this upload:") and "truncated" in r.text
    assert fresh.received == []
    assert proxy.wait_for("BLOCKED files.oaiusercontent.com image (JPEG")


def test_host_outside_the_list_is_tunnelled(proxy, fresh):
    """CONNECT to a non-AI host: the client sees the sink's own certificate, the image arrives untouched."""
    img = photo()
    ctx = ssl.create_default_context(cafile=str(fresh.cert))
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=ctx, timeout=30)
    conn.set_tunnel("localhost", fresh.port)
    conn.request("PUT", "/upload", body=img, headers={"Content-Type": "image/jpeg"})
    assert conn.getresponse().status == 201
    peer = conn.sock.getpeercert()
    conn.close()
    assert dict(x[0] for x in peer["subject"])["commonName"] == "exifguard test sink"
    assert fresh.last().body == img
    assert not any("localhost" in l and "exifguard:" in l for l in proxy.lines)


def test_selftest_command_against_running_proxy(proxy):
    p = subprocess.run([sys.executable, "-m", "exifguard.cli", "selftest", "--certs", str(proxy.certs)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "selftest passed" in p.stdout and "GPSLatitude" in p.stdout and "canary marker gone" in p.stdout
    rec = json.loads(proxy.audit.read_text().splitlines()[-1])
    assert rec.get("selftest") is True and rec["host"] == "claude.ai"


def test_private_files_are_0600(proxy):
    assert stat.S_IMODE(os.stat(proxy.certs).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(proxy.certs / "mitmproxy-ca.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(proxy.audit).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(proxy.certs / "run.json").st_mode) == 0o600


def test_on_error_pass_forwards_and_warns(tmp_path, sink):
    p = start_proxy(tmp_path, sink.port, sink.cert, "--on-error", "pass")
    try:
        sink.clear()
        httpx = pytest.importorskip("httpx")
        data = truncated()
        with httpx.Client(proxy=p.url, verify=str(p.ca), timeout=30) as c:
            r = c.put(PUT_URL, content=data, headers={"content-type": "image/jpeg"})
        assert r.status_code == 201
        assert sink.last().body == data
        assert p.wait_for("WARNING: forwarded files.oaiusercontent.com image (JPEG")
        assert json.loads(p.audit.read_text().splitlines()[-1])["action"] == "passed"
    finally:
        assert p.stop() == 0


def test_audit_mode_forwards_byte_identical_and_logs(tmp_path, sink):
    p = start_proxy(tmp_path, sink.port, sink.cert, "--mode", "audit")
    try:
        sink.clear()
        httpx = pytest.importorskip("httpx")
        img = photo()
        body, ctype = multipart(img)
        with httpx.Client(proxy=p.url, verify=str(p.ca), timeout=30) as c:
            r = c.post(UPLOAD, content=body, headers={"content-type": ctype})
        assert r.status_code == 201
        assert sink.last().body == body
        assert p.wait_for("would remove location (GPS)")
        rec = json.loads(p.audit.read_text().splitlines()[-1])
        assert rec["action"] == "audit" and "location" in rec["categories"]
    finally:
        assert p.stop() == 0


def _local_non_loopback_ip() -> str | None:
    import socket
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


def test_non_loopback_client_is_refused(tmp_path, sink):
    """Even when bound to every interface, the addon drops clients that are not loopback."""
    import socket
    ip = _local_non_loopback_ip()
    if ip is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    p = start_proxy(tmp_path, sink.port, sink.cert, "--host", "0.0.0.0", "--pac-port", "-1")
    try:
        assert "WARNING: listening on 0.0.0.0" in p.output()

        def try_connect(src: str) -> bytes:
            with socket.socket() as s:
                s.settimeout(10)
                s.bind((src, 0))
                s.connect((src, p.port))
                s.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % sink.port)
                try:
                    return s.recv(100)
                except (ConnectionResetError, socket.timeout):
                    return b""
        assert try_connect("127.0.0.1").startswith(b"HTTP/1.1 200")
        assert try_connect(ip) == b""
        assert p.wait_for("refused proxy client")
    finally:
        assert p.stop() == 0


@pytest.mark.parametrize("fmt", generated.FORMATS)
def test_raw_put_of_every_generated_format_arrives_clean(proxy, fresh, fmt):
    """Every format the engine cleans, through the real proxy, without the corpus."""
    from exifguard import scrub
    img = generated.image(fmt)
    u = PUT_URL.split("/", 3)
    ctx = ssl.create_default_context(cafile=str(proxy.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=ctx, timeout=60)
    conn.set_tunnel(u[2], 443)
    try:
        conn.request("PUT", "/" + u[3], body=img, headers={"Content-Type": "application/octet-stream"})
        r = conn.getresponse()
        r.read()
    finally:
        conn.close()
    assert r.status == 201, proxy.output()[-2000:]
    got = fresh.last().body
    assert len(got) == len(img) and got == scrub(img).data
    assert canary.find(got, generated.MARKER) == [], f"{fmt}: a private value arrived"
    if fmt in generated.ORACLE:
        tags = oracle.exiftool_bytes(got, generated.EXT[fmt])
        assert oracle.leaks(generated.oracle_format(fmt), tags) == []
        assert not any("GPS" in k for k in tags)
