import json
import time
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
    """addons/exifguard_addon.py (hand-run mitmdump) runs the very script `exifguard run` passes
    (the guard's install() and the fail-closed fallback live there only)."""
    import runpy
    root = Path(__file__).resolve().parents[2]
    repo = root / "addons" / "exifguard_addon.py"
    packaged = cli.script_path()
    assert "from exifguard.proxy.guard import install" in packaged.read_text()
    assert "addons = install()" in packaged.read_text()
    assert "mitmdump_script.py" in repo.read_text() and "runpy.run_path" in repo.read_text()
    script = repo.parent.parent / "src" / "exifguard" / "proxy" / "mitmdump_script.py"
    assert script.resolve() == packaged.resolve()
    loaded = runpy.run_path(str(repo))["addons"]
    assert [type(a).__name__ for a in loaded] == [type(a).__name__ for a in runpy.run_path(str(packaged))["addons"]]


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


# ---- exifguard run: options after --, readiness, body size, printed commands -------------
# (real `exifguard run` processes in front of the local sink; these reproduce issue 11's
# "options passed as the README documents turn cleaning off")
import io  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402

from .harness import start_proxy  # noqa: E402
from .sink import Sink  # noqa: E402

PUT_URL = "https://files.oaiusercontent.com/files/abc/raw?se=2030&sp=w&sig=SECRETSIG"
HANG = 90


def truncated_jpeg() -> bytes:
    """A JPEG with GPS that ends inside its Exif segment: no safe rewrite exists."""
    import piexif
    from PIL import Image
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"CanaryCam"},
                        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N",
                                piexif.GPSIFD.GPSLatitude: ((48, 1), (51, 1), (0, 1))}})
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "JPEG", exif=exif)
    data = buf.getvalue()
    return data[:data.find(b"Exif\x00\x00") + 100]


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    s = Sink(tmp_path_factory.mktemp("sink"))
    yield s
    s.close()


def put(proxy, body: bytes, url: str = PUT_URL):
    httpx = pytest.importorskip("httpx")
    with httpx.Client(proxy=proxy.url, verify=str(proxy.ca), timeout=60) as c:
        return c.put(url, content=body, headers={"content-type": "image/jpeg"})


@pytest.mark.parametrize("extra", [["--set", "exifguard_on_error=block"],
                                   ["--set", "exifguard_mode=strip"],
                                   ["--set", "exifguard_audit_log={tmp}/other.jsonl"]],
                         ids=["on_error=block", "mode=strip", "audit_log"])
def test_exifguard_options_after_dashdash_take_effect_and_block(tmp_path, sink, extra):
    """Before: run passed its own --set for these too, mitmproxy got two values, dropped the
    whole script silently, and the truncated JPEG reached the service.  Now: blocked, logged."""
    extra = [x.replace("{tmp}", str(tmp_path)) for x in extra]
    p = start_proxy(tmp_path, sink.port, sink.cert, extra=extra, audit_flag="exifguard_audit_log" not in extra[1])
    try:
        sink.clear()
        r = put(p, truncated_jpeg())
        assert r.status_code == 422 and r.text.startswith("exifguard blocked this upload")
        assert sink.received == []
        assert p.wait_for("BLOCKED files.oaiusercontent.com image (JPEG")
        if "audit_log" in extra[1]:
            rec = json.loads((tmp_path / "other.jsonl").read_text().splitlines()[-1])
            assert rec["action"] == "blocked"
    finally:
        assert p.stop() == 0, p.output()


def test_mode_audit_after_dashdash_takes_effect_and_says_so(tmp_path, sink):
    p = start_proxy(tmp_path, sink.port, sink.cert, extra=["--set", "exifguard_mode=audit"])
    try:
        assert "mode:            audit (AUDIT ONLY: images are forwarded UNCHANGED)" in p.output()
        sink.clear()
        data = truncated_jpeg()
        assert put(p, data).status_code == 201       # what audit mode means, and it is logged
        assert sink.last().body == data
        assert p.wait_for("exifguard: files.oaiusercontent.com image (JPEG")
    finally:
        assert p.stop() == 0, p.output()


