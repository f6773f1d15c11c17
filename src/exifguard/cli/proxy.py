"""Proxy subcommands: run, cert, pac, report, selftest.

    exifguard run [--host 127.0.0.1] [--port 8080] [--certs DIR] [--log-file PATH] [-- MITMDUMP_ARGS...]
    exifguard cert create|install|reissue|uninstall|path [--certs DIR] [--dry-run] [--nssdb DIR]
    exifguard hosts [--json] [--all]
    exifguard pac [-o FILE] [--proxy HOST:PORT] [--serve [PORT]]
    exifguard report [--audit-log PATH] [--json]
    exifguard selftest [--certs DIR] [--proxy HOST:PORT]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from .run import AUDIT_NAME, PAC_NAME, RUN_STATE  # noqa: F401 - re-exported

DEFAULT_PROXY = "127.0.0.1:8080"


# ---- locations --------------------------------------------------------------------------
from .locations import command_prefix, default_certs_dir, repo_root  # noqa: E402,F401 - re-exported


def mitmdump_command() -> list[str]:
    """mitmdump from this interpreter's venv (the one that has exifguard's mitmproxy)."""
    exe = Path(sys.executable).parent / ("mitmdump.exe" if os.name == "nt" else "mitmdump")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from mitmproxy.tools.main import mitmdump; sys.exit(mitmdump())"]


def script_path() -> Path:
    """The `mitmdump -s` script inside the package (found without importing it: importing
    it installs the addons)."""
    from .. import proxy as proxy_pkg
    return (Path(proxy_pkg.__file__).resolve().parent / "mitmdump_script.py")


USER_SERVICES = "services.toml"


def host_additions(args: argparse.Namespace, certs: Path | None = None) -> list[str]:
    """--add-host, --add-service and --services as `HostSet.build(extra=...)` items; also
    <certs>/services.toml when it exists (a person's own services, read without a flag)."""
    from ..proxy.hosts import FILE_PREFIX, SERVICE_PREFIX
    out = list(getattr(args, "add_host", None) or [])
    out += [SERVICE_PREFIX + s.strip().lower() for s in getattr(args, "add_service", None) or []]
    files = [Path(f).expanduser().resolve() for f in getattr(args, "services", None) or []]
    if certs is not None and (certs / USER_SERVICES).is_file() and (certs / USER_SERVICES).resolve() not in files:
        files.append((certs / USER_SERVICES).resolve())
    out += [FILE_PREFIX + str(f) for f in files]
    return list(dict.fromkeys(out))


def _hosts(args: argparse.Namespace, certs: Path | None = None):
    from ..proxy.hosts import HostSet
    try:
        return HostSet.build(extra=host_additions(args, certs), remove=args.remove_host or ())
    except ValueError as exc:
        raise SystemExit(f"exifguard: {exc}") from None


def _add_host_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--add-host", action="append", metavar="HOST",
                   help="also clean uploads to HOST (example.com, *.example.com or up-*.example.com); "
                        "repeatable")
    p.add_argument("--remove-host", action="append", metavar="HOST",
                   help="remove HOST (or service:ID) from the default AI host list; repeatable")
    p.add_argument("--add-service", action="append", metavar="ID",
                   help="also clean uploads to a service that is off by default, e.g. grok-x (Grok inside "
                        "x.com: decrypts all of x.com); `hosts --all` lists them; repeatable")
    p.add_argument("--services", action="append", metavar="FILE", type=Path,
                   help="your own services (TOML: [[service]] id, origins; [[service.hosts]] host, kind); "
                        "<certs>/services.toml is read without this flag; repeatable")


def _certs_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--certs", type=Path, default=None, metavar="DIR",
                   help="CA directory (default: ./certs in a checkout, else ~/.config/exifguard/certs)")


def _certs(args: argparse.Namespace) -> Path:
    return (args.certs or default_certs_dir()).expanduser().resolve()


