"""`exifguard run`: start mitmdump with the exifguard addon, and say "ready" only when it is.

The order is the point (each step fails closed, before anything claims to work):

1. options: exifguard's flags and any `--set exifguard_*` after `--` are merged by one
   rule (below); unknown `exifguard_*` names, bad values and conflicts stop the run;
   `body_size_limit` is set to the inspection limit unless a smaller one is given;
2. one instance per certs folder and per port (`instance.py`): a second run reports
   the first ("already running (pid N, port P)") and touches nothing of it; a port held
   by another program gets exifguard's own `--port` advice;
3. mitmdump starts in its own process group, with a parent-death signal (Linux), so it
   never outlives `exifguard` (not even `kill -9`);
4. the guard addon in mitmdump reports (readiness file) that the addon is loaded and
   configured, with the effective options; `exifguard run` compares them with what it
   asked for (config.yaml in the certs folder can override `--set`), and only then
   writes run.json, serves the PAC and prints the banner;
5. SIGINT/SIGTERM/SIGHUP end the run within a few seconds: SIGINT, then SIGTERM, then
   SIGKILL to mitmdump, each with a short timeout; no wait is unbounded.

With `--log-file` (what `exifguard service` runs), the run's output and mitmdump's (piped
and copied by threads) also go to a private rotated file: see `runlog.py`.

The merge rule for exifguard options: each may be given once, as an exifguard flag
(`--mode`, `--on-error`, `--notify`, `--audit-log`/`--no-audit-log`, `--allow-remote`) or as `--set`
after `--`; given both ways it must be the same value, else the run stops naming both.
Host lists (`--add-host`/`exifguard_hosts`, `--remove-host`/`exifguard_hosts_remove`)
are merged (union), and exifguard run intercepts, constrains and PACs the union.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import instance
from .locations import command_prefix
from . import runlog
from .runlog import RunLog

RUN_STATE = "run.json"
AUDIT_NAME = "audit.jsonl"
PAC_NAME = "proxy.pac"
READY_TIMEOUT_S = 90.0     # mitmdump normally reports within 1-2 s; a loaded machine is slow
STOP_STEPS = ((signal.SIGINT, 4.0), (signal.SIGTERM, 2.0), (getattr(signal, "SIGKILL", signal.SIGTERM), 2.0))
#: exifguard options exifguard run sets itself and a person must not
RESERVED = {"exifguard_selftest_token": "set by exifguard run for `exifguard selftest`",
            "exifguard_ready_file": "set by exifguard run to learn that the addon is ready"}
#: exifguard option <- the run flag that also sets it (for messages)
FLAG_OF = {"exifguard_mode": "--mode", "exifguard_on_error": "--on-error", "exifguard_notify": "--notify",
           "exifguard_audit_log": "--audit-log/--no-audit-log", "exifguard_allow_remote": "--allow-remote",
           "exifguard_hosts": "--add-host", "exifguard_hosts_remove": "--remove-host"}
#: mitmproxy options exifguard run owns (a different value after -- would be wrong or unsafe)
OWNED = {"listen_host": "--host", "listen_port": "--port", "confdir": "--certs"}


class RunError(Exception):
    """A reason to stop before (or instead of) reporting ready; printed as `exifguard: ...`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---- options --------------------------------------------------------------------------
@dataclass
class Plan:
    """What exifguard run asks mitmdump for, and what it will check came out."""
    sets: list[str]                     # exifguard `--set` specs exifguard run passes itself
    expected: dict[str, Any]            # option -> typed value the running addon must have
    extra_hosts: list[str]
    removed_hosts: list[str]
    body_size_limit: str | None         # None: the user's (smaller) value stays in passthrough
    body_limit_bytes: int
    audit_log: str                      # effective path ("" = none)
    mode: str | None
    on_error: str | None
    user_sets: dict[str, list[str]] = field(default_factory=dict)
    notify: str | None = None


