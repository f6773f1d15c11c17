"""A real Squid (Debian squid-openssl) on loopback for the ICAP tests.

Started the way ../shared/docs/icap-squid.md found it must be: as root with an
absolute config path (it drops to user `proxy`), a certificate database made first
with security_file_certgen and owned by `proxy`, `hosts_file` pointing the AI names
at 127.0.0.1, and `tls_outgoing_options cafile=` trusting the local HTTPS sink.  The
configuration is `exifguard squid-config`'s output with only the test's own lines
appended (paths, ports, the sink's CA): the tests exercise what administrators get.

The test client tunnels to HOST:SINK_PORT (the sink cannot listen on 443), so the
sink's port is added to Squid's SSL_ports.
"""

from __future__ import annotations

import http.client
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from exifguard.icap.squid import CERTGEN, squid_config
from exifguard.proxy.ca import CERT_FILE, KEY_FILE, create_ca
from exifguard.proxy.hosts import HostSet

def _builder_hosts() -> tuple[str, ...]:
    """Hosts of every upload shape in tests/carriers/builders.py (the list grows with it)."""
    from urllib.parse import urlsplit
    try:
        from carriers import builders
    except ImportError:
        return ()
    tiny = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
    out = []
    for build in builders.SHAPES:
        shape = build(tiny)
        out += [urlsplit(u).hostname or "" for u in [shape.url] + ([shape.before[1]] if shape.before else [])]
    return tuple(h for h in dict.fromkeys(out) if h)


def _all_services() -> HostSet:
    from exifguard.proxy.hosts import load_table
    return HostSet.build(extra=[f"service:{s.id}" for s in load_table().services if s.opt_in])


#: The table the Squid tests use: every opt-in service on (shared storage and whole sites),
#: so their request shapes are cleaned through Squid too.  Squid's bump list, its CA and the
#: ICAP services the tests start all use it (`ICAP_ARGS` for a real `exifguard icap`).
HOSTS = _all_services()
OPT_IN_IDS = tuple(s.id for s in HOSTS.services)
ICAP_ARGS = tuple(a for sid in OPT_IN_IDS for a in ("--add-service", sid))

#: Names the tests use; all resolve to 127.0.0.1 inside Squid.
BASE_NAMES = ("claude.ai", "files.oaiusercontent.com", "api.anthropic.com", "api.openai.com", "example.org",
              "acct.blob.core.windows.net", "copilot.microsoft.com", "substrate.office.com",
              "content-push.googleapis.com", "ppl-ai-file-upload.s3.amazonaws.com", "api.cloudinary.com",
              "chat.deepseek.com", "grok.com", "mistralaichatupprodswe.blob.core.windows.net", "rupload.meta.ai",
              "poe.com", "huggingface.co", "generativelanguage.googleapis.com", "api.mistral.ai", "chatgpt.com")
TEST_NAMES = tuple(dict.fromkeys(BASE_NAMES + _builder_hosts()))


def ai_sink_cert(sink, directory: Path) -> Path:
    """Give `sink` (tests/proxy/sink.py, reused as is) a certificate for the AI test names.

    Squid bumps at step 2 after connecting upstream and mimics the server certificate's
    names, and the name-constrained CA may only sign AI names: so the sink must present
    them (and only them).  Returns the new certificate's path (trusted by Squid).
    """
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    names = [n for n in TEST_NAMES if HOSTS.lookup(n) is not None]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "exifguard icap test sink")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "ai-sink-cert.pem", directory / "ai-sink-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    ctx.set_alpn_protocols(["http/1.1"])
    sink.server.socket._context = ctx  # accept() wraps new connections with this context
    sink.cert, sink.key = cert_path, key_path
    return cert_path


def squid_version() -> str | None:
    exe = shutil.which("squid") or ("/usr/sbin/squid" if os.path.exists("/usr/sbin/squid") else None)
    if exe is None:
        return None
    out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=20).stdout
    first = out.splitlines()[0] if out else ""
    return first.rsplit(" ", 1)[-1] if "Version" in first else "unknown"


