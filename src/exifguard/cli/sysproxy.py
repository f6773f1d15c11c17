"""`exifguard proxy on|off|status`: route the browser through exifguard without a terminal.

    exifguard proxy on      [--dry-run] [--pac-kind data|file|http] [--pac-url URL] [--proxy HOST:PORT]
    exifguard proxy off     [--dry-run]
    exifguard proxy status  [--json]

`on` points the system's automatic proxy configuration (GNOME/KDE on Linux, every
enabled network service on macOS, the per-user Internet settings on Windows) at
exifguard's PAC, and saves what was there before in <certs>/sysproxy.json; `off` puts it
back.  The default PAC URL is a `data:` URL: no server, no file, so a stopped exifguard
makes AI uploads fail instead of leaving uncleaned (docs/browsers.md has the measurements
and the per-browser details).  The planning lives in `exifguard.desktop.sysproxy`; this
module reads arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..desktop import sysproxy as sp
from .locations import command_prefix

ACTIONS = {
    "on": "point the system proxy setting at exifguard's PAC (saves the current one)",
    "off": "put back the setting that was there before `on`",
    "status": "show the setting, whether it points at exifguard and whether exifguard runs",
}

#: runs the OS's commands; tests replace it with a fake (nothing touches the real setting)
_runner: sp.Runner = sp.subprocess_runner


def _fail(msg: str, code: int = 2) -> int:
    print(msg, file=sys.stderr)
    return code


def _no_desktop_help(prefix: str, proxy_opt: str) -> str:
    return (f"\n  Chromium, Chrome, Edge, Brave (fails closed when exifguard is stopped):\n"
            f"    chromium --proxy-pac-url=\"$({prefix} pac --data-url{proxy_opt})\"\n"
            f"  Firefox: Settings > Network Settings > Automatic proxy configuration URL: paste the output of\n"
            f"    {prefix} pac --data-url{proxy_opt}\n"
            f"  or, on a desktop this command does not recognise, name it: --desktop gnome or --desktop kde")


def _pac_url(args: argparse.Namespace, certs: Path, proxy: str, text: str, state: dict) -> tuple[str, str]:
    """(url, how it behaves) for --pac-kind / --pac-url."""
    from ..proxy import pac
    from .run import PAC_NAME
    if args.pac_url:
        info = sp.classify(args.pac_url, certs)
        if info.kind in ("none", "other"):
            raise sp.SysProxyError("exifguard proxy: --pac-url must be a data:, file:// or http(s):// URL")
        return args.pac_url, _behaviour(info.kind)
    if args.pac_kind == "file":
        path = certs / PAC_NAME
        if not args.dry_run:
            certs.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(text)
        return path.as_uri(), _behaviour("file")
    if args.pac_kind == "http":
        served = state.get("pac_url")
        if isinstance(served, str) and served:
            return served, _behaviour("http")
        if state:
            # a running exifguard that serves no PAC (--pac-port -1, or the port was taken): a
            # URL nobody serves sends the browser DIRECT, uncleaned
            raise sp.SysProxyError(
                "exifguard proxy: the running exifguard serves no PAC (started with --pac-port -1, or its PAC "
                "port was taken), so an http:// PAC URL would send the browser DIRECT, uncleaned. Use "
                "--pac-kind data, or restart `run` with a free --pac-port")
        # not running: the address `run` serves its PAC on by default (always on 127.0.0.1)
        port = proxy.rpartition(":")[2]
        return f"http://{pac.hostport('127.0.0.1', int(port) + 1)}{pac.PAC_PATH}", _behaviour("http")
    return sp.data_url(text), _behaviour("data")


def _behaviour(kind: str) -> str:
    return {
        "data": "data: URL, the PAC inside the setting. With exifguard stopped, uploads to AI services fail "
                "instead of leaving uncleaned (fail closed). Chromium-based browsers and Firefox read it; Safari "
                "is not expected to (docs/browsers.md)",
        "file": "file:// URL of the PAC in the certs folder. Firefox reads it and fails closed; Chromium-based "
                "browsers IGNORE it and go direct, uncleaned (docs/browsers.md)",
        "http": "http:// URL served by `exifguard run`. Every browser reads it, but with exifguard stopped the "
                "browser cannot fetch it and goes DIRECT: uploads leave UNCLEANED (fail open)",
    }[kind]


def _run_state(certs: Path) -> dict:
    from .run import RUN_STATE
    try:
        d = json.loads((certs / RUN_STATE).read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def cmd_sysproxy(args: argparse.Namespace) -> int:
    from .proxy import _certs, _certs_opt, running_proxy
    prefix = command_prefix()
    if args.action is None:
        width = max(map(len, ACTIONS))
        lines = "\n".join(f"  {prefix} proxy {a:<{width}}  {why}" for a, why in ACTIONS.items())
        return _fail(f"exifguard proxy: say what to do with the system proxy setting:\n{lines}\n"
                     "Add --dry-run to see the exact commands first; --help for all options.")
    certs = _certs(args)
    here = sp.normalize_platform(sys.platform) if sys.platform.startswith(("linux", "darwin", "win")) else sys.platform
    try:
        platform = sp.normalize_platform(args.platform or sys.platform)
    except sp.SysProxyError as exc:
        return _fail(str(exc))
    if platform != here and args.action != "status" and not args.dry_run:
        return _fail(f"exifguard proxy: this computer is not {platform}; only --dry-run can show that plan")
    running = running_proxy(certs)
    proxy_opt = f" --proxy {args.proxy}" if args.proxy else ""
    try:
        try:
            target = sp.detect(platform, os.environ, desktop=args.desktop,
                               no_desktop_help=_no_desktop_help(prefix, proxy_opt + _certs_opt(args, certs)))
        except sp.SysProxyError as exc:
            if args.dry_run and args.action == "on":  # the dry run's answer: nothing, and what instead
                print("# exifguard proxy on: nothing would change on this computer.\n"
                      + "\n".join("# " + line for line in str(exc).removeprefix("exifguard proxy: ").splitlines()))
                return 0
            raise
        cur = sp.read_current(target, _runner)
        if args.action == "status":
            return _status(args, certs, cur, running)
        if cur.errors and not args.dry_run:
            return _fail("exifguard proxy: could not read the current setting, so nothing was changed:\n  "
                         + "\n  ".join(cur.errors))
        saved = sp.load_state(certs)
        if args.action == "on":
            return _on(args, certs, cur, saved, running, prefix)
        return _off(args, certs, cur, saved, prefix)
    except sp.SysProxyError as exc:
        return _fail(str(exc))
    except ValueError as exc:  # a bad --proxy
        return _fail(f"exifguard proxy: {exc}")


def _on(args: argparse.Namespace, certs: Path, cur: sp.Current, saved: dict | None, running: str | None,
        prefix: str) -> int:
    from ..proxy import pac
    from .proxy import DEFAULT_PROXY, _certs_opt, _hosts
    proxy = pac.normalize_proxy(args.proxy or running or DEFAULT_PROXY)
    text = pac.pac_text(_hosts(args, certs), proxy)
    if args.pac_kind is None:
        args.pac_kind = sp.default_pac_kind(cur.target)
    url, how = _pac_url(args, certs, proxy, text, _run_state(certs))
    plan = sp.plan_on(cur, url, saved)
    t = cur.target.platform
    undo = f"{prefix} proxy off{_certs_opt(args, certs)}"
    if args.dry_run:
        print(f"# exifguard proxy on ({cur.target.describe()}): commands that would run")
        for c in plan.commands:
            print(c.shell(t) + ("   # may fail harmlessly" if c.may_fail else ""))
        print(f"# PAC: {how}")
        if args.pac_kind == "file" and not args.pac_url:
            print(f"# the PAC file would be written first: {certs / PAC_NAME}")
        for ch in plan.changes:
            print(f"# would change {ch.describe()}")
        for e in cur.errors:
            print(f"# could not read the current value ({e}); it is read when this runs for real")
        print(f"# the values from before would be saved in {sp.state_path(certs)} for: {undo}")
        return 0
    # saved first: if a step fails half-way, `off` can still restore what was there before
    # (it only touches places that point at exifguard)
    path = sp.save_state(certs, plan)
    skipped = sp.apply(plan, _runner)
    print(f"exifguard proxy on: {cur.target.describe()} now sends AI hosts to exifguard (proxy {proxy}).")
    print(f"PAC: {how}.")
    print("changed:")
    for ch in plan.changes:
        print(f"  {ch.describe()}")
    for s in skipped:
        print(f"  ({s})")
    print(f"the values from before are saved in {path}")
    if sp.classify(url).kind != "data":
        print("for a set-up that fails closed, give the browser exifguard's PAC itself:"
              + _no_desktop_help(prefix, _certs_opt(args, certs)).split("\n  or, on a desktop")[0])
    for n in plan.notes:
        print(n)
    if running is None:
        if sp.classify(url).fails_closed:
            print(f"exifguard is not running: uploads to AI services fail until you start it:\n  {prefix} run"
                  f"{_certs_opt(args, certs)}")
        else:
            print(f"exifguard is NOT running: with this PAC, uploads to AI services leave UNCLEANED until you "
                  f"start it:\n  {prefix} run{_certs_opt(args, certs)}")
    print(f"check it in your browser: {prefix} check{_certs_opt(args, certs)}")
    print(f"undo: {undo}")
    return 0


def _off(args: argparse.Namespace, certs: Path, cur: sp.Current, saved: dict | None, prefix: str) -> int:
    from .proxy import _certs_opt
    plan = sp.plan_off(cur, saved)
    t = cur.target.platform
    if plan.nothing_to_do:
        if args.dry_run:
            print(f"# exifguard proxy off ({cur.target.describe()}): nothing would run: {plan.nothing_to_do}")
            return 0
        sp.clear_state(certs)
        print(f"exifguard proxy off: {plan.nothing_to_do}.")
        return 0
    if args.dry_run:
        print(f"# exifguard proxy off ({cur.target.describe()}): commands that would run")
        for c in plan.commands:
            print(c.shell(t) + ("   # may fail harmlessly" if c.may_fail else ""))
        for ch in plan.changes:
            print(f"# would change {ch.describe()}")
        if saved is None:
            print("# (no saved values from `proxy on`: the setting would be switched off)")
        return 0
    skipped = sp.apply(plan, _runner)
    sp.clear_state(certs)
    print(f"exifguard proxy off: {cur.target.describe()} no longer sends AI hosts to exifguard.")
    print("changed:")
    for ch in plan.changes:
        print(f"  {ch.describe()}")
    for s in skipped:
        print(f"  ({s})")
    if saved is None:
        print("(no values saved by `proxy on` were found: the automatic proxy configuration was switched off)")
    for n in plan.notes:
        print(n)
    print("uploads from a browser that follows the system setting now leave UNCLEANED; to route them "
          f"again: {prefix} proxy on{_certs_opt(args, certs)}")
    return 0


def _status(args: argparse.Namespace, certs: Path, cur: sp.Current, running: str | None) -> int:
    from .proxy import _certs_opt
    prefix = command_prefix()
    saved = sp.load_state(certs) or {}
    known = [u for u in (saved.get("url"), _run_state(certs).get("pac_url")) if isinstance(u, str) and u]
    st = sp.status(cur, running, certs, known)
    if args.json:
        print(json.dumps({
            "platform": st.target.platform, "desktop": st.target.desktop, "routed": st.routed,
            "running": running is not None, "proxy": running,
            "entries": [{"where": e.where, "kind": e.pac.kind, "exifguard": e.pac.ours, "proxy": e.pac.proxy,
                         "fails_closed": e.pac.fails_closed if e.pac.ours else None} for e in st.entries],
            "advice": st.advice(), "errors": st.errors}, indent=1))
        return 0 if st.routed else 1
    print(f"exifguard proxy status: {st.target.describe()}")
    for e in st.entries:
        print(f"  {e.describe()}")
    if not st.entries:
        print("  (no network service found)")
    for e in st.errors:
        print(f"  could not read: {e}")
    print(f"exifguard: {'running, proxy ' + running if running else 'not running'} (certs {certs})")
    for a in st.advice():
        print(a)
    if not st.routed:
        print(f"the system setting does not send AI hosts to exifguard; to route them:\n  {prefix} proxy on"
              f"{_certs_opt(args, certs)}")
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add `proxy on|off|status` to the `exifguard` parser."""
    from .proxy import _add_host_args, _certs_arg
    p = sub.add_parser(
        "proxy", help="route the browser through exifguard via the system proxy setting (on/off/status)",
        description="Set the system's automatic proxy configuration (PAC) so browsers send only the AI upload "
                    "hosts to exifguard: GNOME or KDE settings on Linux, every enabled network service on macOS "
                    "(networksetup), the per-user Internet settings on Windows. `on` saves the setting it "
                    "replaces and `off` puts it back. The default PAC URL is a data: URL, which needs no server: "
                    "with exifguard stopped, uploads to AI services fail instead of leaving uncleaned (Chromium, "
                    "Chrome, Edge, Brave and Firefox; not Safari). On KDE it is the http URL `exifguard run` "
                    "serves (Chromium cannot read a data: PAC from KDE's setting), which fails open when "
                    "exifguard stops. docs/browsers.md has each browser.",
        epilog="actions: " + "; ".join(f"{a}: {why}" for a, why in ACTIONS.items())
               + ". status exits 0 when the setting points at exifguard, 1 when it does not.")
    p.add_argument("action", nargs="?", choices=list(ACTIONS), metavar="ACTION",
                   help="one of: " + ", ".join(ACTIONS) + " (listed below)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the exact commands and values, change nothing")
    _certs_arg(p)
    p.add_argument("--pac-kind", choices=list(sp.PAC_KINDS), default=None,
                   help="data (default; on KDE http): the PAC inside the URL, fails closed; file: "
                        "<certs>/proxy.pac, read by Firefox only; http: the URL `exifguard run` serves, read by "
                        "every browser but fails OPEN when exifguard is stopped")
    p.add_argument("--pac-url", default=None, metavar="URL",
                   help="set this PAC URL instead (data:, file:// or http://)")
    p.add_argument("--proxy", default=None, metavar="HOST:PORT",
                   help="the exifguard proxy the PAC points to (default: the running proxy from <certs>/run.json, "
                        "else 127.0.0.1:8080)")
    p.add_argument("--desktop", choices=["gnome", "kde"], default=None,
                   help="Linux: whose setting to change (default: from XDG_CURRENT_DESKTOP)")
    p.add_argument("--json", action="store_true", help="status: machine-readable output")
    # tests and docs: plan for another OS (with --dry-run); not for people
    p.add_argument("--platform", choices=list(sp.PLATFORMS), default=None, help=argparse.SUPPRESS)
    _add_host_args(p)
    p.set_defaults(func=cmd_sysproxy)