def _certs_opt(args: argparse.Namespace, certs: Path) -> str:
    """` --certs DIR` for a printed command when the person chose a folder, else nothing."""
    return "" if args.certs is None else f" --certs {shlex.quote(str(certs))}"


# ---- run --------------------------------------------------------------------------------
def dump_options(out=None) -> None:
    """Print mitmproxy's options *with* exifguard's (plain `mitmdump --options` prints them
    before any -s script is loaded, so it cannot show ours)."""
    import asyncio

    from mitmproxy import master, options, optmanager
    from mitmproxy.addons import default_addons

    from ..proxy.addon import make_addons
    from ..proxy.guard import Guard
    loop = asyncio.new_event_loop()
    try:
        m = master.Master(options.Options(), event_loop=loop)
        m.addons.add(*default_addons(), *make_addons(), Guard())
        optmanager.dump_defaults(m.options, out or sys.stdout)
    finally:
        loop.close()


def cmd_run(args: argparse.Namespace) -> int:
    from . import run
    if args.options:
        dump_options()
        return 0
    certs = _certs(args)
    # --add-service/--services (and <certs>/services.toml) travel as exifguard_hosts items
    # ("service:ID", "file:PATH"), so mitmdump's addon builds the same HostSet
    args.add_host = host_additions(args, certs)

    def hosts(extra: list[str], removed: list[str]):
        from ..proxy.hosts import HostSet
        try:
            return HostSet.build(extra=extra, remove=removed)
        except ValueError as exc:
            raise run.RunError(str(exc), 2) from None
    return run.cmd_run(args, certs, hosts)


# ---- cert -------------------------------------------------------------------------------
CERT_ACTIONS = {
    "install": "trust the CA in the browsers' stores (creates it first if needed)",
    "uninstall": "remove it from those stores again",
    "create": "make the CA without installing it",
    "reissue": "replace the installed CA with one covering the current host list",
    "path": "print where the CA certificate is",
}


def cmd_cert(args: argparse.Namespace) -> int:
    from ..proxy import ca, install
    if args.action is None:
        # argparse's own "the following arguments are required: action" does not say
        # what the actions are or which one a person most likely wants
        width = max(map(len, CERT_ACTIONS))
        lines = "\n".join(f"  {command_prefix()} cert {a:<{width}}  {why}" for a, why in CERT_ACTIONS.items())
        print(f"exifguard cert: say what to do with exifguard's CA certificate:\n{lines}\n"
              f"Add --dry-run to see the commands first; --help for all options.", file=sys.stderr)
        return 2
    certs = _certs(args)
    hosts = _hosts(args, certs)
    if args.action == "reissue":
        return _reissue(args, certs, hosts)
    if args.action == "create":
        try:
            info = ca.create_ca(certs, hosts.domains(), constrained=not args.unconstrained, force=args.force)
        except ca.CAExists as exc:
            print(f"exifguard: {exc}", file=sys.stderr)
            return 1
        kind = (f"limited to {len(info.domains)} AI domains" if info.constrained
                else "UNCONSTRAINED (can sign for any site: guard its key)")
        print(f"created CA '{info.subject}', {kind}, expires {info.not_after.date()}")
        print(f"certificate: {info.cert_path}\nprivate key: {info.key_path} (mode 0600)")
        print(f"install it:  {command_prefix()} cert install{_certs_opt(args, certs)}")
        return 0
    if args.action == "path":
        try:
            info = ca.load_ca(certs)
        except FileNotFoundError:
            print(f"exifguard: no CA in {certs} yet; create one:\n  {command_prefix()} cert create"
                  f"{_certs_opt(args, certs)}", file=sys.stderr)
            return 1
        print(info.cert_path)
        return 0
    try:
        info = ca.load_ca(certs)
    except FileNotFoundError:
        if args.action == "uninstall":
            print(f"exifguard: no CA in {certs}; nothing to uninstall", file=sys.stderr)
            return 1
        info = ca.create_ca(certs, hosts.domains(), constrained=not args.unconstrained)
        print(f"created CA '{info.subject}' in {certs}")
    target = "nss" if args.nssdb else args.target
    try:
        steps = install.plan(args.action, target, cert=info.cert_path, cer=certs / ca.CER_FILE,
                             subject=info.subject, nssdbs=[Path(d).expanduser().resolve() for d in args.nssdb or []])
    except ValueError as exc:
        print(f"exifguard: {exc}", file=sys.stderr)
        return 2
    if args.action == "uninstall" and target == "system" and not install.system_installed():
        print("exifguard: the exifguard CA is not in the system store: nothing was installed, nothing "
              "to remove.")
        return 0
    if args.dry_run:
        print(f"# exifguard cert {args.action} ({target}): commands that would run")
    failed: list[install.Step] = []
    rc = install.run_steps(steps, dry_run=args.dry_run, failed=failed)
    if rc == 0 and not args.dry_run:
        if args.action == "install":
            print(f"exifguard: CA installed ({target}); restart the browser.")
        else:
            print(_uninstalled(target, steps, failed))
    if target in ("nss", "auto") and sys.platform.startswith("linux") and args.action == "install" \
            and not args.nssdb:
        print(f"# curl/Python/OpenSSL use the system store instead: {command_prefix()} cert install "
              f"--target system{_certs_opt(args, certs)}")
    return rc


