import datetime as dt
import os
import shutil
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from exifguard.proxy import ca
from exifguard.proxy.hosts import HostSet


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ca") / "certs"
    ca.create_ca(d, HostSet.build().domains(), hostname="testbox")
    return d


def test_files_modes_and_subject(ca_dir):
    assert mode(ca_dir) == 0o700
    assert mode(ca_dir / ca.KEY_FILE) == 0o600
    assert mode(ca_dir / ca.CERT_FILE) == 0o644
    key_pem = (ca_dir / ca.KEY_FILE).read_bytes()
    assert b"PRIVATE KEY" in key_pem and b"CERTIFICATE" in key_pem
    assert b"PRIVATE KEY" not in (ca_dir / ca.CERT_FILE).read_bytes()
    assert (ca_dir / ca.CER_FILE).read_bytes() == (ca_dir / ca.CERT_FILE).read_bytes()
    cert = x509.load_pem_x509_certificate((ca_dir / ca.CERT_FILE).read_bytes())
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn.startswith("exifguard local CA (testbox, ") and cn.endswith(")")
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=364) < life < dt.timedelta(days=367)


def test_name_constraints_critical_with_permitted_dns_and_no_ips(ca_dir):
    cert = x509.load_pem_x509_certificate((ca_dir / ca.CERT_FILE).read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert ext.critical
    permitted = {g.value for g in ext.value.permitted_subtrees}
    assert {"claude.ai", "oaiusercontent.com", "api.openai.com", "api.anthropic.com",
            "mistralaichatupprodswe.blob.core.windows.net"} <= permitted
    assert "chatgpt.com" not in permitted and "google.com" not in permitted
    # shared storage and whole sites are opt-in: not even the CA covers them by default
    assert not {"blob.core.windows.net", "sharepoint.com", "s3.amazonaws.com", "huggingface.co",
                "api.cloudinary.com", "snssdk.com", "volces.com"} & permitted
    excluded = {str(g.value) for g in ext.value.excluded_subtrees}
    assert excluded == {"0.0.0.0/0", "::/0"}
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    info = ca.load_ca(ca_dir)
    assert info.constrained and info.covers("files.oaiusercontent.com") and not info.covers("bank.example")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")
def test_openssl_enforces_constraints_on_mitmproxy_leaves(ca_dir, tmp_path):
    """mitmproxy's own CertStore signs the leaves (as with upstream_cert=false): in scope
    verifies, out of scope fails with a name-constraint violation."""
    from mitmproxy.certs import CertStore
    store = CertStore.from_store(ca_dir, "mitmproxy", 2048)
    results = {}
    for host in ("claude.ai", "files.oaiusercontent.com", "www.example.com"):
        entry = store.get_cert(host, [x509.DNSName(host)])
        leaf = tmp_path / f"{host}.pem"
        leaf.write_bytes(entry.cert.to_pem())
        p = subprocess.run(["openssl", "verify", "-CAfile", str(ca_dir / ca.CERT_FILE), "-purpose", "sslserver",
                            str(leaf)], capture_output=True, text=True)
        results[host] = (p.returncode, p.stdout + p.stderr)
    assert results["claude.ai"][0] == 0, results["claude.ai"]
    assert results["files.oaiusercontent.com"][0] == 0
    assert results["www.example.com"][0] != 0 and "subtree" in results["www.example.com"][1].lower()


def test_refuses_to_overwrite_and_force_replaces(ca_dir, tmp_path):
    d = tmp_path / "c"
    first = ca.create_ca(d, ["claude.ai"])
    with pytest.raises(ca.CAExists):
        ca.create_ca(d, ["claude.ai"])
    second = ca.create_ca(d, ["claude.ai"], force=True)
    k1 = first.cert_path.read_bytes()
    assert second.cert_path.read_bytes() != b"" and k1 != (d / ca.KEY_FILE).read_bytes()


def test_ensure_ca_tightens_and_creates(tmp_path):
    d = tmp_path / "e"
    info, created = ca.ensure_ca(d, ["claude.ai"])
    assert created and info.constrained
    os.chmod(d / ca.KEY_FILE, 0o644)
    os.chmod(d, 0o755)
    info2, created2 = ca.ensure_ca(d, ["claude.ai"])
    assert not created2 and mode(d / ca.KEY_FILE) == 0o600 and mode(d) == 0o700


def test_unconstrained_uses_mitmproxy_ca(tmp_path):
    info = ca.create_ca(tmp_path / "u", [], constrained=False)
    assert not info.constrained and info.covers("anything.example")
    assert mode(info.key_path) == 0o600
    cert = x509.load_pem_x509_certificate(info.cert_path.read_bytes())
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.NameConstraints)
    serialization.load_pem_private_key(info.key_path.read_bytes(), None)