def run_cli(*args: str, cwd: Path | None = None, timeout: float = HANG) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exifguard.cli", "run", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


@pytest.mark.parametrize("args,needle", [
    (["--", "--set", "exifguard_mode=bogus"], "exifguard_mode: 'bogus' is not one of strip, audit, block"),
    (["--", "--set", "exifguard_on_error=maybe"], "exifguard_on_error: 'maybe' is not one of block, pass"),
    (["--", "--set", "exifguard_mod=audit"], "unknown option exifguard_mod after --set"),
    (["--mode", "strip", "--", "--set", "exifguard_mode=audit"],
     "exifguard_mode is given twice with different values: --mode strip"),
    (["--audit-log", "/tmp/a.jsonl", "--", "--set", "exifguard_audit_log=/tmp/b.jsonl"], "given twice"),
    (["--", "--set", "exifguard_selftest_token=x"], "exifguard_selftest_token cannot be set after --"),
    (["--", "--set", "body_size_limit=1g"], "body_size_limit after -- must be one size of at most"),
    (["--", "--set", "stream_large_bodies=1m"], "stream_large_bodies cannot be used with exifguard"),
    (["--", "--listen-host", "0.0.0.0"], "use --host instead"),
    (["--", "--set", "confdir=/tmp"], "use --certs instead"),
], ids=["bad-mode", "bad-on-error", "misspelled", "mode-twice", "audit-log-twice", "reserved",
        "body-too-big", "stream", "listen-host", "confdir"])
def test_bad_run_options_stop_before_anything_starts(tmp_path, args, needle):
    certs = tmp_path / "certs"
    p = run_cli("--certs", str(certs), "--port", "0", "--pac-port", "-1", *args)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out
    assert needle in out
    assert "exifguard proxy:" not in out and not certs.exists()


@pytest.mark.parametrize("config,args,needle,rc", [
    ("exifguard_mode: audit\n", ["--mode", "strip"], "exifguard_mode is 'audit' in the running mitmdump", 1),
    ("exifguard_mode: bogus\n", [], "'bogus' is not one of strip, audit, block", 1),
    ("exifguard_mod: audit\n", [], "unknown option exifguard_mod", 1),
    ("exifguard_hosts: [upload.example.net]\n", [], "exifguard_hosts is ['upload.example.net']", 1),
    ("body_size_limit: 1g\n", [], "body_size_limit is '1g' in the running mitmdump", 1),
], ids=["conflict", "bad-value", "misspelled", "hosts-not-intercepted", "body-limit"])
def test_config_yaml_in_the_certs_folder_cannot_turn_cleaning_off(tmp_path, config, args, needle, rc):
    certs = tmp_path / "certs"
    certs.mkdir(mode=0o700)
    (certs / "config.yaml").write_text(config)
    p = run_cli("--certs", str(certs), "--port", "0", "--pac-port", "-1", *args)
    out = p.stdout + p.stderr
    assert p.returncode == rc, out
    assert needle in out
    assert "stop: Ctrl-C" not in out and not (certs / "run.json").exists()


def test_config_yaml_value_takes_effect_when_nothing_else_sets_it(tmp_path, sink):
    certs = tmp_path / "certs"
    certs.mkdir(mode=0o700)
    (certs / "config.yaml").write_text("exifguard_mode: block\n")
    p = start_proxy(tmp_path, sink.port, sink.cert, certs=certs)
    try:
        assert "mode:            block (every image upload is refused)" in p.output()
    finally:
        assert p.stop() == 0