def _uninstalled(target: str, steps: list, failed: list) -> str:
    """What `cert uninstall` did: "removed" only where a CA was actually removed.

    Why: the removal steps may fail when there is nothing to remove (certutil -D of an
    unknown nickname), and the command used to say "CA removed" all the same.
    """
    def where(step) -> str:
        argv = list(step.argv)
        if "-d" in argv and argv.index("-d") + 1 < len(argv):
            return argv[argv.index("-d") + 1].removeprefix("sql:")
        return target
    removals = [s for s in steps if s.may_fail]  # the certutil/security deletions
    missing = [where(s) for s in failed]
    if removals and len(failed) == len(removals):
        return (f"exifguard: the exifguard CA was not installed ({target}: {', '.join(missing)}); "
                "nothing was removed.")
    msg = f"exifguard: CA removed ({target}); restart the browser."
    if missing:
        msg += f"\n  (it was not installed in: {', '.join(missing)})"
    return msg


def _reissue(args: argparse.Namespace, certs: Path, hosts) -> int:
    """Remove the installed CA, make a new one covering the current host table, install it.

    Why one command: the CA's name constraints are fixed when it is made, so after an
    upgrade or --add-host the browser must get a new certificate, and the old one should
    not stay trusted.  Refused while `exifguard run` uses this folder (its mitmdump holds
    the old key); nothing is replaced with --dry-run.
    """
    from ..proxy import ca, install
    from . import instance
    if args.unconstrained:
        print("exifguard: cert reissue makes a name-constrained CA; use `cert create --force --unconstrained` "
              "for an unconstrained one", file=sys.stderr)
        return 2
    target = "nss" if args.nssdb else args.target
    nssdbs = [Path(d).expanduser().resolve() for d in args.nssdb or []]
    try:
        old = ca.load_ca(certs)
    except FileNotFoundError:
        old = None
    lock = None
    if not args.dry_run:
        ca.ensure_private_dir(certs)
        lock = instance.InstanceLock(certs / instance.LOCK_NAME)
        held = lock.acquire()
        if held is not None:
            print(f"exifguard: exifguard is running with this CA ({held.describe()}); stop it (Ctrl-C), then "
                  f"run this command again", file=sys.stderr)
            return 1
    try:
        try:
            if old is not None:
                steps = install.plan("uninstall", target, cert=old.cert_path, cer=certs / ca.CER_FILE,
                                     subject=old.subject, nssdbs=nssdbs)
                if args.dry_run:
                    print(f"# exifguard cert reissue ({target}): remove the old CA '{old.subject}'")
                rc = install.run_steps(steps, dry_run=args.dry_run)
                if rc != 0:
                    return rc
            doms = hosts.domains()
            if args.dry_run:
                print(f"# then create a new CA in {certs} limited to {len(doms)} domains: {', '.join(doms)}")
                print("# and install it:")
                new_cert, new_cer, subject = certs / ca.CERT_FILE, certs / ca.CER_FILE, "exifguard local CA"
            else:
                info = ca.create_ca(certs, doms, constrained=True, force=True)
                print(f"created CA '{info.subject}', limited to {len(info.domains)} AI domains, expires "
                      f"{info.not_after.date()}")
                new_cert, new_cer, subject = info.cert_path, certs / ca.CER_FILE, info.subject
            steps = install.plan("install", target, cert=new_cert, cer=new_cer, subject=subject, nssdbs=nssdbs)
        except ValueError as exc:
            print(f"exifguard: {exc}", file=sys.stderr)
            return 2
        rc = install.run_steps(steps, dry_run=args.dry_run)
        if rc == 0 and not args.dry_run:
            print(f"exifguard: new CA installed ({target}); restart the browser, then start exifguard:\n"
                  f"  {command_prefix()} run{_certs_opt(args, certs)}{_additions_opt(args)}")
        return rc
    finally:
        if lock is not None:
            lock.release()


