"""Proxy subcommands: run, cert, pac, report, selftest.

    exifguard run [--host 127.0.0.1] [--port 8080] [--certs DIR] [-- MITMDUMP_ARGS...]
    exifguard cert create|install|uninstall|path [--certs DIR] [--dry-run] [--nssdb DIR]
    exifguard pac [-o FILE] [--proxy HOST:PORT] [--serve [PORT]]
    exifguard report [--audit-log PATH] [--json]
    exifguard selftest [--certs DIR] [--proxy HOST:PORT]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

RUN_STATE = "run.json"
AUDIT_NAME = "audit.jsonl"
PAC_NAME = "proxy.pac"


# ---- locations --------------------------------------------------------------------------
def repo_root() -> Path | None:
    """The checkout this package runs from (src layout), or None for an installed package."""
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").is_file() and (root / "src" / "exifguard").is_dir():
        return root
    return None


def default_certs_dir() -> Path:
    env = os.environ.get("EXIFGUARD_CERTS")
    if env:
        return Path(env).expanduser()
    root = repo_root()
    if root is not None:
        return root / "certs"
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "exifguard" / "certs"


def mitmdump_command() -> list[str]:
    """mitmdump from this interpreter's venv (the one that has exifguard's mitmproxy)."""
    exe = Path(sys.executable).parent / ("mitmdump.exe" if os.name == "nt" else "mitmdump")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from mitmproxy.tools.main import mitmdump; sys.exit(mitmdump())"]


def script_path() -> Path:
    from ..proxy import mitmdump_script
    return Path(mitmdump_script.__file__).resolve()


def _hosts(args: argparse.Namespace):
    from ..proxy.hosts import HostSet
    try:
        return HostSet.build(extra=args.add_host or (), remove=args.remove_host or ())
    except ValueError as exc:
        raise SystemExit(f"exifguard: {exc}") from None


def _is_loopback_host(host: str) -> bool:
    import ipaddress
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _add_host_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--add-host", action="append", metavar="HOST",
                   help="also clean uploads to HOST (example.com or *.example.com); repeatable")
    p.add_argument("--remove-host", action="append", metavar="HOST",
                   help="remove HOST from the default AI host list; repeatable")


def _certs_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--certs", type=Path, default=None, metavar="DIR",
                   help="CA directory (default: ./certs in a checkout, else ~/.config/exifguard/certs)")


def _certs(args: argparse.Namespace) -> Path:
    return (args.certs or default_certs_dir()).expanduser().resolve()


# ---- run --------------------------------------------------------------------------------
def build_mitmdump_args(*, host: str, port: int, certs: Path, hosts, constrained: bool,
                        audit_log: Path | None, token: str, mode: str, on_error: str,
                        extra_hosts: list[str], removed_hosts: list[str],
                        passthrough: list[str], allow_remote: bool = False) -> list[str]:
    """The mitmdump argv (without the program) for `exifguard run`.

    connection_strategy=lazy: with upstream_cert=false (needed by the constrained CA)
    there is no upstream certificate to copy, so eager connecting buys only ALPN
    mirroring; lazy opens the upstream connection when a request exists, which lets
    `exifguard selftest` deliver to a local sink without contacting the real service
    (mitmproxy translates HTTP/2 <-> HTTP/1.1 when the two sides differ).
    """
    a = ["--listen-host", host, "--listen-port", str(port), "-s", str(script_path()),
         "--set", f"confdir={certs}", "--set", "connection_strategy=lazy",
         "--set", "onboarding=false", "--set", f"exifguard_mode={mode}",
         "--set", f"exifguard_on_error={on_error}"]
    if constrained:
        a += ["--set", "upstream_cert=false"]
    for rx in hosts.allow_hosts():
        a += ["--allow-hosts", rx]
    for h in extra_hosts:
        a += ["--set", f"exifguard_hosts={h}"]
    for h in removed_hosts:
        a += ["--set", f"exifguard_hosts_remove={h}"]
    if audit_log is not None:
        a += ["--set", f"exifguard_audit_log={audit_log}"]
    if token:
        a += ["--set", f"exifguard_selftest_token={token}"]
    if allow_remote:
        a += ["--set", "exifguard_allow_remote=true"]
    if not any("flow_detail" in x for x in passthrough):
        # mitmdump's per-flow lines print request URLs, and upload URLs carry signatures
        # (Azure SAS `sig=`, S3 policies); exifguard's own line per image names host and
        # path only.  `-- --set flow_detail=1` brings mitmdump's lines back.
        a += ["--set", "flow_detail=0"]
    return a + passthrough


def _free_port(host: str) -> int:
    import socket
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host if host not in ("", "localhost") else "127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_private_json(path: Path, data: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        json.dump(data, f, indent=1)


def dump_options(out=None) -> None:
    """Print mitmproxy's options *with* exifguard's (plain `mitmdump --options` prints them
    before any -s script is loaded, so it cannot show ours)."""
    import asyncio

    from mitmproxy import master, options, optmanager
    from mitmproxy.addons import default_addons

    from ..proxy.addon import make_addons
    loop = asyncio.new_event_loop()
    try:
        m = master.Master(options.Options(), event_loop=loop)
        m.addons.add(*default_addons(), *make_addons())
        optmanager.dump_defaults(m.options, out or sys.stdout)
    finally:
        loop.close()


def cmd_run(args: argparse.Namespace) -> int:
    from ..proxy import ca, pac
    if args.options:
        dump_options()
        return 0
    certs = _certs(args)
    hosts = _hosts(args)
    if args.port == 0:  # pick one now so the banner, the PAC and selftest know it
        args.port = _free_port(args.host)
    info, created = ca.ensure_ca(certs, hosts.domains())
    if created:
        print(f"exifguard: created a new CA limited to the AI hosts: {info.cert_path}")
    uncovered = [d for d in hosts.domains() if not info.covers(d)]
    if uncovered:
        print(f"exifguard: WARNING: the CA does not cover {', '.join(uncovered)}; browsers will "
              "reject those sites. Recreate it: exifguard cert create --force "
              + " ".join(f"--add-host {h}" for h in args.add_host or []) + ", then reinstall it.",
              file=sys.stderr)
    if not _is_loopback_host(args.host):
        bar = "!" * 72
        if args.allow_remote:
            what = ("other machines CAN use this proxy (--allow-remote) and reach the AI services "
                    "through it")
        else:
            what = ("clients that are not on this machine will still be refused (add --allow-remote "
                    "to accept them)")
        print(f"{bar}\nexifguard: WARNING: listening on {args.host}, not loopback: {what}.\n"
              f"Use --host 127.0.0.1 unless you mean it.\n{bar}", file=sys.stderr, flush=True)
    audit_log = None if args.no_audit_log else (args.audit_log or certs / AUDIT_NAME).expanduser()
    token = secrets.token_urlsafe(24)
    passthrough = list(args.mitmdump_args or [])
    if passthrough and passthrough[0] == "--":
        passthrough = passthrough[1:]
    argv = mitmdump_command() + build_mitmdump_args(
        host=args.host, port=args.port, certs=certs, hosts=hosts, constrained=info.constrained,
        audit_log=audit_log, token=token, mode=args.mode, on_error=args.on_error,
        extra_hosts=args.add_host or [], removed_hosts=args.remove_host or [], passthrough=passthrough,
        allow_remote=args.allow_remote)
    client_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    proxy_addr = f"{client_host}:{args.port}"
    pac_file = certs / PAC_NAME
    pac_url = None
    pac_srv = None
    text = pac.pac_text(hosts, proxy_addr)
    pac_file.write_text(text)
    pac_port = args.port + 1 if args.pac_port is None else args.pac_port
    if pac_port >= 0:
        try:
            pac_srv, pac_url = pac.serve(text, pac_port)
        except OSError as exc:
            print(f"exifguard: could not serve the PAC on 127.0.0.1:{pac_port} ({exc.strerror}); "
                  "use the file, or --pac-port", file=sys.stderr)
    print(f"exifguard proxy: http://{proxy_addr}  (HTTPS intercepted only for "
          f"{len(hosts.entries)} AI upload hosts; everything else is tunnelled untouched)")
    print(f"CA certificate:  {info.cert_path}  ({'limited to the AI domains' if info.constrained else 'UNCONSTRAINED'}"
          f", expires {info.not_after.date()})")
    print(f"  install it once: exifguard cert install{'' if args.certs is None else f' --certs {certs}'}"
          "   (preview: --dry-run)")
    print(f"PAC URL:         {pac_url or '(not served)'}   file: {pac_file}")
    print("  Chromium, fail-closed even when exifguard is stopped: "
          f"chromium --proxy-pac-url=\"$(exifguard pac --data-url --proxy {proxy_addr})\"")
    if audit_log:
        print(f"audit log:       {audit_log}")
    print("check it works:  exifguard selftest" + ("" if args.certs is None else f" --certs {certs}")
          + "      stop: Ctrl-C", flush=True)
    state = certs / RUN_STATE
    _write_private_json(state, {"proxy": proxy_addr, "selftest_token": token, "pid": os.getpid(),
                                "pac_url": pac_url, "audit_log": str(audit_log) if audit_log else None})
    proc = subprocess.Popen(argv)
    prev_term = signal.getsignal(signal.SIGTERM)

    def _term(signum, frame):  # forward `kill <pid>` to mitmdump, then exit
        proc.send_signal(signal.SIGINT)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _term)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            rc = proc.wait()
        rc = 0 if rc in (0, -signal.SIGINT, 130) else rc
        print("exifguard: stopped.", flush=True)
    finally:
        signal.signal(signal.SIGTERM, prev_term)
        if pac_srv is not None:
            pac_srv.shutdown()
        try:
            if json.loads(state.read_text()).get("pid") == os.getpid():
                state.unlink()
        except (OSError, ValueError):
            pass
    return rc


# ---- cert -------------------------------------------------------------------------------
def cmd_cert(args: argparse.Namespace) -> int:
    from ..proxy import ca, install
    certs = _certs(args)
    hosts = _hosts(args)
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
        print("install it:  exifguard cert install" + ("" if args.certs is None else f" --certs {certs}"))
        return 0
    if args.action == "path":
        try:
            info = ca.load_ca(certs)
        except FileNotFoundError:
            print(f"exifguard: no CA in {certs} yet (exifguard cert create)", file=sys.stderr)
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
    if args.dry_run:
        print(f"# exifguard cert {args.action} ({target}): commands that would run")
    rc = install.run_steps(steps, dry_run=args.dry_run)
    if rc == 0 and not args.dry_run:
        print(f"exifguard: CA {'installed' if args.action == 'install' else 'removed'} ({target}); "
              "restart the browser.")
    if target in ("nss", "auto") and sys.platform.startswith("linux") and args.action == "install" \
            and not args.nssdb:
        print("# curl/Python/OpenSSL use the system store instead: exifguard cert install --target system")
    return rc


# ---- pac --------------------------------------------------------------------------------
def cmd_pac(args: argparse.Namespace) -> int:
    from ..proxy import pac
    hosts = _hosts(args)
    try:
        text = pac.pac_text(hosts, args.proxy)
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
    srv, url = pac.serve(text, args.serve)
    print(f"serving the PAC at {url}  (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.shutdown()
    return 0


# ---- report -----------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from ..proxy import audit
    path = (args.audit_log or _certs(args) / AUDIT_NAME).expanduser()
    if not path.exists():
        print(f"exifguard: no audit log at {path} (exifguard run writes one)", file=sys.stderr)
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
        print(f"exifguard: no running proxy found for {certs} (start it: exifguard run"
              + ("" if args.certs is None else f" --certs {certs}") + ")", file=sys.stderr)
        return 1
    try:
        info = ca.load_ca(certs)
    except FileNotFoundError:
        print(f"exifguard: no CA in {certs}", file=sys.stderr)
        return 1
    proxy = args.proxy or state["proxy"]
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
                       description="Start mitmdump with the exifguard addon. Arguments after -- go to "
                                   "mitmdump unchanged.")
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
    p.add_argument("--mode", choices=["strip", "audit", "block"], default="strip",
                   help="strip: clean images in flight (default); audit: log what would be removed "
                        "and forward unchanged; block: refuse every image upload")
    p.add_argument("--on-error", choices=["block", "pass"], default="block",
                   help="an image that cannot be cleaned: block it with a 4xx (default) or pass it "
                        "unchanged with a warning")
    p.add_argument("--pac-port", type=int, default=None, metavar="PORT",
                   help="serve the PAC file on 127.0.0.1:PORT (default: proxy port + 1; 0: any free "
                        "port; -1: do not serve)")
    _add_host_args(p)
    p.add_argument("mitmdump_args", nargs=argparse.REMAINDER, metavar="-- MITMDUMP_ARGS",
                   help="passed to mitmdump unchanged")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("cert", help="create, install, uninstall or locate the CA certificate")
    p.add_argument("action", choices=["create", "install", "uninstall", "path"])
    _certs_arg(p)
    p.add_argument("--dry-run", action="store_true", help="print the exact commands, run nothing")
    p.add_argument("--target", choices=["auto", "nss", "system", "macos", "windows"], default="auto",
                   help="trust store (auto: NSS dbs of Chrome/Firefox on Linux, login keychain on "
                        "macOS, user Root store on Windows)")
    p.add_argument("--nssdb", action="append", metavar="DIR",
                   help="install into/remove from this NSS database directory only (repeatable)")
    p.add_argument("--unconstrained", action="store_true",
                   help="use mitmproxy's CA without name constraints (can sign for any site)")
    p.add_argument("--force", action="store_true", help="replace an existing CA (create)")
    _add_host_args(p)
    p.set_defaults(func=cmd_cert)

    p = sub.add_parser("pac", help="write or serve a PAC file sending only AI hosts to exifguard")
    p.add_argument("-o", "--output", metavar="FILE", help="write the PAC here (default: stdout)")
    p.add_argument("--proxy", default="127.0.0.1:8080", metavar="HOST:PORT")
    p.add_argument("--serve", nargs="?", type=int, const=8081, default=None, metavar="PORT",
                   help="serve it on http://127.0.0.1:PORT/proxy.pac (default port 8081); keep it "
                        "running: a browser that cannot fetch its PAC goes DIRECT")
    p.add_argument("--data-url", action="store_true",
                   help="print the PAC as a data: URL for chromium --proxy-pac-url (needs no server, "
                        "so it fails closed when exifguard is stopped)")
    _add_host_args(p)
    p.set_defaults(func=cmd_pac)

    p = sub.add_parser("report", help="summarise the audit log")
    _certs_arg(p)
    p.add_argument("--audit-log", type=Path, default=None, metavar="PATH")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--include-selftest", action="store_true", help="count selftest uploads too")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("selftest", help="send a canary photo through the running proxy")
    _certs_arg(p)
    p.add_argument("--proxy", default=None, metavar="HOST:PORT", help="default: from the running proxy")
    p.set_defaults(func=cmd_selftest)
