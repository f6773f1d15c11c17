"""The browser journey's test site and upload sink: one HTTPS server on 127.0.0.1.

It plays every server the browser talks to:
  * the chat web origins that exifguard does *not* intercept (chatgpt.com,
    gemini.google.com, a developer's own page) -- the browser reaches them directly
    through Chromium's --host-resolver-rules, as it would reach the real sites;
  * the upload endpoints that exifguard *does* intercept (claude.ai,
    files.oaiusercontent.com, push.clients6.google.com, api.openai.com) -- the browser
    reaches them only through the proxy, whose map_remote rules point here.

Because mitmproxy's map_remote rewrites the Host header, requests are routed by path
(the real services' paths do not collide).  Every received image is kept as an
`Upload` so the tests can judge the bytes that actually arrived.

The certificates come from a throwaway `TestPKI`: it stands in for the public web PKI
(the browser trusts it for the directly-served origins, mitmproxy trusts it upstream
via ssl_verify_upstream_trusted_ca).  It is never the exifguard CA.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import ipaddress
import json
import re
import secrets
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SITE = Path(__file__).with_name("site")

#: Hostnames the test site answers for; all get a certificate from the test PKI.
SITE_HOSTS = (
    "claude.ai", "chatgpt.com", "files.oaiusercontent.com", "gemini.google.com",
    "push.clients6.google.com", "api.openai.com", "devapp.exifguard.test", "localhost",
)

PAGES = {
    "/new": "claude.html",                  # https://claude.ai/new
    "/": "chatgpt.html",                    # https://chatgpt.com/
    "/app": "gemini.html",                  # https://gemini.google.com/app
    "/api-playground": "api.html",          # https://devapp.exifguard.test/api-playground
}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}

CLAUDE_UPLOAD = re.compile(r"^/api/organizations/[\w-]+/conversations/[\w-]+/wiggle/upload-file$")
OAI_RAW = re.compile(r"^/files/([\w-]+)/raw$")
OAI_UPLOADED = re.compile(r"^/backend-api/files/(file-[\w-]+)/uploaded$")


# --------------------------------------------------------------------------- PKI

@dataclass(frozen=True)
class TestPKI:
    """A throwaway CA plus one server certificate for every test hostname and 127.0.0.1."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def create(cls, directory: Path, hosts: tuple[str, ...] = SITE_HOSTS) -> "TestPKI":
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        directory.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                "exifguard browser-test web PKI (throwaway)")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(hours=1))
              .not_valid_after(now + dt.timedelta(days=2))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                           content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False,
                                           encipher_only=False, decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
        sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        pki = cls(directory / "test-web-ca.pem", directory / "site.pem", directory / "site.key")
        pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        pki.server_cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        pki.server_key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
        pki.server_key.chmod(0o600)
        return pki


# --------------------------------------------------------------------------- records

@dataclass
class Upload:
    """One image as the upload endpoint received it."""

    route: str
    """"claude multipart", "chatgpt put", "gemini resumable" or "openai json"."""
    path: str
    content_type: str
    image: bytes = field(repr=False)  # never print a photo's bytes in a failure message
    declared_size: int | None = None
    """The size the client stated before sending the bytes (file_size, x-goog-upload-header-content-length)."""