def _additions_opt(args: argparse.Namespace) -> str:
    """The host flags of this command, as they must be repeated in a printed command."""
    from .run import _hosts_args
    return _hosts_args(list(getattr(args, "add_host", None) or [])
                       + ["service:" + s for s in getattr(args, "add_service", None) or []]
                       + ["file:" + str(Path(f).expanduser().resolve()) for f in getattr(args, "services", None) or []],
                       list(args.remove_host or []))


# ---- hosts ------------------------------------------------------------------------------
def cmd_hosts(args: argparse.Namespace) -> int:
    """Every decrypted host with its service and why; --json for scripts."""
    from ..proxy import ca
    from ..proxy.hosts import describe
    certs = _certs(args)
    hosts = _hosts(args, certs)
    d = describe(hosts)
    try:
        info = ca.load_ca(certs)
    except (FileNotFoundError, ValueError):
        info = None
    if info is not None:
        left = hosts.uncovered(info.domains) if info.constrained else []
        d["ca"] = {"path": str(info.cert_path), "constrained": info.constrained,
                   "hosts_not_covered": [e.spec for e in left]}
    if args.json:
        print(json.dumps(d, indent=1))
        return 0
    print(f"exifguard decrypts {len(d['hosts'])} host rules (service table {d['table_version']}):")
    for r in d["hosts"]:
        conf = f", {r['confidence']}" if r["confidence"] else ""
        ev = f", evidence {r['evidence']}" if r["evidence"] else ""
        print(f"  {r['host']:<46} {r['service']} ({r['kind']}: {r['checked']}{ev}{conf})")
        if r["why"] and args.all:
            print(f"  {'':<46}   why: {r['why']}")
    off = [o for o in d.get("opt_in", []) if not o["enabled"]]
    if off:
        print("off by default, not decrypted: uploads there go direct and are NOT cleaned "
              "(enable with --add-service ID):")
        for o in off:
            print(f"  {o['id']:<14} {', '.join(o['hosts'])}: {o['why']}")
    print("every other host is tunnelled untouched: exifguard does not decrypt it")
    if info is not None and d["ca"]["hosts_not_covered"]:
        print(f"the CA in {certs} does not cover: {', '.join(d['ca']['hosts_not_covered'])}; re-issue it:\n"
              f"  {command_prefix()} cert reissue{_certs_opt(args, certs)}{_additions_opt(args)}")
    return 0


