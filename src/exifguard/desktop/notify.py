"""Desktop notifications through each platform's own mechanism, rate-limited.

Why the platforms' own tools and not a library: every desktop already ships one
(`notify-send` from libnotify on Linux, `osascript` on macOS, PowerShell's toast API on
Windows), a library would add a native dependency to a proxy that must start anywhere,
and a tool run as a child process can never stall or crash the proxy that calls it.

Texts are passed as arguments or environment variables, never spliced into a script, so
a host name or reason cannot become code.  They name the service and the reason only:
no file names, no metadata values.

`RateLimiter` keeps a burst of refusals (a chat page retrying an upload, a folder of
photos) from becoming a burst of pop-ups: at most one notice per service per window and a
global minimum gap; what is held back is counted and summed up in the next notice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

APP_NAME = "exifguard"
SEND_TIMEOUT = 10.0
"""Seconds a notification tool may take before it is killed."""

_MAC_SCRIPT = ("on run argv", "display notification (item 2 of argv) with title (item 1 of argv)",
               "end run")
_WINDOWS_SCRIPT = (
    "$ErrorActionPreference='Stop';"
    "[void][Windows.UI.Notifications.ToastNotificationManager,Windows.UI.Notifications,ContentType=WindowsRuntime];"
    "[void][Windows.Data.Xml.Dom.XmlDocument,Windows.Data.Xml.Dom.XmlDocument,ContentType=WindowsRuntime];"
    "$t=[Security.SecurityElement]::Escape($env:EXIFGUARD_NOTIFY_TITLE);"
    "$b=[Security.SecurityElement]::Escape($env:EXIFGUARD_NOTIFY_BODY);"
    "$x=New-Object Windows.Data.Xml.Dom.XmlDocument;"
    "$x.LoadXml(\"<toast><visual><binding template='ToastGeneric'><text>$t</text><text>$b</text>"
    "</binding></visual></toast>\");"
    # PowerShell's own AppUserModelID: an unregistered id would be dropped silently
    "$id='{1AC14E77-02E7-4E5D-B744-2EB1AE5198B7}\\WindowsPowerShell\\v1.0\\powershell.exe';"
    "[Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier($id).Show("
    "[Windows.UI.Notifications.ToastNotification]::new($x))"
)


@dataclass(frozen=True)
class Notice:
    title: str
    body: str


@dataclass(frozen=True)
class Command:
    """One notification as a process to start: argv plus extra environment."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


class Unavailable(Exception):
    """This desktop has no way to show a notification; the text says what to install."""


def platform_name(sys_platform: str | None = None) -> str:
    p = sys_platform or sys.platform
    if p.startswith("linux") or p.startswith("freebsd"):
        return "linux"
    if p == "darwin":
        return "macos"
    if p in ("win32", "cygwin"):
        return "windows"
    return p


def command_for(notice: Notice, platform: str | None = None, *,
                which: Callable[[str], str | None] = shutil.which,
                environ: dict[str, str] | None = None) -> Command:
    """The process that shows `notice` on this platform; `Unavailable` if there is none."""
    platform = platform or platform_name()
    env = os.environ if environ is None else environ
    if platform == "linux":
        if not _session_bus(env):
            raise Unavailable("no desktop session (no D-Bus session bus): notifications need a "
                              "graphical login; run with --notify off to silence this")
        tool = which("notify-send")
        if tool is None:
            raise Unavailable("notify-send is not installed (Debian/Ubuntu: sudo apt install "
                              "libnotify-bin; Fedora: sudo dnf install libnotify)")
        return Command((tool, f"--app-name={APP_NAME}", "--urgency=normal", "--expire-time=8000",
                        "--", notice.title, notice.body))
    if platform == "macos":
        tool = which("osascript") or "/usr/bin/osascript"
        argv: list[str] = [tool]
        for line in _MAC_SCRIPT:
            argv += ["-e", line]
        return Command((*argv, notice.title, notice.body))
    if platform == "windows":
        tool = which("powershell") or which("powershell.exe") or "powershell.exe"
        return Command((tool, "-NoProfile", "-NonInteractive", "-WindowStyle", "Hidden",
                        "-Command", _WINDOWS_SCRIPT),
                       (("EXIFGUARD_NOTIFY_TITLE", notice.title), ("EXIFGUARD_NOTIFY_BODY", notice.body)))
    raise Unavailable(f"desktop notifications are not supported on {platform}")


