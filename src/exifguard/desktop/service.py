"""Start exifguard at login: a systemd user unit, a launchd LaunchAgent, a scheduled task.

Why a pure planner: a privacy tool that registers itself with the operating system must
be able to say *exactly* what it will write and run before doing it (`--dry-run`), and
the Windows and macOS definitions must be testable on a Linux CI machine.  So every
function here takes the platform, the user's folders and the program to run as
parameters and returns data (`ServicePlan`: files to write, files to remove, commands
to run); only `apply()` touches the system, through a runner the caller passes in.

What every definition does, on every OS:

* runs `exifguard run` (the proxy and its PAC server) through an absolute path to the
  interpreter / entry point that is running now: a unit never relies on PATH, which is
  different (or empty) in a login session's service manager;
* pins `--certs` to the folder the person used (resolved), so the service finds the CA
  they installed in their browser, whatever its working directory or environment;
* logs to a rotated file (`run --log-file`), the same place on every start;
* restarts after a failure, with a delay and (systemd) a start limit, so a broken
  install does not spin;
* runs as the person, with no privileges (user unit, LaunchAgent, LeastPrivilege task).
"""

from __future__ import annotations

import difflib
import plistlib
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from xml.sax.saxutils import escape as xml_escape

from .commands import Result, Runner, subprocess_runner  # noqa: F401 - part of this module's interface

PLATFORMS = ("linux", "macos", "windows")
UNIT_NAME = "exifguard.service"
LAUNCHD_LABEL = "org.exifguard.proxy"
TASK_NAME = "exifguard"
LOG_NAME = "exifguard.log"
DESCRIPTION = "exifguard: strips private metadata from photos uploaded to AI chat services"
#: restart policy, the same intent on every OS: wait a little, and give up on a crash loop
RESTART_DELAY_S = 5
START_LIMIT_BURST = 5
START_LIMIT_INTERVAL_S = 120
LAUNCHD_THROTTLE_S = 10
#: Task Scheduler's minimum restart interval is one minute
TASK_RESTART_INTERVAL = "PT1M"
TASK_RESTART_COUNT = 5
TASK_NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"


class ServiceError(Exception):
    """Something a person can fix (the message says how); printed as `exifguard: ...`."""


def current_platform(sys_platform: str) -> str:
    """'linux', 'macos' or 'windows' for a `sys.platform` value; ServiceError otherwise."""
    if sys_platform.startswith("linux"):
        return "linux"
    if sys_platform == "darwin":
        return "macos"
    if sys_platform in ("win32", "cygwin"):
        return "windows"
    raise ServiceError(f"starting at login is not supported on this system ({sys_platform}); start "
                       "`exifguard run` from your desktop's own autostart settings instead")


def path_type(platform: str) -> type[PurePath]:
    """Paths in the target OS's syntax, whatever OS generates them (tests run on Linux)."""
    _check_platform(platform)
    return PureWindowsPath if platform == "windows" else PurePosixPath


def _check_platform(platform: str) -> None:
    if platform not in PLATFORMS:
        raise ServiceError(f"unknown platform {platform!r}; use one of: {', '.join(PLATFORMS)}")


# ---- what to run ------------------------------------------------------------------------
@dataclass(frozen=True)
class ServiceConfig:
    """Everything a definition depends on, so generating one reads nothing from the system.

    `program` is the absolute argv prefix that runs exifguard's CLI (an entry point, or an
    interpreter with `-P -m exifguard.cli`); `home` and `env` (XDG_CONFIG_HOME,
    XDG_STATE_HOME, LOCALAPPDATA) locate the user's folders; `uid` (macOS) names the GUI
    session, `user` (Windows, DOMAIN\\name) the account whose logon starts the task.
    """
    platform: str
    program: tuple[str, ...]
    certs: str
    home: str
    port: int = 8080
    pac_port: int | None = None
    mode: str | None = None
    notify: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    uid: int | None = None
    user: str | None = None

    def __post_init__(self) -> None:
        _check_platform(self.platform)
        if not self.program:
            raise ServiceError("no program to run")
        p = path_type(self.platform)
        for what, value in (("program", self.program[0]), ("certs folder", self.certs), ("home", self.home)):
            if not p(value).is_absolute():
                raise ServiceError(f"the {what} must be an absolute path, got {value!r}")
        if self.platform == "macos" and self.uid is None:
            raise ServiceError("a LaunchAgent needs the user's id (uid) for `launchctl bootstrap gui/UID`")
        if self.platform == "windows" and not self.user:
            raise ServiceError("a logon task needs the user's account name (USERDOMAIN\\USERNAME)")

    @property
    def path(self) -> type[PurePath]:
        return path_type(self.platform)