# ---- pac --------------------------------------------------------------------------------
def running_proxy(certs: Path) -> str | None:
    """The proxy address of the `exifguard run` using this certs folder, if one is running.

    run.json alone is not proof (a run killed with -9 leaves it behind): the run's
    lock on <certs>/run.lock must also be held.
    """
    from . import instance
    state = certs / RUN_STATE
    try:
        proxy = json.loads(state.read_text()).get("proxy")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(proxy, str) or not proxy:
        return None
    lock = instance.InstanceLock(certs / instance.LOCK_NAME)
    try:
        holder = lock.acquire()
    except OSError:
        return None
    if holder is None:  # we got the lock: nobody is running, run.json is stale
        lock.release()
        return None
    return proxy


def cmd_pac(args: argparse.Namespace) -> int:
    from ..proxy import pac
    certs = _certs(args)
    hosts = _hosts(args, certs)
    proxy = args.proxy or running_proxy(certs) or DEFAULT_PROXY
    try:
        text = pac.pac_text(hosts, proxy)
    except ValueError as exc:
        print(f"exifguard: {exc}", file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    if args.data_url:
        print(pac.data_url(text))
        return 0
    if args.serve is None:
        if not args.output:
            sys.stdout.write(text)
        return 0
    from ..proxy import ca
    from ..proxy.status import StatusSource
    cert = certs / ca.CERT_FILE
    status = StatusSource(hosts=hosts, proxy=proxy, ca_cert=cert if cert.is_file() else None,
                          cert_install=f"{command_prefix()} cert install")
    srv, url = pac.serve(text, args.serve, status=status)
    print(f"serving the PAC at {url}  (Ctrl-C to stop; status page: {pac.status_url(url)})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        from .run import _shutdown_pac
        _shutdown_pac(srv)
    return 0


# ---- addon-path -------------------------------------------------------------------------
def cmd_addon_path(args: argparse.Namespace) -> int:
    """The script for `mitmdump -s`, inside the installed package (a wheel has no addons/)."""
    print(script_path())
    return 0


# ---- report -----------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from ..proxy import audit
    path = (args.audit_log or _certs(args) / AUDIT_NAME).expanduser()
    if not path.exists():
        print(f"exifguard: no audit log at {path} (`{command_prefix()} run` writes one)", file=sys.stderr)
        return 1
    s = audit.summarise(audit.read_records(path), include_selftest=args.include_selftest)
    print(json.dumps(s, indent=1) if args.json else audit.format_summary(s))
    return 0


# ---- selftest ---------------------------------------------------------------------------
def cmd_selftest(args: argparse.Namespace) -> int:
    from ..proxy import ca, selftest
    certs = _certs(args)
    try:
        state = json.loads((certs / RUN_STATE).read_text())
    except (OSError, ValueError):
        print(f"exifguard: no running proxy found for {certs}; start it:\n  {command_prefix()} run"
              f"{_certs_opt(args, certs)}", file=sys.stderr)
        return 1
    try:
        info = ca.load_ca(certs)
    except FileNotFoundError:
        print(f"exifguard: no CA in {certs}", file=sys.stderr)
        return 1
    from ..proxy.pac import normalize_proxy
    try:
        proxy = normalize_proxy(args.proxy or state["proxy"])  # [::1]:PORT, not ::1:PORT
    except (ValueError, KeyError) as exc:
        print(f"exifguard: {exc}", file=sys.stderr)
        return 2
    r = selftest.run_selftest(proxy, info.cert_path, state["selftest_token"])
    print(f"exifguard selftest via {proxy} -> https://{selftest.SELFTEST_HOST} (delivered to a local sink)")
    if r.received_bytes is not None:
        print(f"  sent {r.sent_bytes} bytes, the sink received {r.received_bytes} bytes")
        print(f"  removed: {', '.join(r.removed) or 'nothing'}")
        print(f"  left:    {', '.join(r.remaining) or 'no EXIF tags'}")
        print(f"  canary marker {'STILL PRESENT' if r.marker_found else 'gone'}")
    print(("  " if r.received_bytes is not None else "  ") + r.message)
    return 0 if r.ok else 1


# ---- registration -----------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add the proxy subcommands to the `exifguard` parser."""
    p = sub.add_parser("run", help="start the cleaning proxy (mitmdump with the exifguard addon)",
                       description="Start mitmdump with the exifguard addon; report ready only once the "
                                   "addon is loaded with valid options. Arguments after -- go to mitmdump. "
                                   "An exifguard option may be given as a flag here or as --set after --, "
                                   "not both with different values; unknown exifguard_* names are errors.")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1; anything "
                   "else exposes the proxy to other machines)")
    p.add_argument("--allow-remote", action="store_true",
                   help="accept proxy clients from other machines (needs --host; default: loopback only)")
    p.add_argument("--port", type=int, default=8080, help="listen port (default 8080; 0: a free port)")
    _certs_arg(p)
    p.add_argument("--audit-log", type=Path, default=None, metavar="PATH",
                   help="JSON Lines audit log (default: <certs>/audit.jsonl)")
    p.add_argument("--no-audit-log", action="store_true", help="do not write an audit log")
    p.add_argument("--options", action="store_true",
                   help="print all mitmproxy options including exifguard_* ones, then exit")
    p.add_argument("--mode", choices=["strip", "audit", "block"], default=None,
                   help="strip: clean images in flight (default); audit: log what would be removed "
                        "and forward unchanged; block: refuse every image upload")
    p.add_argument("--on-error", choices=["block", "pass"], default=None,
                   help="an image that cannot be cleaned: block it with a 4xx (default) or pass it "
                        "unchanged with a warning")
    p.add_argument("--notify", choices=["blocked", "all", "off"], default=None,
                   help="desktop notifications: blocked (when an upload is refused; default), all (also "
                        "when photos were cleaned) or off")
    p.add_argument("--pac-port", type=int, default=None, metavar="PORT",
                   help="serve the PAC file on 127.0.0.1:PORT (default: proxy port + 1; 0: any free "
                        "port; -1: do not serve)")
    p.add_argument("--log-file", type=Path, default=None, metavar="PATH",
                   help="also write everything this run and mitmdump print to PATH, rotated at 5 MiB "
                        "(3 old files kept; created private, mode 0600). `service install` uses this")
    p.add_argument("--log-max-bytes", type=int, default=None, help=argparse.SUPPRESS)  # tests: rotate sooner
    _add_host_args(p)
    p.add_argument("mitmdump_args", nargs=argparse.REMAINDER, metavar="-- MITMDUMP_ARGS",
                   help="passed to mitmdump (listen address, confdir and stream_large_bodies are "
                        "exifguard run's; body_size_limit only smaller than 256m)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("cert", help="create, install, uninstall or locate the CA certificate",
                       description="exifguard signs the AI services' certificates with its own local CA. "
                                   "Install it once so the browser trusts exifguard for those hosts only: "
                                   "the CA is name-constrained to the AI domains, so even a leaked key "
                                   "cannot impersonate other sites. Close the browser first; --dry-run "
                                   "prints the exact commands.",
                       epilog="actions: " + "; ".join(f"{a}: {why}" for a, why in CERT_ACTIONS.items()))
    p.add_argument("action", nargs="?", choices=list(CERT_ACTIONS), metavar="ACTION",
                   help="one of: " + ", ".join(CERT_ACTIONS) + " (listed below)")
    _certs_arg(p)
    p.add_argument("--dry-run", action="store_true", help="print the exact commands, run nothing")
    p.add_argument("--target", choices=["auto", "nss", "system", "macos", "windows"], default="auto",
                   help="trust store (auto: NSS dbs of Chrome/Chromium (snap too) and Firefox on Linux, "
                        "login keychain on macOS, user Root store on Windows; system: the OS store curl, "
                        "Python and OpenSSL use, needs sudo)")
    p.add_argument("--nssdb", action="append", metavar="DIR",
                   help="install into/remove from this NSS database directory only (repeatable)")
    p.add_argument("--unconstrained", action="store_true",
                   help="use mitmproxy's CA without name constraints (can sign for any site)")
    p.add_argument("--force", action="store_true", help="replace an existing CA (create)")
    _add_host_args(p)
    p.set_defaults(func=cmd_cert)

    p = sub.add_parser("hosts", help="list every host exifguard decrypts, with its service and why",
                       description="Every decrypted host: its service, how it matches, when its requests are "
                                   "checked, the evidence date and confidence; the services that are off by "
                                   "default; and whether the CA covers them all.")
    _certs_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all", action="store_true", help="also print why each host is decrypted")
    _add_host_args(p)
    p.set_defaults(func=cmd_hosts)

    p = sub.add_parser("pac", help="write or serve a PAC file sending only AI hosts to exifguard",
                       description="Print a proxy auto-config (PAC) that sends only the AI upload hosts "
                                   "to exifguard and everything else direct. There is no DIRECT fallback "
                                   "for the AI hosts: with exifguard stopped, their uploads fail instead of "
                                   "leaving uncleaned. The proxy address defaults to the running "
                                   "`exifguard run` for this --certs folder, else 127.0.0.1:8080.")
    p.add_argument("-o", "--output", metavar="FILE", help="write the PAC here (default: stdout)")
    p.add_argument("--proxy", default=None, metavar="HOST:PORT",
                   help="the exifguard proxy the PAC points to (default: the running proxy's address from "
                        "<certs>/run.json, else 127.0.0.1:8080; IPv6 as [::1]:PORT)")
    _certs_arg(p)
    p.add_argument("--serve", nargs="?", type=int, const=8081, default=None, metavar="PORT",
                   help="serve it on http://127.0.0.1:PORT/proxy.pac (default port 8081); keep it "
                        "running: a browser that cannot fetch its PAC goes DIRECT")
    p.add_argument("--data-url", action="store_true",
                   help="print the PAC as a data: URL for chromium --proxy-pac-url (needs no server, "
                        "so it fails closed when exifguard is stopped)")
    _add_host_args(p)
    p.set_defaults(func=cmd_pac)

    p = sub.add_parser("report", help="summarise the audit log",
                       description="Summarise the audit log the proxy writes (one record per image: what "
                                   "was removed, never the values): images cleaned, blocked or passed, per "
                                   "privacy category and per site. Uploads made by `selftest` are left out "
                                   "unless --include-selftest.")
    _certs_arg(p)
    p.add_argument("--audit-log", type=Path, default=None, metavar="PATH",
                   help="the audit log to read (default: <certs>/audit.jsonl)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--include-selftest", action="store_true", help="count selftest uploads too")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("selftest", help="send a canary photo through the running proxy",
                       description="Prove the running proxy cleans uploads: a small photo full of canary "
                                   "metadata (GPS, camera, serial number, times, a random marker) is uploaded "
                                   "to https://claude.ai through the proxy, trusting only exifguard's CA; "
                                   "the proxy cleans it like any upload and delivers it to a local test "
                                   "server instead of claude.ai (nothing leaves this computer). Then shows "
                                   "what was removed and what arrived.")
    _certs_arg(p)
    p.add_argument("--proxy", default=None, metavar="HOST:PORT",
                   help="the proxy to test (default: the running proxy's address from <certs>/run.json)")
    p.set_defaults(func=cmd_selftest)

    p = sub.add_parser("addon-path", help="print the path of the script for `mitmdump -s`",
                       description="Print the absolute path of exifguard's mitmproxy script inside the "
                                   "installed package, for your own mitmproxy set-up: "
                                   "mitmdump -s \"$(exifguard addon-path)\". If exifguard cannot be "
                                   "imported there, the script refuses every request instead of letting "
                                   "uploads through uncleaned.")
    p.set_defaults(func=cmd_addon_path)
