"""`exifguard service`: the generated definitions for Linux, macOS and Windows, their
validation with the platforms' own tools where Debian has them, the dry-run text, and
install/uninstall/status with a fake command runner and a temporary HOME.

Nothing here touches this machine's systemd or launchd: the CLI's runner is replaced by
a recorder for every test (an unexpected real call fails the test).
"""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from exifguard.cli import build_parser, main
from exifguard.cli import service as cli_service
from exifguard.cli.locations import command_prefix
from exifguard.desktop import service as svc

NS = {"t": svc.TASK_NS}


def linux_cfg(home: str = "/home/ana", **kw) -> svc.ServiceConfig:
    base = dict(platform="linux", program=(sys.executable, "-P", "-m", "exifguard.cli"),
                certs=f"{home}/.config/exifguard/certs", home=home)
    base.update(kw)
    return svc.ServiceConfig(**base)


def mac_cfg(**kw) -> svc.ServiceConfig:
    base = dict(platform="macos", program=("/Users/ana/.local/pipx/venvs/exifguard/bin/exifguard",),
                certs="/Users/ana/.config/exifguard/certs", home="/Users/ana", uid=501)
    base.update(kw)
    return svc.ServiceConfig(**base)


def win_cfg(**kw) -> svc.ServiceConfig:
    base = dict(platform="windows",
                program=(r"C:\Users\Ana Lima\pipx\venvs\exifguard\Scripts\pythonw.exe", "-P", "-m", "exifguard.cli"),
                certs=r"C:\Users\Ana Lima\.config\exifguard\certs", home=r"C:\Users\Ana Lima",
                env={"LOCALAPPDATA": r"C:\Users\Ana Lima\AppData\Local"}, user="LAPTOP\\ana")
    base.update(kw)
    return svc.ServiceConfig(**base)


# ---- Linux ----------------------------------------------------------------------------------
def test_linux_unit_runs_this_exifguard_with_everything_pinned():
    cfg = linux_cfg(port=8090, mode="audit", env={"XDG_CONFIG_HOME": "/cfg", "XDG_STATE_HOME": "/state"})
    spec = svc.definition(cfg)
    assert spec.path == PurePosixPath("/cfg/systemd/user/exifguard.service")
    assert spec.mode == 0o644
    unit = spec.text
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = systemd_words(exec_line[len("ExecStart="):])
    assert argv == [sys.executable, "-P", "-m", "exifguard.cli", "run", "--certs", "/home/ana/.config/exifguard/certs",
                    "--port", "8090", "--mode", "audit", "--log-file", "/state/exifguard/exifguard.log"]
    for line in ("Restart=on-failure", "RestartSec=5", "StartLimitBurst=5", "StartLimitIntervalSec=120",
                 "KillMode=mixed", "UMask=0077", "NoNewPrivileges=yes", "WantedBy=default.target"):
        assert line in unit.splitlines()
    assert "User=" not in unit  # a user unit runs as the user: no privileges to drop or gain


def test_linux_folders_follow_xdg_and_ignore_relative_values():
    assert svc.definition_path(linux_cfg()) == PurePosixPath("/home/ana/.config/systemd/user/exifguard.service")
    assert svc.log_file(linux_cfg()) == PurePosixPath("/home/ana/.local/state/exifguard/exifguard.log")
    rel = linux_cfg(env={"XDG_CONFIG_HOME": "cfg", "XDG_STATE_HOME": "st"})  # the XDG rule: ignored
    assert svc.definition_path(rel) == svc.definition_path(linux_cfg())
    assert svc.log_file(rel) == svc.log_file(linux_cfg())


def systemd_words(exec_start: str) -> list[str]:
    """ExecStart= as systemd reads it (systemd.service "Command lines", systemd.unit
    "Specifiers"): a `%` not doubled is a specifier and a `$` not doubled a variable, both
    replaced by systemd, so neither may appear in what exifguard writes; `%%` and `$$` are
    literal; quoting and backslashes as in a shell's double quotes. (systemd-analyze verify
    does not resolve specifiers, so this is checked here.)"""
    out, i = [], 0
    while i < len(exec_start):
        c = exec_start[i]
        if c in "%$":
            assert exec_start[i + 1:i + 2] == c, f"unescaped {c} in {exec_start!r}"
            i += 2
        else:
            i += 1
        out.append(c)
    return shlex.split("".join(out))


