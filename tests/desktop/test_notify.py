"""Desktop notifications: the command per platform, rate limiting, the background sender.

No notification is ever shown here: the runner is a fake that records commands.
"""

from __future__ import annotations

import subprocess

import pytest

from exifguard.desktop.notify import (Command, Notice, RateLimiter, Sender, Unavailable, command_for,
                                      platform_name)

HOSTILE = Notice('title "with" quotes', "body'); do shell script \"rm -rf ~\" -- $(x) `y`")


def which_all(name: str) -> str:
    return f"/usr/bin/{name}"


def test_platform_names():
    assert platform_name("linux") == "linux"
    assert platform_name("darwin") == "macos"
    assert platform_name("win32") == "windows"


def test_linux_uses_notify_send_with_texts_as_separate_arguments():
    cmd = command_for(HOSTILE, "linux", which=which_all, environ={"DBUS_SESSION_BUS_ADDRESS": "unix:x"})
    assert cmd.argv[0] == "/usr/bin/notify-send"
    # after "--" the texts are plain arguments: no shell, no option parsing
    i = cmd.argv.index("--")
    assert cmd.argv[i + 1:] == (HOSTILE.title, HOSTILE.body)


def test_linux_without_a_session_or_tool_says_what_to_do(tmp_path):
    with pytest.raises(Unavailable, match="graphical login"):
        command_for(HOSTILE, "linux", which=which_all, environ={"DISPLAY": ":0"})  # X alone is not enough
    with pytest.raises(Unavailable, match="graphical login"):
        command_for(HOSTILE, "linux", which=which_all, environ={"XDG_RUNTIME_DIR": str(tmp_path)})
    with pytest.raises(Unavailable, match="libnotify-bin"):
        command_for(HOSTILE, "linux", which=lambda _n: None, environ={"DBUS_SESSION_BUS_ADDRESS": "unix:x"})


def test_linux_service_finds_the_session_bus_in_its_runtime_dir(tmp_path):
    """A systemd user service has XDG_RUNTIME_DIR but often no bus address or display."""
    (tmp_path / "bus").touch()
    cmd = command_for(HOSTILE, "linux", which=which_all, environ={"XDG_RUNTIME_DIR": str(tmp_path)})
    assert cmd.argv[0] == "/usr/bin/notify-send"


def test_macos_passes_texts_as_argv_not_inside_the_script():
    cmd = command_for(HOSTILE, "macos", which=which_all)
    assert cmd.argv[0] == "/usr/bin/osascript"
    script = " ".join(a for a in cmd.argv[1:-2] if a != "-e")
    assert "rm -rf" not in script and "argv" in script
    assert cmd.argv[-2:] == (HOSTILE.title, HOSTILE.body)


def test_windows_passes_texts_in_the_environment_and_escapes_them_for_xml():
    cmd = command_for(HOSTILE, "windows", which=lambda _n: None)
    assert cmd.argv[0] == "powershell.exe"
    script = cmd.argv[-1]
    assert "rm -rf" not in script and "SecurityElement]::Escape($env:EXIFGUARD_NOTIFY_BODY)" in script
    assert dict(cmd.env) == {"EXIFGUARD_NOTIFY_TITLE": HOSTILE.title, "EXIFGUARD_NOTIFY_BODY": HOSTILE.body}


def test_unknown_platform_is_unavailable():
    with pytest.raises(Unavailable, match="not supported on plan9"):
        command_for(HOSTILE, "plan9")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_rate_limiter_per_key_and_global_gap_and_held_counts():
    clock = Clock()
    rl = RateLimiter(per_key=60, gap=5, clock=clock)
    assert rl.admit("a") == (True, 0)
    assert rl.admit("a") == (False, 0)
    assert rl.admit("b") == (False, 0)          # within the global gap
    clock.t += 6
    assert rl.admit("b") == (True, 1)           # one "b" was held back
    assert rl.admit("a") == (False, 0)          # still inside a's window
    assert rl.next_due_in() == pytest.approx(54)
    clock.t += 60
    assert rl.due() == [("a", 2)]
    assert rl.due() == [] and rl.next_due_in() is None


def test_sender_runs_commands_in_the_background_and_reports_each_problem_once():
    ran: list[Command] = []
    problems: list[str] = []
    s = Sender(ran.append, platform="linux", which=which_all, environ={"DBUS_SESSION_BUS_ADDRESS": "unix:x"},
               on_problem=problems.append)
    s.send(Notice("t", "b"))
    assert s.wait_idle()
    assert len(ran) == 1 and s.shown == 1

    def failing(cmd: Command) -> None:
        raise subprocess.CalledProcessError(3, cmd.argv)
    s2 = Sender(failing, platform="linux", which=which_all, environ={"DBUS_SESSION_BUS_ADDRESS": "unix:x"},
                on_problem=problems.append)
    for _ in range(3):
        s2.send(Notice("t", "b"))
        assert s2.wait_idle()
    assert problems == ["the notification tool failed (exit code 3)"]


def test_sender_drops_when_the_desktop_cannot_keep_up():
    import threading
    gate = threading.Event()
    s = Sender(lambda cmd: gate.wait(5), platform="linux", which=which_all, environ={"DBUS_SESSION_BUS_ADDRESS": "unix:x"},
               max_pending=2)
    for _ in range(6):
        s.send(Notice("t", "b"))
    gate.set()
    assert s.wait_idle()
    assert s.dropped >= 3 and s.shown + s.dropped == 6
