import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from exifguard.cli import main
from exifguard.cli import proxy as cli
from exifguard.proxy.hosts import HostSet


def test_mitmdump_args_scope_and_safety(tmp_path):
    from exifguard.cli import run
    hosts = HostSet.build(extra=["*.example.org"])
    a = run.build_mitmdump_args(host="127.0.0.1", port=8080, certs=tmp_path, hosts=hosts, constrained=True,
                                exifguard_sets=["exifguard_hosts=*.example.org",
                                                f"exifguard_audit_log={tmp_path / 'a.jsonl'}"],
                                token="tok", passthrough=["--set", "x=1"], ready_file=tmp_path / "r.json",
                                body_size_limit="268435456")
    assert a[:4] == ["--listen-host", "127.0.0.1", "--listen-port", "8080"]
    script = Path(a[a.index("-s") + 1])
    assert script.is_file() and "install()" in script.read_text()
    sets = [a[i + 1] for i, x in enumerate(a) if x == "--set"]
    for want in (f"confdir={tmp_path}", "upstream_cert=false", "connection_strategy=lazy", "onboarding=false",
                 "exifguard_hosts=*.example.org", f"exifguard_audit_log={tmp_path / 'a.jsonl'}",
                 "exifguard_selftest_token=tok", f"exifguard_ready_file={tmp_path / 'r.json'}",
                 "body_size_limit=268435456"):
        assert want in sets
    assert "exifguard_allow_remote=true" not in sets
    allow = [a[i + 1] for i, x in enumerate(a) if x == "--allow-hosts"]
    assert allow == hosts.allow_hosts() and "^(.+\\.)?example\\.org:443$" in allow
    assert a[-2:] == ["--set", "x=1"]  # passthrough last, unchanged
    b = run.build_mitmdump_args(host="0.0.0.0", port=1, certs=tmp_path, hosts=hosts, constrained=False,
                                exifguard_sets=[], token="", passthrough=[])
    sets_b = [b[i + 1] for i, x in enumerate(b) if x == "--set"]
    assert "upstream_cert=false" not in sets_b
    assert not any(s.startswith("exifguard_audit_log") for s in sets_b)
    # mitmdump's own flow lines would print signed upload URLs: off unless asked for
    assert "flow_detail=0" in sets and "flow_detail=0" in sets_b
    c = run.build_mitmdump_args(host="127.0.0.1", port=1, certs=tmp_path, hosts=hosts, constrained=True,
                                exifguard_sets=[], token="", passthrough=["--set", "flow_detail=2"])
    assert [x for x in c if x.startswith("flow_detail")] == ["flow_detail=2"]


def test_mitmdump_found_and_certs_default():
    cmd = cli.mitmdump_command()
    assert Path(cmd[0]).exists()
    assert cli.default_certs_dir() == Path(__file__).resolve().parents[2] / "certs"


def test_repo_addon_script_is_the_packaged_one():
    """addons/exifguard_addon.py (hand-run mitmdump) and the script `exifguard run` passes share
    their code: the guard's install() and the fail-closed fallback."""
    root = Path(__file__).resolve().parents[2]
    repo = (root / "addons" / "exifguard_addon.py").read_text()
    packaged = cli.script_path().read_text()
    body = lambda t: t[t.index('"""', 3) + 3:].strip()  # noqa: E731 - code after the docstring
    assert body(repo) == body(packaged)
    assert "from exifguard.proxy.guard import install" in repo and "addons = install()" in repo


def test_run_options_lists_exifguard_options(capsys):
    assert main(["run", "--options"]) == 0
    out = capsys.readouterr().out
    for name in ("exifguard_hosts:", "exifguard_hosts_remove:", "exifguard_mode: strip", "exifguard_on_error: block",
                 "exifguard_audit_log:", "exifguard_log_values: false", "exifguard_rename_files: false",
                 "exifguard_keep_icc: true", "stream_large_bodies:"):
        assert name in out


