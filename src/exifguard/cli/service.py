"""`exifguard service install|uninstall|status`: start the proxy at login.

The definitions and commands come from `exifguard.desktop.service` (pure, testable);
this module finds the person's folders and the program that is running now, checks the
preconditions, writes the file and runs the commands, and says what it did.  `--dry-run`
prints exactly the same plan and changes nothing.
"""

from __future__ import annotations

import argparse
import getpass
import importlib.metadata
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from ..desktop import service as svc
from .locations import command_prefix, console_script
from .proxy import _certs, _certs_arg

ACTIONS = {
    "install": "start exifguard now and at every login (replaces nothing without --force)",
    "uninstall": "stop it and no longer start it at login (the log stays)",
    "status": "say whether it is installed and running, and where its log is",
}
#: exit code of `status` when the service is not installed or not running (as in LSB/systemctl)
NOT_RUNNING = 3
#: how tests replace the command runner (nothing here may touch the real service manager in tests)
RUNNER: svc.Runner = svc.subprocess_runner


# ---- the person's configuration ---------------------------------------------------------
def host_platform() -> str:
    return svc.current_platform(sys.platform)


def program(platform: str) -> tuple[str, ...]:
    """The absolute command that runs *this* exifguard (never looked up on PATH).

    The interpreter path is kept as it is, not resolved: a venv's python is a symlink, and
    only through the venv's own path does it find the venv's packages.  POSIX: the
    `exifguard` entry point next to it when there is one (what pip/pipx installed), else
    the interpreter with `-P -m exifguard.cli` (-P: the working directory is not put on
    sys.path).  Windows: pythonw, so no console window opens at every login.
    """
    exe = Path(os.path.abspath(sys.executable))
    if platform == "windows":
        w = exe.with_name("pythonw.exe")
        return (str(w if w.is_file() else exe), "-P", "-m", "exifguard.cli")
    script = console_script()
    if script.is_file() and os.access(script, os.X_OK):
        return (os.path.abspath(script),)
    return (str(exe), "-P", "-m", "exifguard.cli")


def check_installed() -> None:
    """The service starts without this shell's environment: exifguard must be installed
    in the interpreter, not found through PYTHONPATH."""
    import exifguard
    here = Path(exifguard.__file__).resolve().parent.parent
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and Path(entry).expanduser().resolve() == here:
            raise svc.ServiceError(f"this exifguard is loaded through PYTHONPATH ({entry}), which the service will "
                                   f"not have; install it into {sys.executable} (`pip install -e .` in the "
                                   "checkout, or pipx) and run this again")
    try:
        importlib.metadata.distribution("exifguard")
    except importlib.metadata.PackageNotFoundError:
        raise svc.ServiceError(f"exifguard is not installed in {sys.executable}, so the service could not start "
                               "it; install it (`pip install -e .` in the checkout, or pipx) and run this "
                               "again") from None


def _windows_user(environ: dict[str, str]) -> str:
    name = environ.get("USERNAME") or getpass.getuser()
    domain = environ.get("USERDOMAIN")
    return f"{domain}\\{name}" if domain else name


def config(args: argparse.Namespace, platform: str, environ: dict[str, str] | None = None) -> svc.ServiceConfig:
    """The service configuration for the person running this command."""
    env = dict(os.environ if environ is None else environ)
    home = str(Path.home())
    uid = os.getuid() if hasattr(os, "getuid") else None
    return svc.ServiceConfig(
        platform=platform, program=program(platform), certs=str(_certs(args)), home=home,
        port=args.port, pac_port=args.pac_port, mode=args.mode, notify=getattr(args, "notify", None),
        env={k: env[k] for k in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "LOCALAPPDATA") if env.get(k)},
        uid=uid if platform == "macos" else None,
        user=_windows_user(env) if platform == "windows" else None)


def _q(arg: str) -> str:
    """One argument of a printed command, quoted for the shell the prefix is for
    (PowerShell on Windows, where command_prefix() prints the .ps1 script)."""
    if os.name == "nt":
        return arg if arg and all(c.isalnum() or c in "-_.:\\/" for c in arg) else "'" + arg.replace("'", "''") + "'"
    return shlex.quote(arg)