def test_systemd_quoting_keeps_odd_paths_one_argument():
    odd = "/home/ana/my certs/100%$HOME\\x\"y"
    quoted = svc.systemd_quote(odd)
    assert systemd_words(quoted) == [odd]
    assert svc.systemd_quote("/plain/path") == "/plain/path"
    with pytest.raises(AssertionError, match="unescaped %"):
        systemd_words('"/a/100%x"')  # the check itself can fail


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed "
                                   "(Debian package: systemd); the unit is not validated by systemd here")


def _verify(unit_text: str, tmp: Path, user: bool) -> subprocess.CompletedProcess:
    d = tmp / "units"
    d.mkdir(exist_ok=True)
    f = d / svc.UNIT_NAME
    f.write_text(unit_text)
    env = dict(os.environ)
    argv = [SYSTEMD_ANALYZE]
    if user:
        runtime = tmp / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)  # a private one: never this machine's user manager
        argv.append("--user")
    return subprocess.run([*argv, "verify", str(f)], capture_output=True, text=True, env=env, timeout=120)


@needs_analyze
@pytest.mark.parametrize("user", [False, True], ids=["system-syntax", "user-manager"])
def test_systemd_analyze_verify_accepts_the_unit(tmp_path, user):
    odd = tmp_path / "my certs" / "50%$x"
    cfg = linux_cfg(home=str(tmp_path), certs=str(odd), pac_port=-1, mode="strip")
    r = _verify(svc.systemd_unit(cfg), tmp_path, user)
    if user and r.returncode != 0 and "Failed to initialize manager" in r.stderr:
        pytest.skip(f"systemd-analyze --user cannot start a manager here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr  # systemd only warns (exit 0) about bad lines: none allowed


@needs_analyze
def test_systemd_analyze_verify_would_catch_a_bad_unit(tmp_path):
    """The check above can fail: systemd-analyze complains about a wrong value or a missing program."""
    unit = svc.systemd_unit(linux_cfg(home=str(tmp_path)))
    r = _verify(unit.replace("Restart=on-failure", "Restart=sometimes"), tmp_path, False)
    assert "Restart" in r.stderr or "restart" in r.stderr
    r = _verify(unit.replace(f"ExecStart={sys.executable}", "ExecStart=/nonexistent/python"), tmp_path, False)
    assert r.returncode != 0 and "/nonexistent/python" in r.stderr


# ---- macOS ----------------------------------------------------------------------------------
def test_macos_launch_agent_round_trips_through_plistlib():
    cfg = mac_cfg(port=8090)
    spec = svc.definition(cfg)
    assert spec.path == PurePosixPath("/Users/ana/Library/LaunchAgents/org.exifguard.proxy.plist")
    d = plistlib.loads(spec.data())
    assert d["Label"] == svc.LAUNCHD_LABEL
    assert d["ProgramArguments"] == svc.run_argv(cfg) == [
        "/Users/ana/.local/pipx/venvs/exifguard/bin/exifguard", "run", "--certs", "/Users/ana/.config/exifguard/certs",
        "--port", "8090", "--log-file", "/Users/ana/Library/Logs/exifguard/exifguard.log"]
    assert d["RunAtLoad"] is True
    assert d["KeepAlive"] == {"SuccessfulExit": False}  # restarted after a failure, not after a clean stop
    assert d["ThrottleInterval"] >= 5
    assert d["Umask"] == 0o077
    assert "UserName" not in d and "StandardOutPath" not in d  # the user's own agent; output goes to the log
    # the label is reverse-DNS and matches the file name launchd expects
    assert spec.path.name == f"{d['Label']}.plist" and d["Label"].count(".") >= 2


def test_macos_commands_use_the_gui_domain_of_the_user():
    cfg = mac_cfg()
    plist = "/Users/ana/Library/LaunchAgents/org.exifguard.proxy.plist"
    assert [c.argv for c in svc.install_plan(cfg).commands] == [
        ("launchctl", "enable", "gui/501/org.exifguard.proxy"), ("launchctl", "bootstrap", "gui/501", plist)]
    assert svc.install_plan(cfg, replacing=True).commands[0].argv == ("launchctl", "bootout", "gui/501/org.exifguard.proxy")
    assert [c.argv for c in svc.uninstall_plan(cfg).commands] == [("launchctl", "bootout", "gui/501/org.exifguard.proxy")]
    assert svc.uninstall_plan(cfg).remove == (PurePosixPath(plist),)
    assert [c.argv for c in svc.status_plan(cfg).commands] == [("launchctl", "print", "gui/501/org.exifguard.proxy")]


# ---- Windows --------------------------------------------------------------------------------
def test_windows_task_xml_parses_and_has_what_a_logon_task_needs():
    cfg = win_cfg(port=8090)
    spec = svc.definition(cfg)
    assert spec.path == PureWindowsPath(r"C:\Users\Ana Lima\AppData\Local\exifguard\exifguard-task.xml")
    data = spec.data()
    assert data.startswith(b"\xff\xfe")  # UTF-16 LE with BOM, as Task Scheduler exports it
    root = ET.fromstring(data)
    assert root.tag == f"{{{svc.TASK_NS}}}Task"

    def text(path: str) -> str:
        el = root.find(path, NS)
        assert el is not None, path
        return el.text or ""
    assert text("t:Triggers/t:LogonTrigger/t:UserId") == "LAPTOP\\ana"   # this user's logon only
    assert text("t:Principals/t:Principal/t:UserId") == "LAPTOP\\ana"
    assert text("t:Principals/t:Principal/t:RunLevel") == "LeastPrivilege"  # no elevation
    assert text("t:Principals/t:Principal/t:LogonType") == "InteractiveToken"
    assert text("t:Settings/t:RestartOnFailure/t:Interval") == "PT1M"
    assert int(text("t:Settings/t:RestartOnFailure/t:Count")) >= 3
    assert text("t:Settings/t:Hidden") == "true"
    assert text("t:Settings/t:ExecutionTimeLimit") == "PT0S"  # the default would stop it after 72 h
    assert text("t:Settings/t:DisallowStartIfOnBatteries") == "false"
    assert text("t:Settings/t:MultipleInstancesPolicy") == "IgnoreNew"
    assert text("t:Actions/t:Exec/t:Command") == r"C:\Users\Ana Lima\pipx\venvs\exifguard\Scripts\pythonw.exe"
    args = text("t:Actions/t:Exec/t:Arguments")
    assert args == subprocess.list2cmdline(svc.run_argv(cfg)[1:])
    assert r'--certs "C:\Users\Ana Lima\.config\exifguard\certs"' in args  # a path with a space stays one argument
    assert r'--log-file "C:\Users\Ana Lima\AppData\Local\exifguard\logs\exifguard.log"' in args


def test_windows_commands_and_xml_escaping():
    cfg = win_cfg(user="R&D<1>\\ana")
    root = ET.fromstring(svc.definition(cfg).data())
    assert root.find("t:Triggers/t:LogonTrigger/t:UserId", NS).text == "R&D<1>\\ana"
    xml = str(svc.definition_path(cfg))
    assert [c.argv for c in svc.install_plan(cfg).commands] == [
        ("schtasks", "/Create", "/TN", "exifguard", "/XML", xml), ("schtasks", "/Run", "/TN", "exifguard")]
    assert svc.install_plan(cfg, replacing=True).commands[1].argv[-1] == "/F"
    assert [c.argv for c in svc.uninstall_plan(cfg).commands][-1] == ("schtasks", "/Delete", "/TN", "exifguard", "/F")
    assert svc.status_plan(cfg).commands[0].argv[:4] == ("schtasks", "/Query", "/TN", "exifguard")
    text = svc.format_plan(svc.install_plan(cfg))
    assert f'schtasks /Create /TN exifguard /XML "{xml}"' in text  # quoted as cmd.exe needs


# ---- all platforms --------------------------------------------------------------------------
def test_bad_configurations_are_clear_errors():
    with pytest.raises(svc.ServiceError, match="unknown platform 'beos'"):
        linux_cfg(platform="beos")
    with pytest.raises(svc.ServiceError, match="not supported on this system"):
        svc.current_platform("sunos5")
    assert [svc.current_platform(p) for p in ("linux", "darwin", "win32")] == ["linux", "macos", "windows"]
    with pytest.raises(svc.ServiceError, match="absolute"):
        linux_cfg(program=("exifguard",))  # never a PATH lookup in a definition
    with pytest.raises(svc.ServiceError, match="uid"):
        mac_cfg(uid=None)
    with pytest.raises(svc.ServiceError, match="absolute"):
        win_cfg(certs="/home/ana/certs")  # a POSIX path is not a Windows path


def test_preflight_names_what_to_do():
    cfg = linux_cfg()
    ok_env = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    svc.preflight(cfg, which=lambda n: f"/usr/bin/{n}", exists=lambda p: p.endswith("systemd/private"), env=ok_env)
    with pytest.raises(svc.ServiceError, match="autostart"):
        svc.preflight(cfg, which=lambda n: None, exists=lambda p: True, env=ok_env)
    with pytest.raises(svc.ServiceError, match="without sudo"):
        svc.preflight(cfg, which=lambda n: "/usr/bin/systemctl", exists=lambda p: True, env={})
    with pytest.raises(svc.ServiceError, match="no systemd user session"):
        svc.preflight(cfg, which=lambda n: "/usr/bin/systemctl", exists=lambda p: False, env=ok_env)
    with pytest.raises(svc.ServiceError, match="launchctl"):
        svc.preflight(mac_cfg(), which=lambda n: None, exists=lambda p: True, env={})
    with pytest.raises(svc.ServiceError, match="schtasks"):
        svc.preflight(win_cfg(), which=lambda n: None, exists=lambda p: True, env={})


def test_dry_run_text_runs_as_printed_in_a_shell(tmp_path):
    """The printed install plan, pasted into bash (with stand-in systemctl/launchctl that
    only record their arguments), writes exactly the definition and runs exactly the commands."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for tool in ("systemctl", "launchctl"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n')
        (bin_dir / tool).chmod(0o755)
    home = tmp_path / "home dir"  # a space: the printed lines must quote
    for cfg in (linux_cfg(home=str(home)), mac_cfg(home=str(home), certs=str(home / "certs"))):
        calls.unlink(missing_ok=True)
        plan = svc.install_plan(cfg)
        script = svc.format_plan(plan)
        assert "dry run, nothing is changed" in script
        r = subprocess.run(["bash", "-euc", script], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"))
        assert r.returncode == 0, r.stderr
        written = Path(str(svc.definition_path(cfg)))
        assert written.read_text() == svc.definition(cfg).text
        assert stat.S_IMODE(written.stat().st_mode) == 0o644
        assert calls.read_text().splitlines() == [" ".join(c.argv) for c in plan.commands]


def test_dry_run_shows_every_file_in_full_and_every_command():
    for cfg in (linux_cfg(), mac_cfg(), win_cfg()):
        for plan in (svc.install_plan(cfg), svc.uninstall_plan(cfg), svc.status_plan(cfg)):
            text = svc.format_plan(plan)
            for spec in plan.files:
                assert str(spec.path) in text and spec.text.rstrip("\n") in text
            for c in plan.commands:
                assert svc.command_line(cfg.platform, c.argv) in text
            for p in plan.remove:
                assert str(p) in text
            assert str(plan.log_file) in text


# ---- the command, with a fake runner and a temporary HOME -----------------------------------
class FakeRunner:
    """Records commands; answers from a table (argv prefix -> Result)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.answers: dict[tuple[str, ...], svc.Result] = {}

    def __call__(self, argv) -> svc.Result:
        argv = tuple(argv)
        self.calls.append(argv)
        for prefix, result in self.answers.items():
            if argv[:len(prefix)] == prefix:
                return result
        return svc.Result(0, "", "")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A temporary HOME with a user session that looks real to preflight; every command
    goes to a FakeRunner (returned)."""
    h = tmp_path / "home"
    h.mkdir()
    runtime = tmp_path / "runtime"
    (runtime / "systemd").mkdir(parents=True)
    (runtime / "systemd" / "private").touch()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(h / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(h / ".local" / "state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("EXIFGUARD_CERTS", raising=False)
    monkeypatch.setattr(cli_service, "host_platform", lambda: "linux")
    monkeypatch.setattr(cli_service.shutil, "which", lambda name, *a, **k: f"/usr/bin/{name}")
    runner = FakeRunner()
    monkeypatch.setattr(cli_service, "RUNNER", runner)
    return h, runner


def _unit(h: Path) -> Path:
    return h / ".config" / "systemd" / "user" / svc.UNIT_NAME


def _printed_command(out: str, verb: str) -> list[str]:
    """The argv of the printed `... service VERB` line, checked to parse as printed."""
    line = next(line.strip() for line in out.splitlines() if f" service {verb}" in line)
    line = line[line.index(command_prefix()):]  # after a label such as "status:"
    prefix = shlex.split(command_prefix())
    argv = shlex.split(line)
    assert argv[:len(prefix)] == prefix, line
    build_parser().parse_args(argv[len(prefix):])  # exits (fails the test) if it does not parse
    return argv[len(prefix):]


def test_install_status_uninstall_round_trip(home, tmp_path, capsys):
    h, runner = home
    certs = tmp_path / "my certs"
    assert main(["service", "install", "--certs", str(certs), "--port", "8091"]) == 0
    out = capsys.readouterr().out
    unit = _unit(h)
    assert unit.is_file() and stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert f"--certs {svc.systemd_quote(str(certs))} --port 8091" in unit.read_text()
    assert f"--log-file {h}/.local/state/exifguard/exifguard.log" in unit.read_text()
    assert runner.calls == [("systemctl", "--user", "daemon-reload"),
                            ("systemctl", "--user", "enable", "--now", "exifguard.service")]
    assert "installed" in out and f"{h}/.local/state/exifguard/exifguard.log" in out
    assert _printed_command(out, "status")[:2] == ["service", "status"]

    # the same again: nothing to do, nothing run
    runner.calls.clear()
    assert main(["service", "install", "--certs", str(certs), "--port", "8091"]) == 0
    assert "already installed with this definition" in capsys.readouterr().out
    assert runner.calls == []

    # running
    runner.answers = {("systemctl", "--user", "is-enabled"): svc.Result(0, "enabled\n"),
                      ("systemctl", "--user", "is-active"): svc.Result(0, "active\n")}
    assert main(["service", "status", "--certs", str(certs), "--port", "8091"]) == 0
    out = capsys.readouterr().out
    assert "installed" in out and "starts at login: yes (enabled)" in out and "running:         yes (active)" in out
    assert f"log:             {h}/.local/state/exifguard/exifguard.log (not written yet)" in out
    assert "differs" not in out
    # stopped after failures
    runner.answers[("systemctl", "--user", "is-active")] = svc.Result(3, "failed\n")
    assert main(["service", "status", "--certs", str(certs), "--port", "8091"]) == cli_service.NOT_RUNNING
    out = capsys.readouterr().out
    assert "running:         no (failed)" in out
    assert _printed_command(out, "install --force")[:3] == ["service", "install", "--force"]
    # --force over the same definition: a repair (registered and restarted again)
    runner.calls.clear()
    runner.answers = {}
    assert main(["service", "install", "--force", "--certs", str(certs), "--port", "8091"]) == 0
    capsys.readouterr()
    assert runner.calls == [("systemctl", "--user", "daemon-reload"),
                            ("systemctl", "--user", "enable", "--now", "exifguard.service"),
                            ("systemctl", "--user", "restart", "exifguard.service")]

    runner.calls.clear()
    runner.answers = {}
    assert main(["service", "uninstall", "--certs", str(certs)]) == 0
    out = capsys.readouterr().out
    assert not unit.exists()
    assert runner.calls == [("systemctl", "--user", "disable", "--now", "exifguard.service"),
                            ("systemctl", "--user", "daemon-reload")]
    assert "uninstalled" in out and "The log stays" in out

    runner.calls.clear()
    assert main(["service", "uninstall"]) == 0
    assert "no exifguard service is installed" in capsys.readouterr().out
    assert runner.calls == []
    assert main(["service", "status"]) == cli_service.NOT_RUNNING
    out = capsys.readouterr().out
    assert "not installed" in out and _printed_command(out, "install")[:2] == ["service", "install"]


def test_install_over_a_different_definition_needs_force(home, tmp_path, capsys):
    h, runner = home
    certs = tmp_path / "certs"
    assert main(["service", "install", "--certs", str(certs)]) == 0
    first = _unit(h).read_text()
    capsys.readouterr()
    runner.calls.clear()
    assert main(["service", "install", "--certs", str(certs), "--port", "9000"]) == 1
    err = capsys.readouterr().err
    assert "a different exifguard service is installed" in err
    assert "-ExecStart=" in err and "+ExecStart=" in err and "--port 9000" in err  # the diff
    assert _unit(h).read_text() == first and runner.calls == []
    again = _printed_command(err, "install --force")
    assert again[:3] == ["service", "install", "--force"] and "9000" in again

    assert main(again) == 0
    assert "--port 9000" in _unit(h).read_text()
    assert runner.calls[-1] == ("systemctl", "--user", "restart", "exifguard.service")
    runner.calls.clear()
    assert main(["service", "status", "--certs", str(certs)]) == 0  # fake runner: active
    assert "the installed definition differs" in capsys.readouterr().out


def test_dry_run_changes_nothing_and_prints_the_plan(home, tmp_path, capsys):
    h, runner = home
    for action in ("install", "uninstall", "status"):
        assert main(["service", action, "--dry-run", "--certs", str(tmp_path / "c")]) == 0
        out = capsys.readouterr().out
        assert f"exifguard service {action} (systemd user unit): dry run, nothing is changed" in out
    assert runner.calls == [] and not (h / ".config").exists() and not (h / ".local").exists()
    assert main(["service", "install", "--dry-run", "--platform", "macos"]) == 0
    out = capsys.readouterr().out
    assert f"{h}/Library/LaunchAgents/org.exifguard.proxy.plist" in out and "launchctl bootstrap gui/" in out
    assert main(["service", "install", "--platform", "macos"]) == 1
    assert "only previews (add --dry-run)" in capsys.readouterr().err
    assert runner.calls == [] and not (h / "Library").exists()


def test_failures_are_messages_not_tracebacks(home, tmp_path, capsys, monkeypatch):
    h, runner = home
    runner.answers = {("systemctl", "--user", "enable"): svc.Result(1, "", "Failed to enable unit: Access denied")}
    assert main(["service", "install", "--certs", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "`systemctl --user enable --now exifguard.service` failed (exit code 1): Failed to enable unit: Access " \
           "denied" in err
    assert _printed_command(err, "uninstall")[:2] == ["service", "uninstall"]
    assert "Traceback" not in err

    _unit(h).unlink()
    runner.calls.clear()
    monkeypatch.delenv("XDG_RUNTIME_DIR")  # e.g. under sudo
    assert main(["service", "install", "--certs", str(tmp_path / "c")]) == 1
    assert "no systemd user session" in capsys.readouterr().err
    assert runner.calls == [] and not _unit(h).exists()

    monkeypatch.setattr(cli_service.shutil, "which", lambda name, *a, **k: None)
    assert main(["service", "status"]) == 1
    assert "systemctl was not found" in capsys.readouterr().err

    assert main(["service"]) == 2
    assert "service install" in capsys.readouterr().err

    monkeypatch.setattr(cli_service, "host_platform", lambda: svc.current_platform("sunos5"))
    assert main(["service", "install"]) == 1
    err = capsys.readouterr().err
    assert "not supported on this system (sunos5)" in err and "autostart" in err and "Traceback" not in err


def test_install_refuses_an_exifguard_found_only_through_pythonpath(home, tmp_path, capsys, monkeypatch):
    import exifguard
    h, runner = home
    monkeypatch.setenv("PYTHONPATH", str(Path(exifguard.__file__).resolve().parent.parent))
    assert main(["service", "install", "--certs", str(tmp_path / "c")]) == 1
    assert "PYTHONPATH" in capsys.readouterr().err
    assert runner.calls == [] and not _unit(h).exists()


def test_the_service_runs_the_exifguard_that_is_running_now():
    prog = cli_service.program("linux")
    assert Path(prog[0]).is_absolute() and Path(prog[0]).exists()
    # it really runs this exifguard's CLI (the run parser knows --log-file)
    r = subprocess.run([*prog, "run", "--help"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PATH="/nonexistent"))  # no PATH lookups
    assert r.returncode == 0 and "--log-file" in r.stdout, r.stderr


@pytest.mark.e2e
def test_the_units_exec_start_starts_a_ready_proxy_that_logs_and_stops_on_sigterm(tmp_path):
    """ExecStart exactly as written in the unit (with an odd certs path and a free port):
    the proxy reaches ready, logs to the unit's log file, and ends cleanly on SIGTERM,
    which is how systemd (KillMode=mixed) and launchd stop it."""
    import signal
    import socket
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path / "home"
    cfg = linux_cfg(home=str(home), program=cli_service.program("linux"), certs=str(tmp_path / "my 100% certs"),
                    port=port, pac_port=-1, notify="off")
    line = next(x for x in svc.systemd_unit(cfg).splitlines() if x.startswith("ExecStart="))
    argv = systemd_words(line[len("ExecStart="):])
    assert argv == svc.run_argv(cfg)
    log = Path(str(svc.log_file(cfg)))
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=home.parent,
                            env={k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")})
    try:
        end = time.monotonic() + 90
        while time.monotonic() < end and proc.poll() is None:
            if log.exists() and "stop: Ctrl-C" in log.read_text():
                break
            time.sleep(0.1)
        assert log.exists() and f"exifguard proxy: http://127.0.0.1:{port}  (ready" in log.read_text(), \
            proc.stderr.read() if proc.poll() is not None else "not ready"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    assert rc == 0
    assert log.read_text().splitlines()[-1].endswith("exifguard: stopped.")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