def test_cert_create_path_and_dry_run(tmp_path, capsys):
    certs = tmp_path / "certs"
    assert main(["cert", "create", "--certs", str(certs)]) == 0
    assert stat.S_IMODE(os.stat(certs / "mitmproxy-ca.pem").st_mode) == 0o600
    assert main(["cert", "create", "--certs", str(certs)]) == 1  # refuses to overwrite
    capsys.readouterr()
    assert main(["cert", "path", "--certs", str(certs)]) == 0
    assert capsys.readouterr().out.strip() == str(certs / "mitmproxy-ca-cert.pem")
    db = tmp_path / "nss"
    assert main(["cert", "install", "--certs", str(certs), "--nssdb", str(db), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"certutil -A -d sql:{db} -t C,, -n 'exifguard CA' -i {certs / 'mitmproxy-ca-cert.pem'}" in out
    assert f"certutil -N -d sql:{db} --empty-password" in out
    assert not db.exists()  # dry run touched nothing
    for target, needle in (("system", "update-ca-"), ("macos", "security add-trusted-cert -r trustRoot"),
                           ("windows", "certutil -user -addstore Root")):
        assert main(["cert", "install", "--certs", str(certs), "--target", target, "--dry-run"]) == 0
        assert needle in capsys.readouterr().out
    assert main(["cert", "uninstall", "--certs", str(certs), "--target", "macos", "--dry-run"]) == 0
    assert "security delete-certificate -c 'exifguard local CA (" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("certutil") is None, reason="certutil missing")
def test_cert_install_and_uninstall_in_a_real_nss_db(tmp_path, capsys):
    certs, db = tmp_path / "certs", tmp_path / "profile"
    assert main(["cert", "install", "--certs", str(certs), "--nssdb", str(db)]) == 0
    listing = subprocess.run(["certutil", "-L", "-d", f"sql:{db}"], capture_output=True, text=True).stdout
    assert "exifguard CA" in listing and "C,," in listing
    assert main(["cert", "install", "--certs", str(certs), "--nssdb", str(db)]) == 0  # idempotent
    listing = subprocess.run(["certutil", "-L", "-d", f"sql:{db}"], capture_output=True, text=True).stdout
    assert listing.count("exifguard CA") == 1
    assert main(["cert", "uninstall", "--certs", str(certs), "--nssdb", str(db)]) == 0
    listing = subprocess.run(["certutil", "-L", "-d", f"sql:{db}"], capture_output=True, text=True).stdout
    assert "exifguard CA" not in listing


def test_pac_command(tmp_path, capsys):
    out = tmp_path / "p.pac"
    assert main(["pac", "-o", str(out), "--proxy", "127.0.0.1:9999", "--add-host", "upload.example.net"]) == 0
    text = out.read_text()
    assert 'PROXY 127.0.0.1:9999"' in text and "upload.example.net" in text and "DIRECT" in text
    assert main(["pac", "--proxy", "bad"]) == 2


def test_report_command(tmp_path, capsys):
    from exifguard.proxy.audit import AuditLog, ImageRecord
    log = tmp_path / "audit.jsonl"
    a = AuditLog(log)
    for i in range(3):
        a.write(ImageRecord("claude.ai", "/u", "POST", f"r{i}", "raw body", "JPEG", 10, "blocked", error="x"))
    a.close()
    assert main(["report", "--audit-log", str(log), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["images"] == 3 and s["actions"]["blocked"] == 3 and s["by_site"]["claude.ai"]["images"] == 3
    assert main(["report", "--audit-log", str(log)]) == 0
    assert "blocked 3" in capsys.readouterr().out
    assert main(["report", "--audit-log", str(tmp_path / "none.jsonl")]) == 1


def test_selftest_without_running_proxy_says_so(tmp_path, capsys):
    assert main(["selftest", "--certs", str(tmp_path)]) == 1
    assert "exifguard run" in capsys.readouterr().err