def require_squid() -> str:
    """Skip with a clear reason unless a usable Squid is here; returns its version."""
    v = squid_version()
    if v is None:
        pytest.skip("squid is not installed (Debian: apt-get install squid-openssl; scripts/test installs it "
                    "when run as root)")
    if os.geteuid() != 0:
        pytest.skip("the Squid tests start squid as root (it drops to user 'proxy'); run them as root")
    if not os.path.exists(CERTGEN):
        pytest.skip(f"{CERTGEN} missing: install squid-openssl (the OpenSSL build), not squid")
    try:
        pwd.getpwnam("proxy")
    except KeyError:
        pytest.skip("no 'proxy' user for squid to run as")
    return v


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Squid:
    proc: subprocess.Popen
    port: int
    directory: Path
    ca: Path
    log: Path

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_squid(icap_urls: list[str], sink_port: int, sink_cert: Path, *, extra: str = "") -> Squid:
    require_squid()
    d = Path(tempfile.mkdtemp(prefix="eg-squid-"))
    os.chmod(d, 0o755)
    proxy_user = pwd.getpwnam("proxy")
    hosts = HOSTS
    # the CA exactly as docs/deploy.md makes it (exifguard cert create): name-constrained to the
    # AI hosts, key and certificate in one 0600 file that Squid reads for tls-cert and tls-key
    create_ca(d / "ca", hosts.domains())
    key_pem, ca_pem = d / "ca" / KEY_FILE, d / "ca" / CERT_FILE
    sink_ca = d / "sink-ca.pem"
    shutil.copyfile(sink_cert, sink_ca)
    (d / "hosts").write_text("127.0.0.1 localhost " + " ".join(TEST_NAMES) + "\n")
    ssl_db = d / "ssl_db"
    subprocess.run([CERTGEN, "-c", "-s", str(ssl_db), "-M", "4MB"], check=True, capture_output=True, timeout=30)
    for p in [d, *d.rglob("*")]:
        os.chown(p, proxy_user.pw_uid, proxy_user.pw_gid)
    os.chmod(d, 0o755)
    port = free_port()
    conf = squid_config(hosts, icap=icap_urls, ca_cert=key_pem, http_port=f"127.0.0.1:{port}",
                        ssl_db=str(ssl_db))
    conf = conf.replace("acl SSL_ports port 443", f"acl SSL_ports port 443 {sink_port}")
    conf += "\n".join([
        "# --- test-only lines (appended by tests/icap/squidharness.py) ---",
        f"pid_filename {d}/squid.pid", f"cache_log {d}/cache.log", f"access_log stdio:{d}/access.log",
        f"coredump_dir {d}", "cache deny all", "cache_mem 8 MB", "pinger_enable off", "shutdown_lifetime 0",
        "visible_hostname exifguard-test", f"hosts_file {d}/hosts", "dns_nameservers 127.0.0.1",
        "netdb_filename none", f"tls_outgoing_options cafile={sink_ca} flags=DONT_VERIFY_DOMAIN",
        "sslcrtd_children 4 startup=1 idle=1", extra, ""])
    conf_path = d / "squid.conf"
    conf_path.write_text(conf)
    log = d / "squid.out"
    exe = shutil.which("squid") or "/usr/sbin/squid"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "-N", "-d1", "-f", str(conf_path)], stdout=out, stderr=subprocess.STDOUT,
                                cwd=d, start_new_session=True)
    sq = Squid(proc, port, d, ca_pem, log)
    try:
        wait_port(port, proc=proc)
    except Exception:
        text = sq.output() + (d / "cache.log").read_text(errors="replace") if (d / "cache.log").exists() else ""
        sq.stop()
        raise RuntimeError("squid did not start:\n" + text[-3000:]) from None
    return sq


# ---- a client through Squid --------------------------------------------------------------
@dataclass
class Reply:
    status: int | None
    body: bytes = b""
    error: str = ""
    peer_cert: bytes | None = None


def send(squid: Squid, method: str, host: str, port: int, path: str, headers: list[tuple[str, str]] | dict,
         body: bytes | None, *, verify: bool = True, timeout: float = 60.0) -> Reply:
    """One HTTPS request tunnelled through Squid (CONNECT host:port) on a new connection."""
    if verify:
        ctx = ssl.create_default_context(cafile=str(squid.ca))
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection("127.0.0.1", squid.port, context=ctx, timeout=timeout)
    c.set_tunnel(host, port)
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    try:
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        c.putheader("Host", f"{host}:{port}")
        names = {k.lower() for k, _ in items}
        for k, v in items:
            c.putheader(k, v)
        if body is not None and "content-length" not in names and "transfer-encoding" not in names:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders()
        if body:
            if any(k.lower() == "transfer-encoding" for k, _ in items):
                step = 8192
                for i in range(0, len(body), step):
                    piece = body[i:i + step]
                    c.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
                c.send(b"0\r\n\r\n")
            else:
                c.send(body)
        r = c.getresponse()
        data = r.read()
        peer = c.sock.getpeercert(binary_form=True) if c.sock is not None else None
        return Reply(r.status, data, "", peer)
    except (OSError, http.client.HTTPException) as exc:
        return Reply(None, b"", f"{type(exc).__name__}: {exc}")
    finally:
        c.close()