def _env_dir(cfg: ServiceConfig, name: str, default: PurePath) -> PurePath:
    """An XDG variable counts only when absolute (the XDG rule: relative values are ignored)."""
    value = cfg.env.get(name) or ""
    return cfg.path(value) if value and cfg.path(value).is_absolute() else default


def definition_path(cfg: ServiceConfig) -> PurePath:
    """Where the definition lives (on Windows: exifguard's copy of the registered task)."""
    home = cfg.path(cfg.home)
    if cfg.platform == "linux":
        return _env_dir(cfg, "XDG_CONFIG_HOME", home / ".config") / "systemd" / "user" / UNIT_NAME
    if cfg.platform == "macos":
        return home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    return _local_appdata(cfg) / "exifguard" / "exifguard-task.xml"


def _local_appdata(cfg: ServiceConfig) -> PurePath:
    return _env_dir(cfg, "LOCALAPPDATA", cfg.path(cfg.home) / "AppData" / "Local")


def log_file(cfg: ServiceConfig) -> PurePath:
    """The rotated log the service writes (`run --log-file`): the OS's place for a user's logs."""
    home = cfg.path(cfg.home)
    if cfg.platform == "linux":
        return _env_dir(cfg, "XDG_STATE_HOME", home / ".local" / "state") / "exifguard" / LOG_NAME
    if cfg.platform == "macos":
        return home / "Library" / "Logs" / "exifguard" / LOG_NAME
    return _local_appdata(cfg) / "exifguard" / "logs" / LOG_NAME


def run_argv(cfg: ServiceConfig) -> list[str]:
    """The full command the service runs: `exifguard run` with everything pinned."""
    argv = [*cfg.program, "run", "--certs", cfg.certs, "--port", str(cfg.port)]
    if cfg.pac_port is not None:
        argv += ["--pac-port", str(cfg.pac_port)]
    if cfg.mode is not None:
        argv += ["--mode", cfg.mode]
    if cfg.notify is not None:
        argv += ["--notify", cfg.notify]
    return argv + ["--log-file", str(log_file(cfg))]


# ---- the definitions --------------------------------------------------------------------
@dataclass(frozen=True)
class FileSpec:
    """A file to write: path, full text, POSIX mode, and how the text is encoded."""
    path: PurePath
    text: str
    mode: int = 0o644
    encoding: str = "utf-8"   # "utf-16" for the task XML: BOM + little endian, as Task Scheduler writes

    def data(self) -> bytes:
        if self.encoding == "utf-16":
            return b"\xff\xfe" + self.text.encode("utf-16-le")
        return self.text.encode(self.encoding)


def systemd_quote(arg: str) -> str:
    """One ExecStart argument: `%` and `$` doubled (specifiers, variables), quoted when needed."""
    s = arg.replace("%", "%%").replace("$", "$$")
    if s and not any(c in s for c in " \t\n\"'\\;"):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def systemd_unit(cfg: ServiceConfig) -> str:
    """A systemd *user* unit.

    KillMode=mixed: SIGTERM goes to `exifguard run` only, which stops mitmdump in order
    (SIGINT, SIGTERM, SIGKILL) and removes its run.json; the whole group is killed only
    after TimeoutStopSec.  StandardOutput=null: every line is in the rotated log already;
    stderr (errors, including any before the log is open) stays in the journal, where
    `systemctl --user status` shows it.  UMask=0077: certificates and logs stay private.
    NoNewPrivileges is honoured by the user manager (a prctl, no privilege needed).
    """
    exec_start = " ".join(systemd_quote(a) for a in run_argv(cfg))
    return "\n".join([
        "# Written by exifguard (its service install command); its service uninstall command removes it.",
        "[Unit]",
        f"Description={DESCRIPTION}",
        f"StartLimitIntervalSec={START_LIMIT_INTERVAL_S}",
        f"StartLimitBurst={START_LIMIT_BURST}",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start}",
        "WorkingDirectory=~",
        "Restart=on-failure",
        f"RestartSec={RESTART_DELAY_S}",
        "KillMode=mixed",
        "TimeoutStopSec=20",
        "StandardOutput=null",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ])