def _session_bus(env: dict[str, str] | os._Environ[str]) -> bool:
    """notify-send talks to the desktop over the D-Bus session bus.  A systemd user
    service (exifguard's `service install` on Linux) often has no DISPLAY and no bus
    address in its environment, but the bus socket is at $XDG_RUNTIME_DIR/bus."""
    if env.get("DBUS_SESSION_BUS_ADDRESS"):
        return True
    runtime = env.get("XDG_RUNTIME_DIR")
    return bool(runtime) and os.path.exists(os.path.join(runtime, "bus"))


Runner = Callable[[Command], None]


def run_command(cmd: Command) -> None:
    """Run a notification tool to completion (bounded); failures raise OSError/CalledProcessError."""
    env = {**os.environ, **dict(cmd.env)}
    subprocess.run(list(cmd.argv), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=SEND_TIMEOUT, check=True)


@dataclass
class RateLimiter:
    """At most one notice per key per `per_key` seconds, and `gap` seconds between any two.

    `admit(key)` says whether to show a notice now; a held-back one is counted, and the
    count is returned with the next admitted notice for that key so it can say "and N
    more".  `due()` lists keys whose held-back notices can be summed up now.
    """

    per_key: float = 60.0
    gap: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _last: dict[str, float] = field(default_factory=dict)
    _last_any: float = float("-inf")
    _held: dict[str, int] = field(default_factory=dict)

    def admit(self, key: str) -> tuple[bool, int]:
        now = self.clock()
        last = self._last.get(key, float("-inf"))
        if now - last < self.per_key or now - self._last_any < self.gap:
            self._held[key] = self._held.get(key, 0) + 1
            return False, 0
        self._last[key] = self._last_any = now
        return True, self._held.pop(key, 0)

    def due(self) -> list[tuple[str, int]]:
        """Held-back counts whose window has passed (and are cleared by being returned)."""
        now = self.clock()
        out = []
        for key, n in list(self._held.items()):
            if now - self._last.get(key, float("-inf")) >= self.per_key and now - self._last_any >= self.gap:
                del self._held[key]
                self._last[key] = self._last_any = now
                out.append((key, n))
        return out

    def next_due_in(self) -> float | None:
        """Seconds until `due()` may return something (None: nothing held)."""
        if not self._held:
            return None
        now = self.clock()
        waits = [max(self._last.get(k, float("-inf")) + self.per_key, self._last_any + self.gap) - now
                 for k in self._held]
        return max(0.0, min(waits))


class Sender:
    """Shows notices on a background thread, one at a time, never blocking the caller.

    Why a thread: the proxy's event loop must not wait for a notification tool (PowerShell
    takes a second to start).  The queue is short; when the desktop cannot keep up, notices
    are dropped (the log line is always written anyway).
    """

    def __init__(self, runner: Runner = run_command, *, platform: str | None = None,
                 on_problem: Callable[[str], None] | None = None, max_pending: int = 4,
                 which: Callable[[str], str | None] = shutil.which,
                 environ: dict[str, str] | None = None) -> None:
        self._runner = runner
        self._platform = platform
        self._which = which
        self._environ = environ
        self._on_problem = on_problem or (lambda _msg: None)
        self._max_pending = max_pending
        self._pending: list[Notice] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._problems: set[str] = set()
        self.shown = 0
        self.dropped = 0

    def send(self, notice: Notice) -> None:
        with self._cv:
            if len(self._pending) >= self._max_pending:
                self.dropped += 1
                return
            self._pending.append(notice)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="exifguard-notify", daemon=True)
                self._thread.start()
            self._cv.notify()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """For tests and shutdown: wait until nothing is pending."""
        end = time.monotonic() + timeout
        with self._cv:
            while self._pending or getattr(self, "_busy", False):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending:
                    if not self._cv.wait(30.0):
                        self._thread = None
                        return
                notice = self._pending.pop(0)
                self._busy = True
            try:
                self._show(notice)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _show(self, notice: Notice) -> None:
        try:
            cmd = command_for(notice, self._platform, which=self._which, environ=self._environ)
            self._runner(cmd)
            self.shown += 1
        except Unavailable as exc:
            self._problem(str(exc))
        except subprocess.TimeoutExpired:
            self._problem(f"the notification tool did not finish within {SEND_TIMEOUT:.0f} s")
        except subprocess.CalledProcessError as exc:
            self._problem(f"the notification tool failed (exit code {exc.returncode})")
        except OSError as exc:
            self._problem(f"the notification tool could not be started ({exc.strerror or exc})")

    def _problem(self, message: str) -> None:
        """Each kind of problem once: a missing tool must not fill the log."""
        if message not in self._problems:
            self._problems.add(message)
            self._on_problem(message)


