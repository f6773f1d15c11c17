"""exifguard's local CA, in mitmproxy's confdir format.

Default: a CA *name-constrained* to the AI domains (X.509 nameConstraints, critical,
permitted DNS subtrees = the host list; every IPv4/IPv6 address excluded), so a
leaked key cannot be used to impersonate a bank or a mail provider to a browser
that trusts it.  Chrome 112+ and NSS/Firefox enforce constraints on local roots.
mitmproxy must then run with `upstream_cert=false` (otherwise it copies upstream
SANs outside the constraints into its leaf certificates).

Files (mitmproxy reads the first; it writes no public files for a custom CA, so we do):
    mitmproxy-ca.pem        private key + certificate, mode 0600
    mitmproxy-ca-cert.pem   certificate only (install this), 0644
    mitmproxy-ca-cert.cer   same PEM, .cer name (Windows/Android)
    mitmproxy-ca-cert.p12   certificate only, PKCS#12
    exifguard-ca.json       what we created (constrained?, domains, created/expires)
The directory is 0700.  Lifetime 1 year; CN "exifguard local CA (<hostname>, <date>)".

`--unconstrained` uses mitmproxy's own CA generator instead (CN=mitmproxy, 10 years,
no constraints) for people who need interception beyond the AI list.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_FILE = "mitmproxy-ca.pem"
CERT_FILE = "mitmproxy-ca-cert.pem"
CER_FILE = "mitmproxy-ca-cert.cer"
P12_FILE = "mitmproxy-ca-cert.p12"
META_FILE = "exifguard-ca.json"
LIFETIME_DAYS = 365


@dataclass(frozen=True)
class CAInfo:
    directory: Path
    cert_path: Path
    key_path: Path
    subject: str
    constrained: bool
    domains: tuple[str, ...]
    not_after: dt.datetime

    def covers(self, host: str) -> bool:
        """Would a leaf for `host` satisfy the CA's name constraints?"""
        if not self.constrained:
            return True
        h = host.lower().rstrip(".")
        return any(h == d or h.endswith("." + d) for d in self.domains)


class CAExists(FileExistsError):
    pass


def ensure_private_dir(path: Path) -> Path:
    """Create (or tighten) a directory to mode 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomic write with the final mode set before any byte lands on disk."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_public_files(directory: Path, cert: x509.Certificate) -> None:
    pem = cert.public_bytes(serialization.Encoding.PEM)
    _write(directory / CERT_FILE, pem, 0o644)
    _write(directory / CER_FILE, pem, 0o644)
    p12 = pkcs12.serialize_key_and_certificates(name=b"exifguard", key=None, cert=cert, cas=None,
                                                encryption_algorithm=serialization.NoEncryption())
    _write(directory / P12_FILE, p12, 0o644)


def build_ca(domains: Iterable[str], *, hostname: str | None = None, constrained: bool = True,
             now: dt.datetime | None = None,
             days: int = LIFETIME_DAYS) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A fresh RSA-2048 CA certificate (pure: nothing written)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    hostname = (hostname or socket.gethostname() or "localhost").replace(",", " ")[:40]
    cn = f"exifguard local CA ({hostname}, {now.date().isoformat()})"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "exifguard")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    b = (x509.CertificateBuilder()
         .subject_name(name).issuer_name(name)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(hours=1))
         .not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False,
                                      key_agreement=False, key_cert_sign=True, crl_sign=True,
                                      encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
         .add_extension(ski, critical=False))
    if constrained:
        doms = sorted(set(d.lower().rstrip(".") for d in domains))
        if not doms:
            raise ValueError("a name-constrained CA needs at least one domain")
        b = b.add_extension(x509.NameConstraints(
            permitted_subtrees=[x509.DNSName(d) for d in doms],
            excluded_subtrees=[x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                               x509.IPAddress(ipaddress.ip_network("::/0"))]), critical=True)
    return key, b.sign(key, hashes.SHA256())


def create_ca(directory: str | os.PathLike[str], domains: Iterable[str], *, constrained: bool = True,
              force: bool = False, hostname: str | None = None) -> CAInfo:
    """Create the CA files in `directory` (0700).  Refuses to overwrite unless `force`."""
    d = ensure_private_dir(Path(directory).expanduser())
    key_path = d / KEY_FILE
    if key_path.exists() and not force:
        raise CAExists(f"a CA already exists in {d} (use --force to replace it, then reinstall it)")
    if not constrained:
        for f in (KEY_FILE, CERT_FILE, CER_FILE, P12_FILE, "mitmproxy-ca.p12", META_FILE):
            (d / f).unlink(missing_ok=True)
        from mitmproxy.certs import CertStore
        CertStore.create_store(d, "mitmproxy", 2048)
        os.chmod(key_path, 0o600)
        info = load_ca(d)
        _write(d / META_FILE, json.dumps({"constrained": False, "domains": [],
                                          "subject": info.subject}, indent=1).encode(), 0o600)
        return info
    doms = list(domains)
    key, cert = build_ca(doms, hostname=hostname, constrained=True)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    (d / "mitmproxy-ca.p12").unlink(missing_ok=True)  # a stale key copy from an older CA
    _write(key_path, key_pem + cert.public_bytes(serialization.Encoding.PEM), 0o600)
    write_public_files(d, cert)
    info = load_ca(d)
    meta = {"constrained": True, "domains": list(info.domains), "subject": info.subject,
            "not_after": info.not_after.isoformat()}
    _write(d / META_FILE, json.dumps(meta, indent=1).encode(), 0o600)
    return info


def load_ca(directory: str | os.PathLike[str]) -> CAInfo:
    """Read the CA certificate of a confdir (FileNotFoundError if there is none)."""
    d = Path(directory).expanduser()
    key_path = d / KEY_FILE
    raw = key_path.read_bytes()
    cert = x509.load_pem_x509_certificates(raw)[0]
    cert_path = d / CERT_FILE
    if not cert_path.exists():  # mitmproxy writes none for a custom CA
        write_public_files(d, cert)
    domains: tuple[str, ...] = ()
    constrained = False
    try:
        nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
        constrained = True
        domains = tuple(str(g.value) for g in (nc.permitted_subtrees or ()) if isinstance(g, x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CAInfo(d, cert_path, key_path, str(cn[0].value) if cn else cert.subject.rfc4514_string(),
                  constrained, domains, cert.not_valid_after_utc)


def ensure_ca(directory: str | os.PathLike[str], domains: Iterable[str]) -> tuple[CAInfo, bool]:
    """Load the CA, creating a constrained one if none exists.  Returns (info, created)."""
    d = ensure_private_dir(Path(directory).expanduser())
    if (d / KEY_FILE).exists():
        os.chmod(d / KEY_FILE, 0o600)
        return load_ca(d), False
    return create_ca(d, domains), True