def launchd_plist(cfg: ServiceConfig) -> str:
    """A LaunchAgent: starts at login (RunAtLoad), again after a failed exit only
    (KeepAlive.SuccessfulExit=false: a clean stop stays stopped), at most every
    ThrottleInterval seconds.  Output goes to the rotated log, not to launchd files."""
    data = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": run_argv(cfg),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": LAUNCHD_THROTTLE_S,
        "WorkingDirectory": cfg.home,
        "Umask": 0o077,
        "ProcessType": "Standard",
    }
    return plistlib.dumps(data, fmt=plistlib.FMT_XML, sort_keys=False).decode("utf-8")


def task_xml(cfg: ServiceConfig) -> str:
    """A Task Scheduler definition for the current user only, without elevation.

    Why these settings: the defaults would stop the proxy after 72 hours
    (ExecutionTimeLimit), never start it on battery, and run it at below-normal priority;
    Hidden keeps it out of the default list view (the window itself is avoided by running
    pythonw).  IgnoreNew: a second logon does not start a second proxy."""
    argv = run_argv(cfg)
    args = subprocess.list2cmdline(argv[1:])
    x = xml_escape
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-16"?>',
        f'<Task version="1.2" xmlns="{TASK_NS}">',
        "  <RegistrationInfo>",
        f"    <Description>{x(DESCRIPTION)}</Description>",
        f"    <URI>\\{TASK_NAME}</URI>",
        "  </RegistrationInfo>",
        "  <Triggers>",
        "    <LogonTrigger>",
        "      <Enabled>true</Enabled>",
        f"      <UserId>{x(cfg.user or '')}</UserId>",
        "    </LogonTrigger>",
        "  </Triggers>",
        "  <Principals>",
        '    <Principal id="Author">',
        f"      <UserId>{x(cfg.user or '')}</UserId>",
        "      <LogonType>InteractiveToken</LogonType>",
        "      <RunLevel>LeastPrivilege</RunLevel>",
        "    </Principal>",
        "  </Principals>",
        "  <Settings>",
        "    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>",
        "    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>",
        "    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>",
        "    <AllowHardTerminate>true</AllowHardTerminate>",
        "    <StartWhenAvailable>false</StartWhenAvailable>",
        "    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>",
        "    <IdleSettings>",
        "      <StopOnIdleEnd>false</StopOnIdleEnd>",
        "      <RestartOnIdle>false</RestartOnIdle>",
        "    </IdleSettings>",
        "    <AllowStartOnDemand>true</AllowStartOnDemand>",
        "    <Enabled>true</Enabled>",
        "    <Hidden>true</Hidden>",
        "    <RunOnlyIfIdle>false</RunOnlyIfIdle>",
        "    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>",
        "    <Priority>5</Priority>",
        "    <RestartOnFailure>",
        f"      <Interval>{TASK_RESTART_INTERVAL}</Interval>",
        f"      <Count>{TASK_RESTART_COUNT}</Count>",
        "    </RestartOnFailure>",
        "  </Settings>",
        '  <Actions Context="Author">',
        "    <Exec>",
        f"      <Command>{x(argv[0])}</Command>",
        f"      <Arguments>{x(args)}</Arguments>",
        f"      <WorkingDirectory>{x(cfg.home)}</WorkingDirectory>",
        "    </Exec>",
        "  </Actions>",
        "</Task>",
        "",
    ])


def definition(cfg: ServiceConfig) -> FileSpec:
    """The one file that defines the service on this platform."""
    path = definition_path(cfg)
    if cfg.platform == "linux":
        return FileSpec(path, systemd_unit(cfg))
    if cfg.platform == "macos":
        return FileSpec(path, launchd_plist(cfg))
    return FileSpec(path, task_xml(cfg), encoding="utf-16")


KIND = {"linux": "systemd user unit", "macos": "launchd LaunchAgent", "windows": "per-user scheduled task"}