def test_unusable_audit_log_stops_the_run(tmp_path):
    (tmp_path / "a-file").write_text("")  # its "subfolder" cannot be created, even by root
    p = run_cli("--certs", str(tmp_path / "certs"), "--port", "0", "--pac-port", "-1", "--",
                "--set", f"exifguard_audit_log={tmp_path}/a-file/audit.jsonl")
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "cannot open exifguard audit log" in out and "stop: Ctrl-C" not in out


def test_host_lists_from_flags_and_dashdash_are_merged(tmp_path, sink):
    """mitmproxy cannot parse `--set` lists of a typing.Sequence option; the guard types them."""
    p = start_proxy(tmp_path, sink.port, sink.cert, "--add-host", "upload.example.net",
                    extra=["--set", "exifguard_hosts=*.example.org"])
    try:
        out = p.output()
        assert "--add-host upload.example.net --add-host '*.example.org'" in out  # the PAC command
        pac = (p.certs / "proxy.pac").read_text()
        assert "upload.example.net" in pac and "example.org" in pac
    finally:
        assert p.stop() == 0, p.output()


def test_default_body_size_limit_is_the_inspection_limit(tmp_path):
    from exifguard.carriers import CarrierOptions
    from exifguard.cli import run
    args = main.__globals__["build_parser"]().parse_args(["run", "--certs", str(tmp_path)])
    plan = run.plan_options(args, tmp_path, run.parse_passthrough([]))
    assert plan.body_size_limit == str(CarrierOptions().max_body_bytes) == str(256 * 2**20)
    plan = run.plan_options(args, tmp_path, run.parse_passthrough(["--set", "body_size_limit=1m"]))
    assert plan.body_size_limit is None and plan.body_limit_bytes == 2**20  # the user's stays


def test_bodies_over_body_size_limit_are_refused_by_mitmproxy(tmp_path, sink):
    p = start_proxy(tmp_path, sink.port, sink.cert, extra=["--set", "body_size_limit=1m"])
    try:
        sink.clear()
        httpx = pytest.importorskip("httpx")
        try:
            r = put(p, b"\x00" * (2 * 2**20))
            assert r.status_code == 413
        except httpx.HTTPError:
            pass  # the connection was closed on the client: also a refusal
        assert sink.received == []
        sink.clear()
        assert put(p, b"\x00" * 1000).status_code == 201  # under the limit: forwarded
    finally:
        assert p.stop() == 0, p.output()


# ---- every printed command runs as printed ------------------------------------------------
def _setup_pending(root: Path) -> bool:
    """Would ./scripts/exifguard (re)install the venv first?  (Its own condition.)"""
    marker = root / ".venv" / ".installed"
    return not (root / ".venv" / "bin" / "exifguard").exists() or not marker.exists() \
        or (root / "pyproject.toml").stat().st_mtime > marker.stat().st_mtime


def _stand_in_checkout(tmp: Path, root: Path) -> Path:
    """A copy of the checkout's entry points whose venv is already set up (links to ours), so
    `./scripts/exifguard ...` runs as printed without the first-run pip install."""
    d = tmp / "checkout"
    (d / "scripts").mkdir(parents=True)
    (d / "scripts" / "exifguard").write_bytes((root / "scripts" / "exifguard").read_bytes())
    (d / "scripts" / "exifguard").chmod(0o755)
    (d / "pyproject.toml").write_text("")
    (d / ".venv" / "bin").mkdir(parents=True)
    (d / ".venv" / "bin" / "python").symlink_to(root / ".venv" / "bin" / "python")
    (d / ".venv" / "bin" / "exifguard").symlink_to(Path(sys.executable).with_name("exifguard"))
    time.sleep(0.01)
    (d / ".venv" / ".installed").write_text("")
    return d


def printed_commands(output: str) -> dict[str, str]:
    lines = output.splitlines()
    found = {}
    for i, line in enumerate(lines):
        if "install it once" in line:
            found["cert"] = lines[i + 1].strip()
        elif line.strip().startswith("chromium --proxy-pac-url="):
            found["chromium"] = line.strip()
        elif line.startswith("check it works:"):
            found["selftest"] = lines[i + 1].strip()
    return found


