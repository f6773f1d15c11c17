"""Rough edges a new user hit in the first hour (issue 12, item 7): the proxy commands.

The offline ones (scrub into a folder, a missing output folder, file modes, Orientation
in `inspect`) are in test_files.py; the PAC server's HEAD in tests/proxy/test_pac.py;
the report's selftest wording in tests/proxy/test_audit.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from exifguard.cli import build_parser, main
from exifguard.cli import proxy as cli
from exifguard.proxy import install


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # noqa: SLF001 - argparse has no public accessor
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_command_and_argument_has_a_description() -> None:
    subs = _subparsers(build_parser())
    assert {"cert", "pac", "report", "selftest", "addon-path"} <= set(subs)
    missing = []
    for name, p in subs.items():
        if not p.description:
            missing.append(f"{name}: no description")
        for a in p._actions:  # noqa: SLF001
            if not a.help and not isinstance(a, argparse._HelpAction):  # noqa: SLF001
                missing.append(f"{name} {'/'.join(a.option_strings) or a.dest}: no help")
    assert missing == []


def test_cert_without_an_action_lists_the_actions(tmp_path: Path, capsys) -> None:
    assert main(["cert", "--certs", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "required: action" not in err
    for action in ("install", "uninstall", "create", "reissue", "path"):
        assert f"cert {action}" in err
    assert not (tmp_path / "c").exists()  # nothing created on the way


@pytest.mark.skipif(shutil.which("certutil") is None, reason="certutil missing (libnss3-tools)")
def test_cert_uninstall_says_when_nothing_was_installed(tmp_path: Path, capsys) -> None:
    certs, db = tmp_path / "certs", tmp_path / "profile"
    db.mkdir()
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True, capture_output=True)
    assert main(["cert", "create", "--certs", str(certs)]) == 0
    capsys.readouterr()
    assert main(["cert", "uninstall", "--certs", str(certs), "--nssdb", str(db)]) == 0
    out = capsys.readouterr().out
    assert "CA removed" not in out
    assert "not installed" in out and "nothing was removed" in out and str(db) in out
    # and after a real install, uninstall does say removed
    assert main(["cert", "install", "--certs", str(certs), "--nssdb", str(db)]) == 0
    capsys.readouterr()
    assert main(["cert", "uninstall", "--certs", str(certs), "--nssdb", str(db)]) == 0
    out = capsys.readouterr().out
    assert "CA removed" in out and "not installed" not in out


def test_uninstall_message_names_the_stores_it_was_missing_from() -> None:
    a = install.nss_uninstall(Path("/a"))[0]
    b = install.nss_uninstall(Path("/b"))[0]
    assert "not installed" in cli._uninstalled("nss", [a, b], [a, b])  # noqa: SLF001
    msg = cli._uninstalled("nss", [a, b], [b])  # noqa: SLF001
    assert msg.startswith("exifguard: CA removed") and "not installed in: /b" in msg


def test_snap_chromium_nss_database_is_found(tmp_path: Path) -> None:
    snap_db = tmp_path / "snap" / "chromium" / "current" / ".pki" / "nssdb"
    snap_db.mkdir(parents=True)
    (snap_db / "cert9.db").write_bytes(b"")
    assert install.nss_targets(tmp_path) == [snap_db]
    steps = install.plan("install", "nss", cert=Path("/ca.pem"), cer=Path("/ca.cer"), subject="s",
                         home=tmp_path)
    assert any(f"sql:{snap_db}" in s.argv for s in steps)


def _hold_run_lock(certs: Path, proxy: str):
    """Pretend `exifguard run` is running on `proxy` with this certs folder."""
    from exifguard.cli import instance
    certs.mkdir(parents=True, exist_ok=True)
    (certs / cli.RUN_STATE).write_text(json.dumps({"proxy": proxy}))
    lock = instance.InstanceLock(certs / instance.LOCK_NAME)
    assert lock.acquire() is None
    return lock


def test_pac_points_at_the_running_proxy(tmp_path: Path, capsys) -> None:
    certs = tmp_path / "certs"
    lock = _hold_run_lock(certs, "127.0.0.1:18123")
    try:
        assert main(["pac", "--certs", str(certs)]) == 0
        assert 'PROXY 127.0.0.1:18123"' in capsys.readouterr().out
        assert main(["pac", "--certs", str(certs), "--proxy", "127.0.0.1:9"]) == 0  # explicit wins
        assert 'PROXY 127.0.0.1:9"' in capsys.readouterr().out
    finally:
        lock.release()
    # a run.json left by a run that died (nobody holds the lock) is not believed
    assert main(["pac", "--certs", str(certs)]) == 0
    assert 'PROXY 127.0.0.1:8080"' in capsys.readouterr().out


def test_ipv6_proxy_addresses_are_bracketed(capsys) -> None:
    from exifguard.proxy import pac
    assert pac.hostport("::1", 8080) == "[::1]:8080"
    assert pac.hostport("127.0.0.1", 8080) == "127.0.0.1:8080"
    assert main(["pac", "--proxy", "::1:8080"]) == 0
    out = capsys.readouterr().out
    assert 'PROXY [::1]:8080"' in out and "PROXY ::1" not in out


def test_addon_path_prints_the_packaged_mitmdump_script(capsys) -> None:
    assert main(["addon-path"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.is_absolute() and path.is_file() and path == cli.script_path()
    assert "addons = install()" in path.read_text()


def test_no_arguments_runs_the_proxy(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(cli, "cmd_run", lambda args: seen.append(args) or 0)
    monkeypatch.setattr("sys.argv", ["exifguard"])
    assert main() == 0 and main([]) == 0
    assert len(seen) == 2 and seen[0].port == 8080 and seen[0].host == "127.0.0.1"


def test_selftest_names_tags_as_the_audit_log_does() -> None:
    from exifguard.engine import scrub
    from exifguard.proxy import selftest
    jpeg = selftest.canary_jpeg("EXIFGUARD-CANARY-0123456789abcdef")
    names = selftest.exif_tag_names(jpeg)
    assert "GPSInfo" in names and "GPSTag" not in names and "ExifTag" not in names
    assert set(names) == set(scrub(jpeg).tags)  # the engine's names, which the audit log records