def _same_options(args: argparse.Namespace, certs: Path) -> str:
    """The options of this command again, for a command line we print."""
    out = f" --certs {_q(str(certs))}" if args.certs is not None else ""
    if args.port != 8080:
        out += f" --port {args.port}"
    if args.pac_port is not None:
        out += f" --pac-port {args.pac_port}"
    if args.mode is not None:
        out += f" --mode {args.mode}"
    if getattr(args, "notify", None) is not None:
        out += f" --notify {args.notify}"
    return out


# ---- the command --------------------------------------------------------------------------
def cmd_service(args: argparse.Namespace) -> int:
    if args.action is None:
        width = max(map(len, ACTIONS))
        lines = "\n".join(f"  {command_prefix()} service {a:<{width}}  {why}" for a, why in ACTIONS.items())
        print(f"exifguard service: say what to do:\n{lines}\nAdd --dry-run to see the files and commands "
              "first; --help for all options.", file=sys.stderr)
        return 2
    try:
        return _service(args)
    except svc.ServiceError as exc:
        print(f"exifguard: {exc}", file=sys.stderr)
        return 1


def _service(args: argparse.Namespace) -> int:
    host = host_platform()
    platform = args.platform or host
    if platform != host:
        # a preview of another OS's definition (for tests and the curious); Windows paths
        # cannot be derived from a POSIX machine's folders, see desktop/service.py for those
        if not args.dry_run:
            raise svc.ServiceError(f"--platform {platform} only previews (add --dry-run): this is {host}")
        if "windows" in (platform, host):
            raise svc.ServiceError(f"a {platform} definition can only be previewed on {platform}")
    if args.port < 1 or args.port > 65535:
        raise svc.ServiceError(f"--port {args.port} is not a port a service can keep (1-65535)")
    if args.pac_port is not None and not -1 <= args.pac_port <= 65535:
        raise svc.ServiceError(f"--pac-port {args.pac_port} is not a port (-1 turns the PAC server off)")
    cfg = config(args, platform)
    certs = Path(cfg.certs)
    if args.action == "install":
        return _install(args, cfg, certs)
    if args.action == "uninstall":
        return _uninstall(args, cfg, certs)
    return _status(args, cfg, certs)


def _preflight(cfg: svc.ServiceConfig) -> None:
    svc.preflight(cfg, which=shutil.which, exists=os.path.exists, env=dict(os.environ))


def _installed_text(path: Path, spec: svc.FileSpec) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise svc.ServiceError(f"cannot read {path} ({exc.strerror})") from None
    if spec.encoding == "utf-16":
        return data.decode("utf-16", errors="replace")
    return data.decode(spec.encoding, errors="replace")


def _write(spec: svc.FileSpec) -> None:
    path = Path(str(spec.path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, spec.mode)
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), spec.mode)
            f.write(spec.data())
        os.replace(tmp, path)
    except OSError as exc:
        raise svc.ServiceError(f"cannot write {path} ({exc.strerror}); nothing was registered") from None


