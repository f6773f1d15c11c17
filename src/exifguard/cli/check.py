"""`exifguard check`: open the check page in the default browser, and ask the proxy.

The check page (`https://claude.ai/.well-known/exifguard` by default) is exifguard's proof
*in the browser the person uses*: it loads only when that browser sends the host through
exifguard and trusts its certificate.  This command opens it (webbrowser module) and,
independently of any browser, fetches `/.well-known/exifguard.json` from the same host
through the running proxy (address from <certs>/run.json, trusting only exifguard's CA,
as `selftest` does) to say whether exifguard answers `"protected": true`.

Exit status: 0 when the running proxy answers protected, 1 otherwise (not running, audit
mode, an error), 2 for a host exifguard does not intercept.
"""

from __future__ import annotations

import argparse
import json
import shlex
import ssl
import sys
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path
from typing import Any, Callable

from .locations import command_prefix

DEFAULT_HOST = "claude.ai"
TIMEOUT_S = 15.0


def check_url(host: str) -> str:
    from ..proxy.probe import WELL_KNOWN
    return f"https://{host}{WELL_KNOWN}"


def ask_proxy(proxy: str, ca_cert: Path, host: str, timeout: float = TIMEOUT_S) -> dict[str, Any]:
    """The check-page JSON for `host`, fetched through the proxy trusting only exifguard's CA."""
    from ..proxy.probe import JSON_PATH
    ctx = ssl.create_default_context(cafile=str(ca_cert))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"https": f"http://{proxy}"}),
                                         urllib.request.HTTPSHandler(context=ctx))
    with opener.open(f"https://{host}{JSON_PATH}", timeout=timeout) as r:
        d = json.loads(r.read(8192))
    if not isinstance(d, dict):
        raise ValueError("the answer is not a JSON object")
    return d


def _status_page(certs: Path) -> str | None:
    """The running proxy's status page (the PAC server's root), from run.json."""
    from ..proxy.pac import status_url
    try:
        url = json.loads((certs / "run.json").read_text()).get("pac_url")
    except (OSError, ValueError, AttributeError):
        return None
    return status_url(url) if isinstance(url, str) and url.startswith("http://") else None


def cmd_check(args: argparse.Namespace, open_browser: Callable[[str], bool] | None = None) -> int:
    from ..proxy import ca
    from ..proxy.hosts import normalise_host
    from ..proxy.pac import normalize_proxy
    from .proxy import _certs, _certs_opt, _hosts, running_proxy
    prefix = command_prefix()
    certs = _certs(args)
    hosts = _hosts(args, certs)
    from ..proxy.probe import check_page_host
    host = normalise_host(args.host) if args.host else check_page_host(hosts)
    if hosts.lookup(host) is None:
        print(f"exifguard: {host} is not a host exifguard intercepts, so it has no check page there.\n"
              f"The hosts it intercepts (use one with --host):\n  {prefix} hosts{_certs_opt(args, certs)}",
              file=sys.stderr)
        return 2
    url = check_url(host)
    print(f"check page: {url}")
    print("  it loads only in a browser that sends this host through exifguard and trusts its certificate")
    rc = 1
    proxy = running_proxy(certs)
    if proxy is None:
        print(f"exifguard is NOT running for {certs}: the page cannot load. Start it:\n"
              f"  {prefix} run{_certs_opt(args, certs)}")
    else:
        try:
            proxy = normalize_proxy(proxy)
            info = ca.load_ca(certs)
            d = ask_proxy(proxy, info.cert_path, host)
        except FileNotFoundError:
            print(f"exifguard: no CA in {certs}", file=sys.stderr)
        except urllib.error.HTTPError as exc:
            text = exc.read(400).decode("utf-8", "replace").strip()
            print(f"the proxy at {proxy} answered {exc.code} for {host}: {text}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            print(f"could not ask the proxy at {proxy}: {reason}")
        else:
            status_page = _status_page(certs)
            if status_page:
                print(f"status page: {status_page}  (also checks a browser that does not trust the certificate)")
            if d.get("protected") is True and d.get("host") == host:
                print(f"the proxy at {proxy} answers for {host}: protected (exifguard {d.get('version')}, "
                      f"mode {d.get('mode')})")
                rc = 0
            elif d.get("exifguard") is True:
                print(f"the proxy at {proxy} answers for {host}, but NOT protected: mode {d.get('mode')} "
                      "(audit mode forwards photos unchanged)")
            else:
                print(f"the proxy at {proxy} gave an answer that is not exifguard's for {host}")
    if not args.no_browser:
        opener = open_browser or webbrowser.open
        try:
            opened = opener(url)
        except Exception:  # noqa: BLE001 - no browser available is not an error of the check
            opened = False
        if opened:
            print("opened it in the default browser")
        else:
            print(f"could not open a browser here; open the URL yourself: {shlex.quote(url)}")
    return rc


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add `check` to the `exifguard` parser."""
    from .proxy import _add_host_args, _certs_arg
    p = sub.add_parser(
        "check", help="open the check page in your browser and ask the running proxy",
        description="Open https://HOST/.well-known/exifguard in the default browser: exifguard answers it "
                    "itself, so it loads only when that browser goes through exifguard and trusts its "
                    "certificate; it lists every AI service's state and runs a live test upload. Also "
                    "asks the running proxy whether it answers \"protected\" (exit status 0 if so).")
    p.add_argument("--host", default=None,
                   help=f"an intercepted host to check (default {DEFAULT_HOST}; `hosts` lists them)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL and the proxy's answer")
    _certs_arg(p)
    _add_host_args(p)
    p.set_defaults(func=cmd_check)
