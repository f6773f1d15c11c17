"""Proxy auto-config (PAC): AI hosts go to exifguard, everything else goes DIRECT.

There is deliberately **no "; DIRECT" fallback** for the AI hosts: when exifguard is
stopped, an upload fails visibly instead of silently bypassing the cleaner.  The
PAC receives the host without the port; we compare exact names and ".suffix"
matches ourselves (dnsDomainIs("evilclaude.ai", "claude.ai") would be true).

The server that serves the PAC (`serve`, started by `exifguard run`) also answers `/`
with exifguard's status page (`status.py`): uptime, uploads per service, the last uploads
and a per-service check of the browser that opens it.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterable
from typing import Any

from .hosts import HostSet

PAC_PATH = "/proxy.pac"
PAC_TYPE = "application/x-ns-proxy-autoconfig"


def data_url(pac: str) -> str:
    """The PAC as a `data:` URL, for Chromium's `--proxy-pac-url`.

    Why: when Chromium cannot fetch a PAC URL (the server that served it is gone) it
    silently connects DIRECT, so a PAC served by a process that stops with the proxy
    fails open.  A `data:` URL needs no server, so with exifguard stopped the AI hosts
    still point at the dead proxy and uploads fail visibly (fail closed).
    """
    return f"data:{PAC_TYPE};base64," + base64.b64encode(pac.encode()).decode("ascii")


def hostport(host: str, port: int | str) -> str:
    """`host:port` as URLs, PAC files and proxy settings spell it: an IPv6 address in
    brackets (`[::1]:8080`; `::1:8080` is not an address anyone can parse)."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normalize_proxy(proxy: str) -> str:
    """A HOST:PORT given by a person or by run.json, with an IPv6 host bracketed.

    `::1:8080` is read as host `::1`, port 8080 (the last colon separates the port).
    Raises ValueError for anything that is not HOST:PORT with a numeric port.
    """
    if any(c in proxy for c in "\"'\\;\n ") or ":" not in proxy:
        raise ValueError(f"invalid proxy address {proxy!r}: use HOST:PORT ([::1]:PORT for IPv6)")
    if proxy.startswith("["):
        host, sep, port = proxy[1:].partition("]:")
        if not sep or not host or "]" in host:
            raise ValueError(f"invalid proxy address {proxy!r}: use HOST:PORT ([::1]:PORT for IPv6)")
    else:
        host, _, port = proxy.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid proxy address {proxy!r}: use HOST:PORT with a port from 1 to 65535")
    return hostport(host, int(port))


def pac_text(hosts: HostSet | Iterable[tuple[str, bool]], proxy: str = "127.0.0.1:8080") -> str:
    """The PAC for these hosts.  Label rules ("tos-*.snssdk.com") become anchored regexes
    over one label, so exactly the hosts exifguard decrypts go to it (a wider suffix would
    only send more hosts through the proxy's untouched tunnel, but never fewer)."""
    entries = hosts.pac_entries() if isinstance(hosts, HostSet) else list(hosts)
    patterns = sorted(set(hosts.pac_patterns())) if isinstance(hosts, HostSet) else []
    exact = sorted({d for d, _ in entries})
    suffixes = sorted({d for d, sub in entries if sub})
    proxy = normalize_proxy(proxy)
    return f"""// exifguard proxy auto-config: only AI upload hosts go through exifguard.
// No DIRECT fallback for them: if exifguard is not running, those uploads fail
// instead of leaving with their metadata.  Everything else goes DIRECT.
var EXIFGUARD_PROXY = "PROXY {proxy}";
var EXIFGUARD_EXACT = {json.dumps(exact)};
var EXIFGUARD_SUFFIX = {json.dumps(suffixes)};
var EXIFGUARD_PATTERN = {json.dumps(patterns)};

function FindProxyForURL(url, host) {{
  var h = String(host).toLowerCase();
  if (h.charAt(h.length - 1) === ".") {{ h = h.substring(0, h.length - 1); }}
  var i;
  for (i = 0; i < EXIFGUARD_EXACT.length; i++) {{
    if (h === EXIFGUARD_EXACT[i]) {{ return EXIFGUARD_PROXY; }}
  }}
  for (i = 0; i < EXIFGUARD_SUFFIX.length; i++) {{
    var s = "." + EXIFGUARD_SUFFIX[i];
    if (h.length > s.length && h.substring(h.length - s.length) === s) {{ return EXIFGUARD_PROXY; }}
  }}
  for (i = 0; i < EXIFGUARD_PATTERN.length; i++) {{
    if (new RegExp(EXIFGUARD_PATTERN[i]).test(h)) {{ return EXIFGUARD_PROXY; }}
  }}
  return "DIRECT";
}}
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    pac: bytes = b""
    status: Any = None  # status.StatusSource: what the page at "/" shows

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        """HEAD as GET without the body: tools (curl -I, uptime checks, some PAC
        fetchers) probe with HEAD, and a 501 there reads as "the server is broken"."""
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        if self.path.split("?", 1)[0] == PAC_PATH:
            self._send(200, {"Content-Type": PAC_TYPE, "Cache-Control": "no-cache"}, self.pac, body)
            return
        from . import status
        try:
            ans = status.handle(self.status, self.path, self.headers.get("Host"), self.server.server_address[1])
        except Exception as exc:  # noqa: BLE001 - the page must never take the PAC server down
            ans = status.Answer(500, {"Content-Type": "text/plain; charset=utf-8"},
                                f"exifguard's status page failed ({type(exc).__name__}).\n".encode())
        if ans is None:
            self.send_error(404)
            return
        self._send(ans.status, ans.headers, ans.body, body)

    def _send(self, code: int, headers: dict[str, str], payload: bytes, body: bool) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


def serve(pac: str, port: int = 0, host: str = "127.0.0.1",
          status: Any = None) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve the PAC (at /proxy.pac) and the status page (at /, see `status.py`) on
    loopback in a daemon thread; returns (server, PAC url).

    `status` is a `status.StatusSource` (the run's start time, proxy address, CA, audit
    log, hosts, mode); without one the page shows what it can (uptime of this server).
    """
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError("the PAC server listens on loopback only")
    from .status import StatusSource
    src = status if status is not None else StatusSource()
    handler = type("PacHandler", (_Handler,), {"pac": pac.encode(), "status": src})
    srv = http.server.ThreadingHTTPServer((host, port), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, name="exifguard-pac", daemon=True).start()
    return srv, f"http://{hostport(host, srv.server_address[1])}{PAC_PATH}"


def status_url(pac_url: str) -> str:
    """The status page's address for a PAC URL from `serve` (its server's root)."""
    return pac_url[: -len(PAC_PATH)] + "/" if pac_url.endswith(PAC_PATH) else pac_url