# ---- plans ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One command to run; `may_fail` for steps whose failure changes nothing (stopping
    something that is not running)."""
    argv: tuple[str, ...]
    why: str
    may_fail: bool = False


@dataclass(frozen=True)
class ServicePlan:
    """What an action writes, removes and runs, in order: files first, then commands
    (uninstall: commands first, then removals)."""
    platform: str
    action: str
    definition: PurePath
    log_file: PurePath
    files: tuple[FileSpec, ...] = ()
    commands: tuple[Command, ...] = ()
    remove: tuple[PurePath, ...] = ()

    @property
    def kind(self) -> str:
        return KIND[self.platform]


def _systemctl(*args: str) -> tuple[str, ...]:
    return ("systemctl", "--user", *args)


def _gui(cfg: ServiceConfig) -> str:
    return f"gui/{cfg.uid}"


def install_plan(cfg: ServiceConfig, *, replacing: bool = False) -> ServicePlan:
    """Write the definition, register it and start it now.  `replacing`: a different
    definition is installed (and may be running): stop or reload it first."""
    spec = definition(cfg)
    cmds: list[Command]
    if cfg.platform == "linux":
        cmds = [Command(_systemctl("daemon-reload"), "make systemd read the unit"),
                Command(_systemctl("enable", "--now", UNIT_NAME), "start it now and at every login")]
        if replacing:
            cmds.append(Command(_systemctl("restart", UNIT_NAME), "restart it with the new definition"))
    elif cfg.platform == "macos":
        target = f"{_gui(cfg)}/{LAUNCHD_LABEL}"
        cmds = []
        if replacing:
            cmds.append(Command(("launchctl", "bootout", target), "unload the old definition", may_fail=True))
        cmds += [Command(("launchctl", "enable", target), "allow it to load (undoes an earlier `launchctl disable`)"),
                 Command(("launchctl", "bootstrap", _gui(cfg), str(spec.path)),
                         "load it now (RunAtLoad starts it) and at every login")]
    else:
        cmds = []
        if replacing:
            cmds.append(Command(("schtasks", "/End", "/TN", TASK_NAME), "stop the running proxy", may_fail=True))
        cmds += [Command(("schtasks", "/Create", "/TN", TASK_NAME, "/XML", str(spec.path),
                          *(("/F",) if replacing else ())), "register the logon task for this user"),
                 Command(("schtasks", "/Run", "/TN", TASK_NAME), "start it now")]
    return ServicePlan(cfg.platform, "install", spec.path, log_file(cfg), files=(spec,), commands=tuple(cmds))


def uninstall_plan(cfg: ServiceConfig) -> ServicePlan:
    """Stop the proxy, unregister it, remove the definition.  The log stays (it is the
    person's record; its path is printed)."""
    path = definition_path(cfg)
    if cfg.platform == "linux":
        cmds = (Command(_systemctl("disable", "--now", UNIT_NAME), "stop it and do not start it at login"),)
        after = (Command(_systemctl("daemon-reload"), "make systemd forget the unit"),)
    elif cfg.platform == "macos":
        cmds = (Command(("launchctl", "bootout", f"{_gui(cfg)}/{LAUNCHD_LABEL}"),
                        "stop it and unload it", may_fail=True),)
        after = ()
    else:
        cmds = (Command(("schtasks", "/End", "/TN", TASK_NAME), "stop the running proxy", may_fail=True),
                Command(("schtasks", "/Delete", "/TN", TASK_NAME, "/F"), "unregister the logon task"))
        after = ()
    return ServicePlan(cfg.platform, "uninstall", path, log_file(cfg), commands=cmds + after, remove=(path,))


def status_plan(cfg: ServiceConfig) -> ServicePlan:
    """The read-only queries `status` runs (their exit codes are the answer)."""
    path = definition_path(cfg)
    if cfg.platform == "linux":
        cmds = (Command(_systemctl("is-enabled", UNIT_NAME), "starts at login?", may_fail=True),
                Command(_systemctl("is-active", UNIT_NAME), "running now?", may_fail=True))
    elif cfg.platform == "macos":
        cmds = (Command(("launchctl", "print", f"{_gui(cfg)}/{LAUNCHD_LABEL}"), "loaded, and its state",
                        may_fail=True),)
    else:
        cmds = (Command(("schtasks", "/Query", "/TN", TASK_NAME, "/V", "/FO", "LIST"), "registered, and its state",
                        may_fail=True),)
    return ServicePlan(cfg.platform, "status", path, log_file(cfg), commands=cmds)


# ---- showing a plan ---------------------------------------------------------------------
def command_line(platform: str, argv: Sequence[str]) -> str:
    """A command as a person types it in that OS's shell."""
    if platform == "windows":
        return subprocess.list2cmdline(list(argv))
    return shlex.join(argv)


def format_plan(plan: ServicePlan) -> str:
    """The dry-run text: every file with its full content, every command as typed.

    POSIX files are shown as `mkdir -p` + a quoted heredoc, so the lines can be pasted
    into a shell as they are; the Windows XML is shown between markers (it is written
    UTF-16, which Task Scheduler expects)."""
    out = [f"# exifguard service {plan.action} ({plan.kind}): dry run, nothing is changed"]
    step = 0
    for spec in plan.files:
        step += 1
        if plan.platform == "windows":
            out += [f"# {step}. write {spec.path} (UTF-16 with BOM), this content:",
                    "# ----- begin -----", spec.text.rstrip("\n"), "# ----- end -----"]
        else:
            q = shlex.quote
            out += [f"# {step}. write {spec.path} (mode {spec.mode:04o}):",
                    f"mkdir -p {q(str(spec.path.parent))}",
                    f"cat > {q(str(spec.path))} <<'EXIFGUARD_EOF'", spec.text.rstrip("\n"), "EXIFGUARD_EOF",
                    f"chmod {spec.mode:o} {q(str(spec.path))}"]
    removals = [f"del {subprocess.list2cmdline([str(p)])}" if plan.platform == "windows"
                else f"rm -f {shlex.quote(str(p))}" for p in plan.remove]
    if plan.action == "uninstall":
        cmd_lines = [(c, command_line(plan.platform, c.argv)) for c in plan.commands]
        before = [x for x in cmd_lines if "daemon-reload" not in x[1]]
        after = [x for x in cmd_lines if "daemon-reload" in x[1]]
        for c, line in before:
            step += 1
            out += [f"# {step}. {c.why}{' (may fail: then there was nothing to stop)' if c.may_fail else ''}", line]
        for line in removals:
            step += 1
            out += [f"# {step}. remove the definition", line]
        for c, line in after:
            step += 1
            out += [f"# {step}. {c.why}", line]
    else:
        for c in plan.commands:
            step += 1
            note = " (may fail: then there was nothing to stop)" if c.may_fail and plan.action != "status" else ""
            out += [f"# {step}. {c.why}{note}", command_line(plan.platform, c.argv)]
    out.append(f"# log file: {plan.log_file}")
    return "\n".join(out) + "\n"


def diff(old: str, new: str, path: PurePath) -> str:
    """What would change in an installed definition (paths and options only: no secrets)."""
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        f"{path} (installed)", f"{path} (new)"))