def test_printed_commands_run_as_printed(tmp_path, sink):
    """The banner's commands, run literally with bash.  Before: `exifguard` was not on PATH in a
    checkout, `$(exifguard pac --data-url ...)` was empty and Chromium went DIRECT."""
    import base64
    import shutil
    import time as _t  # noqa: F401
    root = Path(__file__).resolve().parents[2]
    p = start_proxy(tmp_path, sink.port, sink.cert, cwd=root)
    try:
        cmds = printed_commands(p.output())
        assert set(cmds) == {"cert", "chromium", "selftest"}, p.output()
        assert all(c.startswith(("./scripts/exifguard ", "chromium ")) for c in cmds.values())
        cwd = root if not _setup_pending(root) else _stand_in_checkout(tmp_path, root)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        env["PATH"] = "/usr/bin:/bin"  # no venv on PATH: the printed prefix must do it alone
        env["HOME"] = str(tmp_path / "home")
        # chromium replaced by a function that prints its arguments
        r = subprocess.run(["bash", "-c", 'chromium() { printf "%s\\n" "$@"; }; ' + cmds["chromium"]],
                           capture_output=True, text=True, cwd=cwd, env=env, timeout=HANG)
        assert r.returncode == 0, r.stderr
        url = r.stdout.strip().split("=", 1)[1]
        assert url.startswith("data:application/x-ns-proxy-autoconfig;base64,"), r.stdout + r.stderr
        pac = base64.b64decode(url.split(",", 1)[1]).decode()
        assert f"PROXY 127.0.0.1:{p.port}" in pac and "claude.ai" in pac
        r = subprocess.run(["bash", "-c", cmds["cert"] + " --dry-run"], capture_output=True, text=True,
                           cwd=cwd, env=env, timeout=HANG)
        assert r.returncode == 0 and "certutil" in r.stdout, r.stdout + r.stderr
        r = subprocess.run(["bash", "-c", cmds["selftest"]], capture_output=True, text=True, cwd=cwd,
                           env=env, timeout=HANG)
        assert r.returncode == 0 and "selftest passed" in r.stdout, r.stdout + r.stderr
    finally:
        assert p.stop() == 0, p.output()
    if shutil.which("exifguard") is None:
        assert "exifguard" not in os.environ.get("PATH", "").split(os.pathsep)


def test_command_prefix_rules(tmp_path, monkeypatch):
    from exifguard.cli import locations
    root = Path(__file__).resolve().parents[2]
    assert locations.command_prefix(cwd=root) == "./scripts/exifguard"
    assert locations.command_prefix(cwd=tmp_path) == str(root / "scripts" / "exifguard")
    monkeypatch.setattr(locations, "repo_root", lambda: None)  # an installed exifguard
    script = locations.console_script()
    monkeypatch.setenv("PATH", str(script.parent))
    assert locations.command_prefix() == "exifguard"
    monkeypatch.setenv("PATH", "/nonexistent")
    assert locations.command_prefix() == str(script)


def test_help_and_error_messages_use_the_prefix(tmp_path, capsys):
    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-m", "exifguard.cli", "run", "--help"], capture_output=True,
                       text=True, cwd=root, timeout=HANG)
    assert p.stdout.startswith("usage: ./scripts/exifguard run")
    p = subprocess.run([sys.executable, "-m", "exifguard.cli", "selftest", "--certs", str(tmp_path)],
                       capture_output=True, text=True, cwd=root, timeout=HANG)
    assert f"./scripts/exifguard run --certs {tmp_path}" in p.stderr
    p = subprocess.run([sys.executable, "-m", "exifguard.cli", "cert", "path", "--certs", str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=HANG)
    assert f"{root}/scripts/exifguard cert create --certs {tmp_path}" in p.stderr