def _install(args: argparse.Namespace, cfg: svc.ServiceConfig, certs: Path) -> int:
    prefix = command_prefix()
    spec = svc.definition(cfg)
    path = Path(str(spec.path))
    old = _installed_text(path, spec)
    # --force over the same definition re-registers and restarts it (a repair after a
    # manual `systemctl --user disable`, `launchctl bootout`, a deleted task)
    replacing = old is not None and (old != spec.text or args.force)
    plan = svc.install_plan(cfg, replacing=replacing)
    if args.dry_run:
        if old == spec.text and not args.force:
            print(f"# already installed with this definition ({path}): install would change nothing")
        elif replacing and old != spec.text:
            print(f"# an installed definition differs ({path}); install needs --force to replace it:")
            print("".join(f"#   {line}" for line in svc.diff(old or "", spec.text, spec.path).splitlines(True)))
        print(svc.format_plan(plan), end="")
        return 0
    if old == spec.text and not args.force:
        print(f"exifguard: already installed with this definition ({svc.KIND[cfg.platform]} {path}); nothing "
              f"changed.\n  Is it running? {prefix} service status{_same_options(args, certs)}\n"
              f"  To register and restart it again: {prefix} service install --force{_same_options(args, certs)}")
        return 0
    if replacing and not args.force:  # a different definition
        print(f"exifguard: a different exifguard service is installed ({path}):\n"
              f"{svc.diff(old or '', spec.text, spec.path)}"
              f"Replace it (it is restarted with the new definition):\n"
              f"  {prefix} service install --force{_same_options(args, certs)}", file=sys.stderr)
        return 1
    check_installed()
    _preflight(cfg)
    if not replacing:
        from .proxy import running_proxy
        running = running_proxy(certs)
        if running is not None:
            raise svc.ServiceError(f"`exifguard run` is running for {certs} now ({running}); the service could "
                                   "not start beside it. Stop it (Ctrl-C in its terminal), then install again")
    _write(spec)
    print(f"wrote {path}")
    try:
        svc.run_commands(plan, RUNNER, report=lambda line: print(f"ran   {line}"))
    except svc.Failed as exc:
        raise svc.ServiceError(f"{exc}\n  The definition is in {path}; remove it again with:\n"
                               f"  {prefix} service uninstall{_same_options(args, certs)}") from None
    print(f"exifguard: installed ({svc.KIND[cfg.platform]}): it runs now and at every login:\n"
          f"  {svc.command_line(cfg.platform, svc.run_argv(cfg))}\n"
          f"log:    {plan.log_file}\n"
          f"status: {prefix} service status{_same_options(args, certs)}")
    from ..proxy import ca
    if not (certs / ca.CERT_FILE).exists():
        print(f"Trust its CA once (it is created on the first start):\n  {prefix} cert install{_certs_opt_str(args, certs)}")
    return 0


def _certs_opt_str(args: argparse.Namespace, certs: Path) -> str:
    return f" --certs {_q(str(certs))}" if args.certs is not None else ""


def _registered(cfg: svc.ServiceConfig, plan: svc.ServicePlan, path: Path) -> bool:
    """Installed = the definition file is there; on Windows also a task known to schtasks
    (the XML is exifguard's copy, the registration is the task itself)."""
    if path.exists():
        return True
    if cfg.platform == "windows":
        return svc.run_commands(svc.status_plan(cfg), RUNNER)[0].returncode == 0
    return False


def _uninstall(args: argparse.Namespace, cfg: svc.ServiceConfig, certs: Path) -> int:
    plan = svc.uninstall_plan(cfg)
    path = Path(str(plan.definition))
    if args.dry_run:
        if not path.exists():
            print(f"# nothing is installed here ({path} does not exist): uninstall would change nothing")
        print(svc.format_plan(plan), end="")
        return 0
    _preflight(cfg)
    if not _registered(cfg, plan, path):
        print(f"exifguard: no exifguard service is installed ({path} does not exist); nothing was removed.")
        return 0
    last = [c for c in plan.commands if "daemon-reload" in c.argv]
    first = [c for c in plan.commands if c not in last]
    try:
        svc.run_commands(plan, RUNNER, first, report=lambda line: print(f"ran     {line}"))
        try:
            path.unlink()
            print(f"removed {path}")
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise svc.ServiceError(f"cannot remove {path} ({exc.strerror})") from None
        svc.run_commands(plan, RUNNER, last, report=lambda line: print(f"ran     {line}"))
    except svc.Failed as exc:
        raise svc.ServiceError(str(exc)) from None
    print(f"exifguard: uninstalled; it no longer starts at login. The log stays: {plan.log_file}")
    return 0