@dataclass
class SinkState:
    uploads: list[Upload] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    """(method, path) of every request, pages included: proves what reached the site at all."""
    oai_files: dict[str, dict] = field(default_factory=dict)
    goog_uploads: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[dict[str, str], bytes]]:
    """name -> (part headers, content).  Small and strict: enough for a browser's FormData."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise ValueError("multipart body without a boundary")
    delim = b"--" + m.group(1).encode()
    parts: dict[str, tuple[dict[str, str], bytes]] = {}
    chunks = body.split(delim)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part without a header terminator")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        headers = {}
        for line in head.decode("latin-1").strip("\r\n").split("\r\n"):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        nm = re.search(r'\bname="([^"]*)"', headers.get("content-disposition", ""))
        if nm:
            parts[nm.group(1)] = (headers, content)
    return parts


def find_data_url(node: object) -> str | None:
    """The first `data:image/...;base64,` string anywhere in a JSON document."""
    if isinstance(node, str):
        return node if node.startswith("data:image/") else None
    items = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for v in items:
        hit = find_data_url(v)
        if hit:
            return hit
    return None


# --------------------------------------------------------------------------- server

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        """Quiet: URLs carry fake signatures, and pytest output should stay readable."""

    # -- helpers
    @property
    def state(self) -> SinkState:
        return self.server.state

    def _cors(self) -> dict[str, str]:
        origin = self.headers.get("Origin")
        if not origin:
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Expose-Headers":
                    "X-Goog-Upload-URL, X-Goog-Upload-Status, X-Goog-Upload-Size-Received"}

    def _send(self, status: int, body: bytes = b"", ctype: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in {**self._cors(), **(headers or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _record(self) -> None:
        with self.state.lock:
            self.state.requests.append((self.command, self.path))

    def _store(self, upload: Upload) -> None:
        with self.state.lock:
            self.state.uploads.append(upload)

    # -- verbs
    def do_OPTIONS(self) -> None:  # noqa: N802 - stdlib naming
        """CORS preflight, answered like the storage services do (echo what was asked)."""
        self._record()
        self._send(204, b"", "text/plain", {
            "Access-Control-Allow-Methods": "GET, POST, PUT, OPTIONS",
            "Access-Control-Allow-Headers": self.headers.get("Access-Control-Request-Headers", ""),
            "Access-Control-Max-Age": "0",
        })

    def do_GET(self) -> None:  # noqa: N802
        self._record()
        path = urlsplit(self.path).path
        name = PAGES.get(path) or (path[len("/static/"):] if path.startswith("/static/") else None)
        f = (SITE / name) if name and "/" not in name and ".." not in name else None
        if f is None or not f.is_file():
            self._send(404, b"not found", "text/plain")
            return
        self._send(200, f.read_bytes(), CONTENT_TYPES.get(f.suffix, "application/octet-stream"))

    def do_PUT(self) -> None:  # noqa: N802
        self._record()
        url = urlsplit(self.path)
        body = self._body()
        m = OAI_RAW.match(url.path)
        if not m:
            self._send(404, b"not found", "text/plain")
            return
        if self.headers.get("x-ms-blob-type") != "BlockBlob":  # what Azure Blob insists on
            self._send(400, b"<Error><Code>MissingRequiredHeader</Code></Error>", "application/xml")
            return
        with self.state.lock:
            entry = next((e for e in self.state.oai_files.values() if e["blob"] == m.group(1)), None)
        if entry is None:
            self._send(403, b"<Error><Code>AuthenticationFailed</Code></Error>", "application/xml")
            return
        entry["received"] = len(body)
        self._store(Upload("chatgpt put", url.path, self.headers.get("Content-Type", ""), body,
                           entry["file_size"]))
        self._send(201, b"", "text/plain")

    def do_POST(self) -> None:  # noqa: N802
        self._record()
        url = urlsplit(self.path)
        body = self._body()
        ctype = self.headers.get("Content-Type", "")
        try:
            if CLAUDE_UPLOAD.match(url.path):
                self._claude(url.path, body, ctype)
            elif url.path == "/backend-api/files":
                self._oai_create(body)
            elif m := OAI_UPLOADED.match(url.path):
                self._oai_uploaded(m.group(1))
            elif url.path == "/upload/":
                self._gemini(url.query, body, ctype)
            elif url.path == "/v1/chat/completions":
                self._openai_json(url.path, body, ctype)
            else:
                self._send(404, b"not found", "text/plain")
        except (ValueError, KeyError) as exc:
            self._json(400, {"error": f"bad request: {exc}"})

    # -- services
    def _claude(self, path: str, body: bytes, ctype: str) -> None:
        parts = parse_multipart(body, ctype)
        headers, content = parts["file"]
        self._store(Upload("claude multipart", path, headers.get("content-type", ""), content))
        self._json(200, {"file_uuid": secrets.token_hex(8), "file_kind": "image",
                         "size_bytes": len(content)})

    def _oai_create(self, body: bytes) -> None:
        req = json.loads(body)
        file_id = "file-" + secrets.token_hex(8)
        blob = secrets.token_hex(8)
        with self.state.lock:
            self.state.oai_files[file_id] = {"blob": blob, "file_size": int(req["file_size"]),
                                             "received": None}
        upload_url = (f"https://files.oaiusercontent.com/files/{blob}/raw?se=2099-01-01T00%3A00%3A00Z"
                      f"&sp=w&sv=2024-08-04&sr=b&sig=TESTONLY{secrets.token_hex(4)}")
        self._json(200, {"status": "success", "file_id": file_id, "upload_url": upload_url})

    def _oai_uploaded(self, file_id: str) -> None:
        with self.state.lock:
            entry = self.state.oai_files.get(file_id)
        if entry is None or entry["received"] is None:
            self._json(404, {"status": "error", "detail": "no bytes were uploaded for this file"})
        elif entry["received"] != entry["file_size"]:
            self._json(400, {"status": "error", "detail":
                             f"uploaded {entry['received']} bytes but file_size said {entry['file_size']}"})
        else:
            self._json(200, {"status": "success", "size_bytes": entry["received"]})

    def _gemini(self, query: str, body: bytes, ctype: str) -> None:
        command = self.headers.get("x-goog-upload-command", "")
        if command == "start":
            upload_id = secrets.token_hex(8)
            with self.state.lock:
                self.state.goog_uploads[upload_id] = int(
                    self.headers["x-goog-upload-header-content-length"])
            self._send(200, b"", "text/plain", {
                "X-Goog-Upload-Status": "active",
                "X-Goog-Upload-URL": "https://push.clients6.google.com/upload/"
                                     f"?upload_id={upload_id}&upload_protocol=resumable"})
            return
        if command != "upload, finalize" or self.headers.get("x-goog-upload-offset") != "0":
            raise ValueError("expected x-goog-upload-command 'upload, finalize' at offset 0")
        upload_id = parse_qs(query)["upload_id"][0]
        with self.state.lock:
            declared = self.state.goog_uploads[upload_id]
        self._store(Upload("gemini resumable", "/upload/", ctype, body, declared))
        # Google completes an upload once the declared total has arrived.
        status = "final" if len(body) == declared else "active"
        self._send(200, f"/contrib_service/ttl_1d/{upload_id}".encode() if status == "final" else b"",
                   "text/plain", {"X-Goog-Upload-Status": status,
                                  "X-Goog-Upload-Size-Received": str(len(body))})

    def _openai_json(self, path: str, body: bytes, ctype: str) -> None:
        url = find_data_url(json.loads(body))
        if url is None:
            raise ValueError("no data: URL in the request")
        head, _, b64 = url.partition(",")
        image = base64.b64decode(b64, validate=True)
        self._store(Upload("openai json", path, head[len("data:"):], image))
        self._json(200, {"id": "chatcmpl-test", "object": "chat.completion",
                         "choices": [{"index": 0, "finish_reason": "stop", "message": {
                             "role": "assistant", "content": "(test sink) image received"}}],
                         "test_image_bytes": len(image)})


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    state: SinkState


class Sink:
    """Run the site + sink on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, pki: TestPKI) -> None:
        self.state = SinkState()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.server_cert, pki.server_key)
        ctx.set_alpn_protocols(["http/1.1"])
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="browser-sink",
                                        daemon=True)

    def __enter__(self) -> "Sink":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def mark(self) -> tuple[int, int]:
        with self.state.lock:
            return len(self.state.uploads), len(self.state.requests)

    def uploads_since(self, mark: tuple[int, int]) -> list[Upload]:
        with self.state.lock:
            return list(self.state.uploads[mark[0]:])

    def requests_since(self, mark: tuple[int, int]) -> list[tuple[str, str]]:
        with self.state.lock:
            return list(self.state.requests[mark[1]:])