def parse_passthrough(passthrough: list[str]) -> argparse.Namespace:
    """The arguments after `--`, parsed by mitmdump's own parser (same abbreviations, same
    grouping of repeated --set) so exifguard sees exactly what mitmdump will."""
    import asyncio

    from mitmproxy import master, options
    from mitmproxy.addons import default_addons, dumper
    from mitmproxy.tools import cmdline
    loop = asyncio.new_event_loop()
    try:  # the addons' options (map_remote, ...) are flags too, as in mitmdump
        m = master.Master(options.Options(), event_loop=loop)
        m.addons.add(*default_addons(), dumper.Dumper())
        parser = cmdline.mitmdump(m.options)
    finally:
        loop.close()
    parser.prog = "mitmdump arguments after --"
    try:
        return parser.parse_args(passthrough)
    except SystemExit:
        raise RunError("the arguments after -- are not valid mitmdump arguments (see above)", 2) from None


def split_sets(specs: list[str] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for spec in specs or []:
        name, eq, value = spec.partition("=")
        out.setdefault(name, [])
        if eq:
            out[name].append(value)
    return out


def plan_options(args: argparse.Namespace, certs: Path, ns: argparse.Namespace) -> Plan:
    """Merge run flags and `-- --set` values by the rule in the module docstring."""
    from mitmproxy.utils import human

    from ..carriers import CarrierOptions
    from ..proxy import guard
    specs = guard.option_specs()
    user = split_sets(getattr(ns, "setoptions", None))
    for name, flag in OWNED.items():
        if name in user or getattr(ns, name, None) not in (None, [], ""):
            raise RunError(f"{name} is set after --; exifguard run sets it: use {flag} instead", 2)
    typed: dict[str, Any] = {}
    for name, values in user.items():
        if not name.startswith("exifguard"):
            continue
        if name in RESERVED:
            raise RunError(f"{name} cannot be set after --: it is {RESERVED[name]}", 2)
        if name not in specs:
            known = ", ".join(sorted(k for k in specs.keys() if k not in RESERVED))
            raise RunError(f"unknown option {name} after --set (exifguard's options: {known})", 2)
        try:
            typed[name] = guard.check_value(specs, name, guard._Strings(values))  # noqa: SLF001
        except ValueError as exc:
            raise RunError(f"bad value after --set: {exc}", 2) from None

    def merged(name: str, flag_value: Any, explicit: bool, show: str) -> tuple[Any, bool]:
        """(value, pass_it_ourselves)."""
        if name in typed:
            if explicit and typed[name] != flag_value:
                raise RunError(f"{name} is given twice with different values: {show} and "
                               f"`--set {name}={','.join(user[name])}` after --; give it once", 2)
            return typed[name], False
        return flag_value, True

    sets: list[str] = []
    expected: dict[str, Any] = {}
    mode, ours = merged("exifguard_mode", args.mode, args.mode is not None, f"--mode {args.mode}")
    if ours and mode is not None:
        sets.append(f"exifguard_mode={mode}")
    on_error, ours = merged("exifguard_on_error", args.on_error, args.on_error is not None,
                            f"--on-error {args.on_error}")
    if ours and on_error is not None:
        sets.append(f"exifguard_on_error={on_error}")
    flag_notify = getattr(args, "notify", None)
    notify, ours = merged("exifguard_notify", flag_notify, flag_notify is not None, f"--notify {flag_notify}")
    if ours and notify is not None:
        sets.append(f"exifguard_notify={notify}")
    if args.no_audit_log and args.audit_log:
        raise RunError("--audit-log and --no-audit-log contradict each other", 2)
    if args.no_audit_log:
        flag_log, explicit, show = "", True, "--no-audit-log"
    elif args.audit_log:
        flag_log, explicit, show = str(args.audit_log.expanduser()), True, f"--audit-log {args.audit_log}"
    else:
        flag_log, explicit, show = str(certs / AUDIT_NAME), False, ""
    audit_log, ours = merged("exifguard_audit_log", flag_log, explicit, show)
    if ours:
        sets.append(f"exifguard_audit_log={audit_log}")
    allow_remote, ours = merged("exifguard_allow_remote", bool(args.allow_remote), bool(args.allow_remote),
                                "--allow-remote")
    if ours and allow_remote:
        sets.append("exifguard_allow_remote=true")
    extra = list(args.add_host or []) + list(typed.get("exifguard_hosts", []))
    removed = list(args.remove_host or []) + list(typed.get("exifguard_hosts_remove", []))
    sets += [f"exifguard_hosts={h}" for h in args.add_host or []]
    sets += [f"exifguard_hosts_remove={h}" for h in args.remove_host or []]
    # what the running addon must show: everything set by us or after --
    for name, value in typed.items():
        expected[name] = value
    for spec in sets:
        name = spec.split("=", 1)[0]
        if name not in ("exifguard_hosts", "exifguard_hosts_remove"):
            expected[name] = guard.check_value(specs, name, guard._Strings([spec.split("=", 1)[1]]))  # noqa: SLF001
    expected["exifguard_hosts"] = extra
    expected["exifguard_hosts_remove"] = removed
    # body size: the inspection limit caps what mitmproxy buffers
    limit = CarrierOptions().max_body_bytes
    if user.get("stream_large_bodies") not in (None, [], [""]):
        raise RunError("stream_large_bodies cannot be used with exifguard: a streamed upload cannot be "
                       "checked (body_size_limit caps memory instead)", 2)
    body: str | None = str(limit)
    if "body_size_limit" in user:
        vals = user["body_size_limit"]
        try:
            n = human.parse_size(vals[-1]) if vals and vals[-1] else None
        except ValueError:
            raise RunError(f"body_size_limit={vals[-1]} is not a size (examples: 1m, 200k)", 2) from None
        if n is None or n > limit or len(vals) != 1:
            raise RunError(f"body_size_limit after -- must be one size of at most {limit} bytes "
                           f"({limit // 2**20} MiB, what exifguard can inspect); larger uploads cannot be "
                           "checked", 2)
        body, limit = None, n
    return Plan(sets, expected, extra, removed, body, limit, str(audit_log or ""),
                mode, on_error, user, notify)


def build_mitmdump_args(*, host: str, port: int, certs: Path, hosts: Any, constrained: bool,
                        exifguard_sets: list[str], token: str, passthrough: list[str],
                        ready_file: Path | None = None, body_size_limit: str | None = None) -> list[str]:
    """The mitmdump argv (without the program) for `exifguard run`.

    connection_strategy=lazy: with upstream_cert=false (needed by the constrained CA)
    there is no upstream certificate to copy, so eager connecting buys only ALPN
    mirroring; lazy opens the upstream connection when a request exists, which lets
    `exifguard selftest` deliver to a local sink without contacting the real service
    (mitmproxy translates HTTP/2 <-> HTTP/1.1 when the two sides differ).
    Each exifguard option appears at most once: mitmproxy drops the whole script when a
    deferred option has two values (the bug that made `-- --set exifguard_mode=...` fail open).
    """
    from .proxy import script_path
    a = ["--listen-host", host, "--listen-port", str(port), "-s", str(script_path()),
         "--set", f"confdir={certs}", "--set", "connection_strategy=lazy", "--set", "onboarding=false"]
    if constrained:
        a += ["--set", "upstream_cert=false"]
    for rx in hosts.allow_hosts():
        a += ["--allow-hosts", rx]
    for spec in exifguard_sets:
        a += ["--set", spec]
    if token:
        a += ["--set", f"exifguard_selftest_token={token}"]
    if ready_file is not None:
        a += ["--set", f"exifguard_ready_file={ready_file}"]
    if body_size_limit is not None:
        a += ["--set", f"body_size_limit={body_size_limit}"]
    if not any("termlog_verbosity" in x for x in passthrough):
        # per-connection lines (client/server connect/disconnect) would bury exifguard's
        # line per image; an explicit termlog_verbosity after -- brings them back
        a += ["-s", str(quiet_script_path())]
    if not any("flow_detail" in x for x in passthrough):
        # mitmdump's per-flow lines print request URLs, and upload URLs carry signatures
        # (Azure SAS `sig=`, S3 policies); exifguard's own line per image names host and
        # path only.  `-- --set flow_detail=1` brings mitmdump's lines back.
        a += ["--set", "flow_detail=0"]
    return a + passthrough


def quiet_script_path() -> Path:
    """The `mitmdump -s` script that hides mitmproxy's per-connection lines."""
    return Path(__file__).resolve().with_name("quiet_connections.py")


# ---- the child ----------------------------------------------------------------------------
def _parent_death_setup() -> Any:
    """preexec_fn for Linux: mitmdump gets SIGTERM when exifguard dies, even by kill -9.

    The prctl function is resolved here, before fork, so the child only makes one libc
    call (no imports, no allocation worth speaking of) between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1
    sig = int(signal.SIGTERM)

    def setup() -> None:
        prctl(pr_set_pdeathsig, sig, 0, 0, 0)
        if os.getppid() != parent:  # exifguard died before prctl took effect
            os._exit(1)
    return setup


def spawn(argv: list[str], log: "RunLog | None" = None) -> subprocess.Popen:
    """Start mitmdump.  With a log, its stdout and stderr are piped and copied line by line
    (to the log and to exifguard's own streams) by two threads (`RunLog.pump`); the child
    is told to write unbuffered, so no line waits in its buffer when it is stopped."""
    kw: dict[str, Any] = {"stdin": subprocess.DEVNULL}
    if os.name == "posix":
        kw["process_group"] = 0   # our own group: the terminal's Ctrl-C reaches exifguard only,
        setup = _parent_death_setup()  # which stops mitmdump deliberately (stop_child)
        if setup is not None:
            kw["preexec_fn"] = setup
    if log is not None:
        kw.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        if os.name == "nt":  # pragma: no cover - a logged run is a background run: no console window
            kw["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    proc = subprocess.Popen(argv, **kw)
    if log is not None:
        log.pump(proc)
    return proc


def _signal_child(proc: subprocess.Popen, sig: int) -> None:
    try:
        if os.name == "posix":
            os.killpg(proc.pid, sig)
        else:  # pragma: no cover - Windows: send_signal(SIGINT) raises ValueError there
            proc.terminate()
    except (ProcessLookupError, PermissionError):
        pass


def stop_child(proc: subprocess.Popen) -> int | None:
    """SIGINT, then SIGTERM, then SIGKILL, each with a short timeout: never an unbounded wait."""
    for sig, timeout in STOP_STEPS:
        if proc.poll() is not None:
            break
        _signal_child(proc, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()


class Signals:
    """SIGINT/SIGTERM/SIGHUP only set a flag: raising from a handler inside
    subprocess.wait() once left exifguard hung for minutes with mitmdump defunct."""

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        self.received: list[int] = []
        self._prev: dict[int, Any] = {}

    def __enter__(self) -> "Signals":
        for n in self.NAMES:
            s = getattr(signal, n, None)
            if s is not None:
                self._prev[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received.append(signum)

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._prev.items():
            signal.signal(s, h)


# ---- readiness --------------------------------------------------------------------------
def wait_ready(proc: subprocess.Popen, ready_file: Path, sigs: Signals,
               timeout: float | None = None) -> dict[str, Any] | None:
    """The guard's readiness record, None if stopped by a signal; RunError otherwise."""
    timeout = READY_TIMEOUT_S if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while True:
        if sigs.received:
            return None
        record = _read_record(ready_file)
        if record is not None and record.get("pid") == proc.pid:
            return record
        if proc.poll() is not None:
            record = _read_record(ready_file)
            if record is not None and record.get("pid") == proc.pid:
                return record
            raise RunError(f"mitmdump exited (code {proc.returncode}) before exifguard's addon was "
                           "ready: see its messages above")
        if time.monotonic() > deadline:
            raise RunError(f"exifguard's addon did not report ready within {timeout:.0f} s (the script "
                           "may have failed to load: see mitmdump's messages above)")
        time.sleep(0.05)


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def _norm(v: Any) -> Any:
    return [_norm(x) for x in v] if isinstance(v, (list, tuple)) else v


def verify_record(record: dict[str, Any], plan: Plan, *, host: str, port: int, certs: Path,
                  allow_hosts: list[str]) -> tuple[int, list[str]]:
    """Check the running mitmdump against the plan; returns (listening port, notes).
    Raises RunError naming the first option that came out different."""
    from mitmproxy.utils import human
    if not record.get("ok"):
        faults = record.get("faults") or ["unknown reason"]
        raise RunError("exifguard's addon is not active in mitmdump, so the proxy was stopped:\n"
                       + "\n".join(f"  - {f}" for f in faults))
    eff = record.get("options") or {}
    config = certs / "config.yaml"
    where = f" (is it set in {config}?)" if config.exists() else ""
    for name, want in plan.expected.items():
        got = eff.get(name)
        if name == "exifguard_audit_log":
            same = str(got or "") == str(want or "")
        else:
            same = _norm(got) == _norm(want)
        if not same:
            raise RunError(f"{name} is {got!r} in the running mitmdump, but exifguard run asked for "
                           f"{want!r}{where}; set each exifguard option in one place")
    try:
        limit = human.parse_size(eff.get("body_size_limit") or None)
    except ValueError:
        limit = None
    if limit is None or limit > plan.body_limit_bytes:
        raise RunError(f"body_size_limit is {eff.get('body_size_limit')!r} in the running mitmdump{where}; "
                       f"exifguard needs at most {plan.body_limit_bytes} bytes")
    if eff.get("stream_large_bodies"):
        raise RunError(f"stream_large_bodies is set in the running mitmdump{where}; exifguard cannot "
                       "check streamed uploads")
    if eff.get("ignore_hosts"):
        raise RunError(f"ignore_hosts is set in the running mitmdump{where}; exifguard run decides which "
                       "hosts are intercepted (--add-host/--remove-host)")
    missing = [rx for rx in allow_hosts if rx not in (eff.get("allow_hosts") or [])]
    if missing:
        raise RunError(f"allow_hosts in the running mitmdump lacks {missing[0]}{where}; AI hosts would "
                       "pass uncleaned")
    if eff.get("listen_host") != host:
        raise RunError(f"mitmdump listens on {eff.get('listen_host')!r}, not {host}{where}")
    ports = [int(p) for _h, p in record.get("listen") or []]
    if not ports:
        raise RunError("mitmdump reports no listening address")
    if port and port not in ports:
        raise RunError(f"mitmdump listens on port {ports[0]}, not {port}{where}")
    notes = []
    defaults = _defaults()
    for name, value in sorted(eff.items()):
        if name.startswith("exifguard") and name not in plan.expected and name in defaults \
                and name not in ("exifguard_mode", "exifguard_on_error") \
                and _norm(value) != _norm(defaults[name]):
            notes.append(f"{name}={value}")
    return ports[0], notes


def _defaults() -> dict[str, Any]:
    from ..proxy import guard
    specs = guard.option_specs()
    return {k: specs.default(k) for k in specs.keys()}


# ---- the command --------------------------------------------------------------------------
def _hosts_args(extra: list[str], removed: list[str]) -> str:
    """Host flags for a printed command ("service:ID" and "file:PATH" items of the host list
    are spelt as the --add-service and --services flags they came from)."""
    out = []
    for h in extra:
        if h.startswith("service:"):
            out.append(f" --add-service {shlex.quote(h[len('service:'):])}")
        elif h.startswith("file:"):
            out.append(f" --services {shlex.quote(h[len('file:'):])}")
        else:
            out.append(f" --add-host {shlex.quote(h)}")
    return "".join(out) + "".join(f" --remove-host {shlex.quote(h)}" for h in removed)


def ca_outdated_message(left_out: list[Any], prefix: str, certs: Path, explicit_certs: bool, plan: Plan) -> str:
    """What `exifguard run` says when the CA's name constraints miss hosts of the table.

    Those hosts stay intercepted (allow_hosts, PAC): a browser that trusts the old CA
    refuses the certificate exifguard shows for them (outside its permitted names), so
    an upload there fails instead of leaving uncleaned.  Leaving them out of allow_hosts
    would tunnel them untouched to the service: a silent leak for every client that uses
    the proxy directly rather than through the PAC.
    """
    names = ", ".join(f"{e.spec} ({e.service})" for e in left_out)
    return (f"exifguard: the CA in {certs} was made for an older host list and does not cover: {names}.\n"
            "  Browsers will refuse exifguard's certificate for these hosts, so uploads to them fail "
            "(they are not sent uncleaned).\n"
            "  To cover them, stop exifguard (Ctrl-C) and re-issue and re-install the CA (the old one is "
            "removed from the browser), then start exifguard again:\n"
            f"    {prefix} cert reissue{_certs_arg(certs, explicit_certs)}"
            f"{_hosts_args(plan.extra_hosts, plan.removed_hosts)}")


def _certs_arg(certs: Path, explicit: bool) -> str:
    return f" --certs {shlex.quote(str(certs))}" if explicit else ""


def _already_running(holder: instance.Holder, what: str) -> RunError:
    pid = f" (kill {holder.pid})" if holder.pid else ""
    who = holder.describe()
    scope = "" if what in who else f" for {what}"
    return RunError(f"already running ({who}){scope}; stop it first{pid} or use another --certs/--port")


def cmd_run(args: argparse.Namespace, certs: Path, hosts_factory: Any) -> int:
    log_path = getattr(args, "log_file", None)
    if log_path is None:
        return _run_reporting(args, certs, hosts_factory, None)
    try:
        log = RunLog(Path(log_path).expanduser().absolute(),
                     max_bytes=getattr(args, "log_max_bytes", None) or runlog.MAX_BYTES)
    except OSError as exc:
        print(f"exifguard: cannot open the log file {log_path} ({exc.strerror or exc}); choose another "
              "--log-file", file=sys.stderr, flush=True)
        return 1
    with log:
        return _run_reporting(args, certs, hosts_factory, log)


def _run_reporting(args: argparse.Namespace, certs: Path, hosts_factory: Any, log: "RunLog | None") -> int:
    try:
        return _run(args, certs, hosts_factory, log)
    except RunError as exc:
        print(f"exifguard: {exc}", file=sys.stderr, flush=True)
        return exc.code


def _run(args: argparse.Namespace, certs: Path, hosts_factory: Any, log: "RunLog | None" = None) -> int:
    from ..proxy import ca
    prefix = command_prefix()
    passthrough = list(args.mitmdump_args or [])
    if passthrough and passthrough[0] == "--":
        passthrough = passthrough[1:]
    if args.port < 0 or args.port > 65535:
        raise RunError(f"--port {args.port} is not a port number", 2)
    plan = plan_options(args, certs, parse_passthrough(passthrough))
    hosts = hosts_factory(plan.extra_hosts, plan.removed_hosts)

    # one instance per certs folder and per port; nothing is written before both are ours
    ca.ensure_private_dir(certs)
    certs_lock = instance.InstanceLock(certs / instance.LOCK_NAME)
    held = certs_lock.acquire()
    if held is not None:
        raise _already_running(held, f"certs {certs}")
    port_lock = None
    try:
        if args.port:
            port_lock = instance.port_lock(args.port)
            held = port_lock.acquire() if port_lock is not None else None
            if held is not None:
                port_lock = None
                raise _already_running(held, f"port {args.port}")
            if not instance.port_free(args.host, args.port):
                alt = instance.free_port(args.host, args.port)
                raise RunError(f"port {args.port} on {args.host} is in use by another program. Pick a free "
                               f"port with --port, for example:\n  {prefix} run --port {alt}")
        return _run_locked(args, certs, plan, hosts, passthrough, prefix, certs_lock, port_lock, log)
    finally:
        if port_lock is not None:
            port_lock.release()
        certs_lock.release()


def _run_locked(args: argparse.Namespace, certs: Path, plan: Plan, hosts: Any, passthrough: list[str],
                prefix: str, certs_lock: instance.InstanceLock, port_lock: instance.InstanceLock | None,
                log: "RunLog | None" = None) -> int:
    from ..proxy import ca, pac
    info, created = ca.ensure_ca(certs, hosts.domains())
    if created:
        print(f"exifguard: created a new CA limited to the AI hosts: {info.cert_path}")
    explicit_certs = args.certs is not None
    left_out = hosts.uncovered(info.domains) if info.constrained else []
    if left_out:
        print(ca_outdated_message(left_out, prefix, certs, explicit_certs, plan), file=sys.stderr, flush=True)
    if args.host not in ("127.0.0.1", "::1", "localhost") and not _loopback(args.host):
        bar = "!" * 72
        if args.allow_remote or plan.expected.get("exifguard_allow_remote"):
            what = "other machines CAN use this proxy (--allow-remote) and reach the AI services through it"
        else:
            what = "clients that are not on this machine will still be refused (add --allow-remote to accept them)"
        print(f"{bar}\nexifguard: WARNING: listening on {args.host}, not loopback: {what}.\n"
              f"Use --host 127.0.0.1 unless you mean it.\n{bar}", file=sys.stderr, flush=True)
    run_id = secrets.token_hex(8)
    token = secrets.token_urlsafe(24)
    ready_file = certs / f".ready-{run_id}.json"
    from .proxy import mitmdump_command
    argv = mitmdump_command() + build_mitmdump_args(
        host=args.host, port=args.port, certs=certs, hosts=hosts, constrained=info.constrained,
        exifguard_sets=plan.sets, token=token, passthrough=passthrough, ready_file=ready_file,
        body_size_limit=plan.body_size_limit)
    state = certs / RUN_STATE
    pac_srv = None
    wrote_state = False
    with Signals() as sigs:
        proc = spawn(argv, log)
        try:
            try:
                record = wait_ready(proc, ready_file, sigs)
                if record is None:
                    stop_child(proc)
                    if log is not None:
                        log.drain()
                    print("exifguard: stopped before the proxy was ready.", flush=True)
                    return 0
                port, notes = verify_record(record, plan, host=args.host, port=args.port, certs=certs,
                                            allow_hosts=hosts.allow_hosts())
            except RunError as exc:
                stop_child(proc)
                if args.port and proc.returncode not in (None, 0) and not instance.port_free(args.host, args.port):
                    # taken between our probe and mitmdump's bind: our advice, not mitmproxy's
                    alt = instance.free_port(args.host, args.port)
                    raise RunError(f"{exc}\nport {args.port} on {args.host} is in use by another program. Pick "
                                   f"a free port with --port, for example:\n  {prefix} run --port {alt}") from None
                raise
            finally:
                ready_file.unlink(missing_ok=True)
            if port_lock is None and args.port == 0:
                port_lock = instance.port_lock(port)
                if port_lock is not None and port_lock.acquire() is not None:
                    port_lock = None  # a stale holder of a port the kernel just gave us: ignore
            for lock in (certs_lock, port_lock):
                if lock is not None:
                    lock.describe_self(pid=os.getpid(), port=port, certs=str(certs))
            client_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
            proxy_addr = pac.hostport(client_host, port)  # [::1]:8080 for IPv6
            text = pac.pac_text(hosts, proxy_addr)
            pac_file = certs / PAC_NAME
            pac_file.write_text(text)
            _warn_stale_system_setting(certs, text, hosts, prefix, explicit_certs)
            pac_port = port + 1 if args.pac_port is None else args.pac_port
            pac_url = None
            if pac_port >= 0:
                try:
                    from ..proxy.status import StatusSource
                    pac_srv, pac_url = pac.serve(text, pac_port, status=StatusSource(
                        proxy=proxy_addr, ca_cert=info.cert_path, audit_log=plan.audit_log or None,
                        hosts=hosts, mode=(record.get("options") or {}).get("exifguard_mode"),
                        cert_install=f"{prefix} cert install{_certs_arg(certs, explicit_certs)}"))
                except OSError as exc:
                    print(f"exifguard: could not serve the PAC on 127.0.0.1:{pac_port} ({exc.strerror}); "
                          "use the file or the data: URL, or --pac-port", file=sys.stderr)
            _write_private_json(state, {"proxy": proxy_addr, "selftest_token": token, "pid": os.getpid(),
                                        "mitmdump_pid": proc.pid, "run_id": run_id, "port": port,
                                        "pac_url": pac_url, "audit_log": plan.audit_log or None})
            wrote_state = True
            _banner(prefix, hosts, info, proxy_addr, pac_url, pac_file, plan, record, notes, certs,
                    explicit_certs, log_file=log.path if log is not None else None)
            while not sigs.received:
                try:
                    proc.wait(timeout=0.25)
                    break
                except subprocess.TimeoutExpired:
                    pass
            if sigs.received:
                stop_child(proc)
                if log is not None:
                    log.drain()
                print("exifguard: stopped.", flush=True)
                return 0
            rc = proc.returncode
            if log is not None:
                log.drain()
            print(f"exifguard: mitmdump exited (code {rc}); the proxy is down.", file=sys.stderr, flush=True)
            return rc or 1
        finally:
            if proc.poll() is None:
                stop_child(proc)
            if log is not None:
                log.drain()  # mitmdump's last lines, before our own "stopped"
            if wrote_state:
                _remove_state_if_ours(state, run_id)
            if pac_srv is not None:
                _shutdown_pac(pac_srv)


def _warn_stale_system_setting(certs: Path, text: str, hosts: Any, prefix: str, explicit_certs: bool) -> None:
    """`proxy on` put a data: PAC in the system setting; if it is older than this proxy's PAC
    (new hosts after an upgrade, --add-service, another port), say so loudly: the browser
    sends the new hosts DIRECT until the setting is refreshed."""
    try:
        from ..desktop import sysproxy
        why = sysproxy.stale_setting(certs, text, [d for d, _sub in hosts.pac_entries()])
    except Exception:  # noqa: BLE001 - a hint must never stop the proxy
        return
    if why:
        bar = "!" * 72
        print(f"{bar}\nexifguard: the system proxy setting that `proxy on` made holds an older PAC: {why}.\n"
              f"Refresh it:\n  {prefix} proxy on{_certs_arg(certs, explicit_certs)}\n{bar}",
              file=sys.stderr, flush=True)


def _loopback(host: str) -> bool:
    import ipaddress
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _write_private_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def _remove_state_if_ours(state: Path, run_id: str) -> None:
    """run.json is removed only by the run that wrote it."""
    try:
        if json.loads(state.read_text()).get("run_id") == run_id:
            state.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _shutdown_pac(srv: Any) -> None:
    """socketserver.shutdown() waits for serve_forever without a timeout: bound it."""
    t = threading.Thread(target=srv.shutdown, daemon=True)
    t.start()
    t.join(2.0)
    try:
        srv.server_close()
    except OSError:
        pass


def _banner(prefix: str, hosts: Any, info: Any, proxy_addr: str, pac_url: str | None, pac_file: Path,
            plan: Plan, record: dict[str, Any], notes: list[str], certs: Path, explicit_certs: bool,
            log_file: Path | None = None) -> None:
    eff = record.get("options") or {}
    mode = eff.get("exifguard_mode", "strip")
    on_error = eff.get("exifguard_on_error", "block")
    cert_args = _certs_arg(certs, explicit_certs)
    host_args = _hosts_args(plan.extra_hosts, plan.removed_hosts)
    print(f"exifguard proxy: http://{proxy_addr}  (ready: the exifguard addon is loaded and checked; HTTPS "
          f"intercepted only for {len(hosts.entries)} AI upload hosts; everything else is tunnelled untouched)")
    what = {"strip": "images are cleaned in flight", "audit": "AUDIT ONLY: images are forwarded UNCHANGED",
            "block": "every image upload is refused"}.get(mode, mode)
    print(f"mode:            {mode} ({what}); images that cannot be cleaned: {on_error}"
          + ("" if on_error == "block" else " (forwarded UNCHANGED with a warning)"))
    if notes:
        print(f"other options:   {', '.join(notes)}")
    print(f"CA certificate:  {info.cert_path}  ({'limited to the AI domains' if info.constrained else 'UNCONSTRAINED'}"
          f", expires {info.not_after.date()})")
    print(f"  install it once (add --dry-run to preview):\n    {prefix} cert install{cert_args}")
    print(f"PAC URL:         {pac_url or '(not served)'}   file: {pac_file}")
    print("  Chromium, fail-closed even when exifguard is stopped:\n"
          f"    chromium --proxy-pac-url=\"$({prefix} pac --data-url --proxy {shlex.quote(proxy_addr)}{host_args})\"")
    if plan.audit_log:
        print(f"audit log:       {plan.audit_log}")
    if log_file is not None:
        print(f"log file:        {log_file}  (rotated)")
    print(f"check it works:\n    {prefix} selftest{cert_args}")
    from ..proxy.pac import status_url
    from ..proxy.probe import check_page_url
    print(f"  in your browser (routed by the PAC, trusting the CA): {check_page_url(hosts)}\n"
          f"    or: {prefix} check{cert_args}")
    if pac_url:
        print(f"status page:     {status_url(pac_url)}  (uptime, uploads, and the same check for any browser)")
    print("stop: Ctrl-C", flush=True)