def _status(args: argparse.Namespace, cfg: svc.ServiceConfig, certs: Path) -> int:
    prefix = command_prefix()
    plan = svc.status_plan(cfg)
    path = Path(str(plan.definition))
    if args.dry_run:
        print(svc.format_plan(plan), end="")
        return 0
    _preflight(cfg)
    spec = svc.definition(cfg)
    old = _installed_text(path, spec)
    results = svc.run_commands(plan, RUNNER)
    state = _manager_state(cfg, results)
    if old is None and not (cfg.platform == "windows" and state["registered"]):
        print(f"exifguard service: not installed ({path} does not exist)\n"
              f"  install it: {prefix} service install{_same_options(args, certs)}")
        return NOT_RUNNING
    print(f"exifguard service: installed ({svc.KIND[cfg.platform]} {path})")
    print(f"  starts at login: {state['at_login']}")
    print(f"  running:         {state['running']}")
    from . import instance
    if instance.fcntl is not None:  # run.lock tells a live run from a stale run.json (not on Windows)
        from .proxy import running_proxy
        proxy = running_proxy(certs)
        print("  proxy:           " + (f"http://{proxy} (for {certs})" if proxy else f"none running for {certs}"))
    log = Path(str(plan.log_file))
    print(f"  log:             {log}" + ("" if log.exists() else " (not written yet)"))
    if old is not None and old != spec.text:
        print(f"  the installed definition differs from these options; to use them:\n"
              f"    {prefix} service install --force{_same_options(args, certs)}")
    elif not (state["active"] and state["registered"]):
        print(f"  to register and (re)start it again:\n"
              f"    {prefix} service install --force{_same_options(args, certs)}")
    hint = {"linux": f"systemctl --user status {svc.UNIT_NAME}",
            "macos": f"launchctl print gui/{cfg.uid}/{svc.LAUNCHD_LABEL}",
            "windows": f"schtasks /Query /TN {svc.TASK_NAME} /V /FO LIST"}[cfg.platform]
    print(f"  details:         {hint}")
    return 0 if state["active"] else NOT_RUNNING


def _manager_state(cfg: svc.ServiceConfig, results: list[svc.Result]) -> dict[str, Any]:
    """What the service manager said, in words (the commands' exit codes are the answer;
    their text only adds the state's name)."""
    if cfg.platform == "linux":
        enabled, active = results
        word_e = (enabled.stdout.strip() or "unknown").splitlines()[0]
        word_a = (active.stdout.strip() or "unknown").splitlines()[0]
        return {"registered": enabled.returncode == 0,
                "at_login": f"yes ({word_e})" if enabled.returncode == 0 else f"no ({word_e})",
                "running": f"yes ({word_a})" if active.returncode == 0 else f"no ({word_a})",
                "active": active.returncode == 0}
    if cfg.platform == "macos":
        (printed,) = results
        loaded = printed.returncode == 0
        running = loaded and "state = running" in printed.stdout
        return {"registered": loaded,
                "at_login": "yes (loaded)" if loaded else "no (not loaded: `launchctl bootstrap` was not run)",
                "running": "yes" if running else "no", "active": running}
    (queried,) = results
    registered = queried.returncode == 0
    running = registered and any(line.split(":", 1)[-1].strip().lower() == "running"
                                 for line in queried.stdout.splitlines() if line.lower().startswith("status"))
    return {"registered": registered,
            "at_login": "yes (task registered)" if registered else "no (no task)",
            "running": "yes" if running else "no", "active": running}


# ---- registration -----------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add `service` to the `exifguard` parser."""
    p = sub.add_parser(
        "service", help="start exifguard at login (install, uninstall, status)",
        description="Run the proxy and its PAC server at every login, restarted after a failure, logging "
                    "to a rotated file: a systemd user unit on Linux, a launchd LaunchAgent on macOS, a "
                    "scheduled task for your user on Windows. No administrator rights are used. The service "
                    "runs this same exifguard with the --certs folder pinned. --dry-run prints every file "
                    "and command first. `status` exits 0 when it runs, 3 when it does not.")
    p.add_argument("action", nargs="?", choices=list(ACTIONS), metavar="ACTION",
                   help="; ".join(f"{a}: {why}" for a, why in ACTIONS.items()))
    p.add_argument("--dry-run", action="store_true",
                   help="print the files (path and full content) and commands, change nothing")
    p.add_argument("--force", action="store_true",
                   help="install: replace an installed definition that differs")
    _certs_arg(p)
    p.add_argument("--port", type=int, default=8080, help="the proxy's port (default 8080)")
    p.add_argument("--pac-port", type=int, default=None, metavar="PORT",
                   help="the PAC server's port (default: proxy port + 1; -1: no PAC server)")
    p.add_argument("--mode", choices=["strip", "audit", "block"], default=None,
                   help="pin the run's --mode (default: strip)")
    p.add_argument("--notify", choices=["blocked", "all", "off"], default=None,
                   help="pin the run's --notify (default: blocked, a notification when an upload is refused)")
    p.add_argument("--platform", choices=list(svc.PLATFORMS), default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_service)