# ---- preconditions ----------------------------------------------------------------------
def preflight(cfg: ServiceConfig, *, which: Callable[[str], str | None],
              exists: Callable[[str], bool], env: Mapping[str, str]) -> None:
    """Refuse, with what to do, when the OS's tool or the user session is missing.

    Checked before anything is written: a unit file without a user manager to load it
    would be a half-install."""
    if cfg.platform == "linux":
        if not which("systemctl"):
            raise ServiceError("systemctl was not found: this system does not run systemd, so exifguard cannot "
                               "start itself at login here. Add `exifguard run` to your desktop's autostart "
                               "settings instead; `--dry-run` still shows the unit")
        runtime = env.get("XDG_RUNTIME_DIR") or ""
        if not runtime or not (exists(f"{runtime}/systemd/private") or exists(f"{runtime}/bus")):
            raise ServiceError("there is no systemd user session here (no $XDG_RUNTIME_DIR/systemd/private; "
                               "typical under sudo, su or a bare ssh login). Run this command as yourself in "
                               "your desktop session, without sudo; `--dry-run` shows what it would do")
    elif cfg.platform == "macos":
        if not which("launchctl"):
            raise ServiceError("launchctl was not found; run this command on macOS, in your own login session")
    elif not which("schtasks"):
        raise ServiceError("schtasks was not found; run this command on Windows, in your own session")


# ---- doing it ---------------------------------------------------------------------------
class Failed(ServiceError):
    """A command of the plan failed: names it, with its own message."""


def run_commands(plan: ServicePlan, runner: Runner, commands: Sequence[Command] | None = None,
                 report: Callable[[str], None] = lambda s: None) -> list[Result]:
    """Run the plan's commands in order; stop at the first failure that matters."""
    results = []
    for c in plan.commands if commands is None else commands:
        line = command_line(plan.platform, c.argv)
        report(line)
        r = runner(c.argv)
        results.append(r)
        if r.returncode != 0 and not c.may_fail:
            said = (r.stderr or r.stdout).strip()
            raise Failed(f"`{line}` failed (exit code {r.returncode})" + (f": {said}" if said else ""))
    return results
