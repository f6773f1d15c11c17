"""End to end with generated photos: every upload path and service shape through a real proxy.

test_e2e.py and test_e2e_services.py send a real corpus photo and skip without the corpus;
these send the generated photos of tests/support/generated.py (every format the engine
cleans) through `exifguard run` (a real mitmdump) to the local HTTPS sink, so a fresh clone
still covers multipart over HTTP/1.1 and HTTP/2, a curl form upload, raw PUT of every format,
the OpenAI SDK's data URL, the Anthropic SDK's base64 JSON, a refused upload, and every
service shape of test_e2e_services.py.  What arrives is checked by ExifTool (allowlists) and
by searching for the private marker in every encoding.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import ssl
import subprocess
from urllib.parse import urlsplit

import pytest

from support import canary, generated, oracle

from exifguard import scrub

from .harness import start_proxy
from .sink import Sink
from .test_e2e_services import E2E_SHAPES, OPT_IN_ARGS, _map

pytestmark = [pytest.mark.e2e, oracle.requires_exiftool]

UPLOAD = "https://claude.ai/api/organizations/o1/conversations/c1/wiggle/upload-file"
PUT_URL = "https://files.oaiusercontent.com/files/abc/raw?se=2030&sp=w&sig=SECRETSIG"


def assert_clean(fmt: str, img: bytes) -> None:
    assert canary.find(img, generated.MARKER) == [], f"{fmt}: a private value arrived"
    if fmt in generated.ORACLE:
        tags = oracle.exiftool_bytes(img, generated.EXT[fmt])
        assert oracle.leaks(generated.oracle_format(fmt), tags) == []
        assert not any("GPS" in k for k in tags)


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    s = Sink(tmp_path_factory.mktemp("sink"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, sink):
    hosts = [urlsplit(b(b"x").url).hostname for b in E2E_SHAPES]
    p = start_proxy(tmp_path_factory.mktemp("generated"), sink.port, sink.cert, *OPT_IN_ARGS,
                    extra=_map(hosts, sink.port))
    yield p
    assert p.stop() == 0, p.output()


@pytest.fixture
def fresh(sink):
    sink.clear()
    return sink


def _send(proxy, method: str, url: str, headers, body: bytes) -> tuple[int, bytes]:
    u = urlsplit(url)
    ctx = ssl.create_default_context(cafile=str(proxy.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=ctx, timeout=60)
    conn.set_tunnel(u.hostname, 443)
    try:
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=body, headers=dict(headers))
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _multipart(img: bytes, filename: str, boundary: str = "----egGenerated7MA4") -> tuple[bytes, str]:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"orgUuid\"\r\n\r\no1\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + img + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("fmt", generated.FORMATS)
def test_raw_put_of_every_format_arrives_clean(proxy, fresh, fmt):
    img = generated.image(fmt)
    status, _ = _send(proxy, "PUT", PUT_URL, [("Content-Type", "application/octet-stream")], img)
    assert status == 201, proxy.output()[-2000:]
    got = fresh.last().body
    assert len(got) == len(img) and got == scrub(img).data
    assert_clean(fmt, got)


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_curl_multipart_to_claude(proxy, fresh, tmp_path, version):
    if shutil.which("curl") is None:
        pytest.skip("curl missing")
    img = generated.image("HEIC")
    body, ctype = _multipart(img, "IMG_0001.HEIC")
    f = tmp_path / "body"
    f.write_bytes(body)
    r = subprocess.run(["curl", "-sS", "--proxy", proxy.url, "--cacert", str(proxy.ca), "-o", "-", "-w",
                        "\n%{http_code} %{http_version}", version, "-H", f"Content-Type: {ctype}",
                        "-H", "Origin: https://claude.ai", "--data-binary", f"@{f}", UPLOAD],
                       capture_output=True, timeout=60)
    code, ver = r.stdout.decode().rsplit("\n", 1)[1].split()
    assert code == "201", r.stdout + r.stderr
    assert ver == ("1.1" if version == "--http1.1" else "2")
    got = fresh.last().body
    i = body.find(img)
    assert len(got) == len(body) and got[:i] == body[:i] and got[i + len(img):] == body[i + len(img):]
    assert_clean("HEIC", got[i:i + len(img)])


def test_curl_form_upload(proxy, fresh, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl missing")
    img = generated.image("PNG")
    f = tmp_path / "photo.png"
    f.write_bytes(img)
    r = subprocess.run(["curl", "-sS", "--proxy", proxy.url, "--cacert", str(proxy.ca), "-o", "-", "-w",
                        "\n%{http_code}", "--http1.1", "-F", f"file=@{f};type=image/png", UPLOAD],
                       capture_output=True, timeout=60)
    assert r.stdout.decode().rsplit("\n", 1)[1] == "201", r.stderr
    got = fresh.last().body
    start = got.find(b"\x89PNG")
    assert_clean("PNG", got[start:start + len(img)])
    assert img not in got


def test_httpx_multipart(proxy, fresh):
    httpx = pytest.importorskip("httpx")
    img = generated.image("WEBP")
    with httpx.Client(proxy=proxy.url, verify=str(proxy.ca), timeout=30) as c:
        r = c.post(UPLOAD, files={"file": ("photo.webp", img, "image/webp")}, data={"orgUuid": "o1"})
    assert r.status_code == 201
    got = fresh.last().body
    i = got.find(b"RIFF")
    assert_clean("WEBP", got[i:i + len(img)])


def test_openai_sdk_data_url(proxy, fresh):
    openai = pytest.importorskip("openai")
    httpx = pytest.importorskip("httpx")
    img = generated.image("AVIF")
    url = "data:image/avif;base64," + base64.b64encode(img).decode()
    client = openai.OpenAI(api_key="sk-test", max_retries=0,
                           http_client=httpx.Client(proxy=proxy.url, verify=str(proxy.ca)))
    resp = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
        {"type": "text", "text": "where was this taken?"}, {"type": "image_url", "image_url": {"url": url}}]}])
    assert resp.choices[0].message.content == "ok"
    sent = json.loads(fresh.last().body)["messages"][0]["content"][1]["image_url"]["url"]
    assert len(sent) == len(url) and sent.startswith("data:image/avif;base64,")
    assert_clean("AVIF", base64.b64decode(sent.split(",", 1)[1]))


def test_anthropic_sdk_base64(proxy, fresh, monkeypatch):
    anthropic = pytest.importorskip("anthropic")
    img = generated.image("JPEG")
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
    sent = json.loads(fresh.last().body)["messages"][0]["content"][0]["source"]["data"]
    assert len(sent) == len(data) and sent != data
    assert_clean("JPEG", base64.b64decode(sent))


def test_photo_cut_inside_its_exif_is_refused(proxy, fresh):
    img = generated.image("JPEG")
    cut = img[:img.find(b"Exif\0\0") + 60]
    status, body = _send(proxy, "PUT", PUT_URL, [("Content-Type", "image/jpeg")], cut)
    assert status == 422 and body.startswith(b"exifguard blocked this upload:")
    assert fresh.received == []


@pytest.mark.parametrize("build", E2E_SHAPES, ids=lambda b: b.__name__)
def test_service_shape_arrives_clean(proxy, sink, build):
    img = generated.image("JPEG")
    shape = build(img)
    sink.clear()
    status, _ = _send(proxy, shape.method, shape.url, shape.headers, shape.body)
    assert status == 201, proxy.output()[-2000:]
    got = sink.last()
    assert got.method == shape.method and len(got.body) == len(shape.body)
    assert canary.find(got.body, generated.MARKER) == []
    expected = scrub(img).data
    i = shape.body.find(img)
    if i >= 0:  # raw or multipart: the image at the same offset, everything else identical
        assert got.body[:i] == shape.body[:i] and got.body[i + len(img):] == shape.body[i + len(img):]
        assert got.body[i:i + len(img)] == expected
    assert_clean("JPEG", expected)


def test_host_outside_the_list_is_tunnelled_untouched(proxy, fresh):
    img = generated.image("JPEG")
    ctx = ssl.create_default_context(cafile=str(fresh.cert))
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=ctx, timeout=30)
    conn.set_tunnel("localhost", fresh.port)
    try:
        conn.request("PUT", "/upload", body=img, headers={"Content-Type": "image/jpeg"})
        assert conn.getresponse().status == 201
        peer = conn.sock.getpeercert()
    finally:
        conn.close()
    assert dict(x[0] for x in peer["subject"])["commonName"] == "exifguard test sink"
    assert fresh.last().body == img


def test_audit_mode_forwards_byte_identical_and_names_what_it_would_remove(tmp_path, sink):
    httpx = pytest.importorskip("httpx")
    p = start_proxy(tmp_path, sink.port, sink.cert, "--mode", "audit")
    try:
        sink.clear()
        img = generated.image("WEBP")
        body, ctype = _multipart(img, "photo.webp")
        with httpx.Client(proxy=p.url, verify=str(p.ca), timeout=30) as c:
            r = c.post(UPLOAD, content=body, headers={"content-type": ctype})
        assert r.status_code == 201
        assert sink.last().body == body
        assert p.wait_for("would remove location (GPS)")
        rec = json.loads(p.audit.read_text().splitlines()[-1])
        assert rec["action"] == "audit" and "location" in rec["categories"]
        assert generated.MARKER.decode() not in p.output() and generated.MARKER.decode() not in p.audit.read_text()
    finally:
        assert p.stop() == 0
