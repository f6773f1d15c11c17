"""The status page at the PAC server's root (`http://127.0.0.1:8081/` by default).

Served by `exifguard run`'s own process (not by mitmdump), plain HTTP on loopback:

* uptime, the proxy address and mode, counts per service (cleaned / blocked / passed /
  audited) for this run and the last uploads (time, service, what was removed as carrier,
  tag names and categories: never values, never file names) — read from the audit log's
  **tail** only (at most `TAIL_BYTES`), so a years-long log costs nothing;
* a link to the check page (`https://claude.ai/.well-known/exifguard`);
* the same per-service probe table as the check page, for browsers that do *not* trust
  exifguard's certificate (the check page itself cannot load there).  A failed probe is
  told apart here by asking the proxy: this server sends
  `GET https://<probe host>/.well-known/exifguard/seen?host=..&since=..` *through the proxy*,
  trusting only exifguard's CA (as `exifguard selftest` does).  The check-page addon in
  mitmdump answers it itself (never forwarded; `exifguard run` connects upstream lazily),
  from its memory of failed client handshakes.  The page reaches that through this
  server's own `/seen`, so the browser never needs to trust anything for it.

Safety: loopback only (the PAC server refuses other listen addresses), requests whose Host
header is not a loopback name of this server are refused (a DNS-rebinding page cannot read
the upload history), every value from the audit log is HTML-escaped, the page has a strict
Content-Security-Policy with a per-response nonce and no external resource.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from .. import __version__
from . import probe
from .hosts import HostSet, normalise_host

STATUS_JSON = "/status.json"
SEEN = "/seen"
TAIL_BYTES = 512 * 1024
LAST_UPLOADS = 12
ASK_TIMEOUT_S = 5.0
_ACTIONS = ("stripped", "blocked", "passed", "audit")


@dataclass
class StatusSource:
    """What `exifguard run` knows and the status page shows (all optional but `started`)."""

    started: float = field(default_factory=time.time)
    proxy: str | None = None
    """HOST:PORT of the proxy (for asking it about failed handshakes)."""
    ca_cert: Path | None = None
    """exifguard's CA certificate: the only one trusted when this server asks the proxy."""
    audit_log: str | os.PathLike[str] | None = None
    hosts: HostSet | None = None
    mode: str | None = None
    cert_install: str | None = None
    """The command that installs exifguard's CA for this run (shown next to "certificate
    not trusted"; it must run as printed)."""

    def host_set(self) -> HostSet:
        return self.hosts if self.hosts is not None else HostSet.build()


# ---- the audit log's tail --------------------------------------------------------------------
def read_tail(path: str | os.PathLike[str], max_bytes: int = TAIL_BYTES) -> tuple[list[dict[str, Any]], bool]:
    """The well-formed records in the last `max_bytes` of an audit log, oldest first, and
    whether the file holds more than was read."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - max_bytes)
        f.seek(start)
        data = f.read(max_bytes)
    if start > 0:
        cut = data.find(b"\n")
        data = data[cut + 1:] if cut >= 0 else b""
    out = []
    for line in data.splitlines():
        try:
            d = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(d, dict):
            out.append(d)
    return out, start > 0


def _epoch(stamp: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _strs(v: Any, limit: int = 40) -> list[str]:
    return [str(x)[:80] for x in v[:limit]] if isinstance(v, list) else []


def summarise(records: list[dict[str, Any]], started: float, hosts: HostSet | None,
              truncated: bool = False) -> dict[str, Any]:
    """Counts per service since `started` and the last uploads (names, never values)."""
    def service(host: str) -> str:
        e = hosts.lookup(host) if hosts is not None and host else None
        return e.service if e is not None else host or "?"

    counts: dict[str, dict[str, int]] = {}
    tests = 0
    oldest: float | None = None
    for r in records:
        t = _epoch(r.get("time"))
        if t is not None and (oldest is None or t < oldest):
            oldest = t
        if t is None or t < started:
            continue
        if r.get("selftest"):
            tests += 1
            continue
        c = counts.setdefault(service(str(r.get("host") or "")), {a: 0 for a in _ACTIONS})
        a = str(r.get("action"))
        c[a] = c.get(a, 0) + 1
    last = []
    for r in reversed(records[-200:]):
        if len(last) >= LAST_UPLOADS:
            break
        removed = [{"carrier": str(x.get("carrier", ""))[:80], "tags": _strs(x.get("tags")),
                    "categories": _strs(x.get("categories"))}
                   for x in (r.get("removed") or []) if isinstance(x, dict)][:20]
        last.append({"time": str(r.get("time", ""))[:40], "service": service(str(r.get("host") or "")),
                     "host": str(r.get("host", ""))[:120], "action": str(r.get("action", ""))[:20],
                     "format": str(r.get("format") or "")[:20], "test": bool(r.get("selftest")),
                     "categories": _strs(r.get("categories")), "removed": removed})
    partial = truncated and (oldest is None or oldest > started)
    return {"counts": dict(sorted(counts.items())), "tests": tests, "last": last,
            "counts_partial": partial}


def snapshot(src: StatusSource, now: float | None = None) -> dict[str, Any]:
    """Everything the page shows, as data (also served as /status.json)."""
    now = time.time() if now is None else now
    d: dict[str, Any] = {"version": __version__, "started": src.started, "uptime_s": max(0, int(now - src.started)),
                         "proxy": src.proxy, "mode": src.mode, "audit_log": str(src.audit_log or "") or None,
                         "check_url": check_url(src), "cert_install": src.cert_install, "counts": {}, "last": [], "tests": 0,
                         "counts_partial": False, "audit_error": None}
    if src.audit_log:
        try:
            records, truncated = read_tail(src.audit_log)
            d.update(summarise(records, src.started, src.hosts, truncated))
        except FileNotFoundError:
            pass  # nothing logged yet
        except OSError as exc:
            d["audit_error"] = exc.strerror or type(exc).__name__
    return d


def check_url(src: StatusSource) -> str:
    return probe.check_page_url(src.host_set())


def uptime_text(seconds: int) -> str:
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d} d {h} h {m:02d} min"
    if h:
        return f"{h} h {m:02d} min"
    return f"{m} min {s:02d} s"


# ---- asking the proxy -------------------------------------------------------------------------
def ask_proxy_seen(src: StatusSource, host: str, since: float, timeout: float = ASK_TIMEOUT_S) -> dict[str, Any]:
    """Did the proxy see a browser refuse its certificate for `host` since `since`?

    Asked through the proxy itself, over HTTPS to `host`, trusting only exifguard's CA;
    the check-page addon answers (nothing reaches the service).
    """
    if not src.proxy or src.ca_cert is None:
        return {"host": host, "tls_failed": False, "error": "this status page is not attached to a proxy"}
    url = f"https://{host}{probe.SEEN_PATH}?host={quote(host)}&since={since!r}"
    try:
        ctx = ssl.create_default_context(cafile=str(src.ca_cert))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"https": f"http://{src.proxy}"}),
                                             urllib.request.HTTPSHandler(context=ctx))
        with opener.open(urllib.request.Request(url, headers={"accept": "application/json"}),
                         timeout=timeout) as r:
            d = json.loads(r.read(4096))
        return {"host": host, "tls_failed": d.get("tls_failed") is True,
                "intercepted": d.get("intercepted") is True, "error": None}
    except (urllib.error.URLError, OSError, ValueError, ssl.SSLError) as exc:
        return {"host": host, "tls_failed": False,
                "error": f"could not ask the proxy ({type(getattr(exc, 'reason', exc)).__name__})"}


# ---- HTTP ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def host_allowed(host_header: str | None, port: int) -> bool:
    """Only loopback names of this server (a rebinding DNS name is refused)."""
    if not host_header:
        return False
    h = host_header.strip().lower()
    return h in {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}


def handle(src: StatusSource, path: str, host_header: str | None, port: int) -> Answer | None:
    """Answer a status-page request, or None when `path` is not one of ours."""
    parts = urlsplit(path)
    if parts.path not in ("/", STATUS_JSON, SEEN):
        return None
    if not host_allowed(host_header, port):
        return Answer(421, probe.security_headers("text/plain; charset=utf-8"),
                      b"exifguard's status page answers only on 127.0.0.1 or localhost.\n")
    if parts.path == STATUS_JSON:
        return Answer(200, probe.security_headers("application/json"), json.dumps(snapshot(src)).encode())
    if parts.path == SEEN:
        q = parse_qs(parts.query)
        host = normalise_host((q.get("host") or [""])[0])[:253]
        hosts = src.host_set()
        if not host or hosts.lookup(host) is None:
            return Answer(400, probe.security_headers("application/json"),
                          json.dumps({"error": "not a host exifguard intercepts"}).encode())
        since = probe.parse_since((q.get("since") or [None])[0], time.time())
        return Answer(200, probe.security_headers("application/json"),
                      json.dumps(ask_proxy_seen(src, host, since)).encode())
    nonce = probe.nonce()
    targets = probe.probe_targets(src.host_set())
    connect = ["'self'", *dict.fromkeys(f"https://{t.host}" for t in targets)]
    body = render(snapshot(src), targets, nonce)
    return Answer(200, probe.security_headers("text/html; charset=utf-8", probe.csp(nonce, connect)),
                  body.encode())


def _removed_text(r: dict[str, Any]) -> str:
    tags = list(dict.fromkeys(t for x in r["removed"] for t in x["tags"]))
    cats = r["categories"] or sorted({c for x in r["removed"] for c in x["categories"]})
    if not tags and not cats:
        return "nothing"
    shown = ", ".join(tags[:10]) + (f" (+{len(tags) - 10} more)" if len(tags) > 10 else "")
    return (f"{', '.join(cats)}: " if cats else "") + (shown or ", ".join(x["carrier"] for x in r["removed"]))


def render(snap: dict[str, Any], targets: list[probe.ProbeTarget], nonce: str, now: float | None = None) -> str:
    e = probe.e
    now = time.time() if now is None else now
    rows = "".join(
        f"<tr><td>{e(s)}</td><td>{c.get('stripped', 0)}</td><td>{c.get('blocked', 0)}</td>"
        f"<td>{c.get('passed', 0)}</td><td>{c.get('audit', 0)}</td></tr>"
        for s, c in snap["counts"].items()) or '<tr><td colspan="5" class="muted">no uploads yet in this run</td></tr>'
    last = "".join(
        f"<tr><td>{e(r['time'])}</td><td>{e(r['service'])}</td><td>{e(r['action'])}"
        f"{' (test)' if r['test'] else ''}</td><td>{e(_removed_text(r))}</td></tr>"
        for r in snap["last"]) or '<tr><td colspan="4" class="muted">none</td></tr>'
    if not snap["audit_log"]:
        log_note = '<p class="warn">No audit log: counts and uploads are not recorded (run without --no-audit-log).</p>'
    elif snap["audit_error"]:
        log_note = f'<p class="bad">The audit log could not be read: {e(snap["audit_error"])}</p>'
    else:
        log_note = f'<p class="muted">From the end of the audit log {e(snap["audit_log"])}' + \
            (" (older records not read: counts may be partial)" if snap["counts_partial"] else "") + \
            (f"; {snap['tests']} test upload(s) not counted" if snap["tests"] else "") + ".</p>"
    data = {"since": now, "seen_url": SEEN, "timeout_ms": 8000}
    mode = snap["mode"] or "unknown"
    cert = (f' (install it: <code id="cert-install">{e(snap["cert_install"])}</code>, then restart the browser)'
            if snap.get("cert_install") else "")
    head = (f"exifguard {e(snap['version'])} is running" if snap["proxy"] else
            f"exifguard {e(snap['version'])}: PAC server (not attached to a running proxy)")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">
<title>exifguard status</title><style nonce="{nonce}">{probe.STYLE}</style></head>
<body>
<h1>{head}</h1>
<p>Up for <b id="uptime">{e(uptime_text(snap['uptime_s']))}</b>; proxy <code>{e(snap['proxy'] or '?')}</code>;
mode <b>{e(mode)}</b>. The PAC file is at <a href="/proxy.pac">/proxy.pac</a>.</p>
<p>Proof in this browser: open <a id="check" href="{e(snap['check_url'])}">{e(snap['check_url'])}</a>
(it loads only when this browser goes through exifguard and trusts its certificate).</p>
<h2>Uploads in this run</h2>
<table id="counts"><thead><tr><th>service</th><th>cleaned</th><th>blocked</th><th>passed uncleaned</th>
<th>audited</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Last uploads</h2>
<table id="last"><thead><tr><th>time (UTC)</th><th>service</th><th>action</th><th>removed (names, never values)</th>
</tr></thead><tbody>{last}</tbody></table>
{log_note}
<h2>Every AI service, from this browser</h2>
<p class="muted">The same check as the check page, from here; it works in a browser that does not trust
exifguard's certificate too. <b>not routed</b>: this browser sends that host elsewhere (set the proxy or PAC
for it); <b>certificate not trusted</b>: it reaches exifguard but refuses its certificate{cert}.</p>
{probe.probe_table(targets)}
{probe.json_script(data)}
<script nonce="{nonce}">{probe.PROBE_SCRIPT}</script>
</body></html>
"""


__all__ = ["Answer", "StatusSource", "ask_proxy_seen", "check_url", "handle", "host_allowed", "read_tail",
           "render", "snapshot", "summarise", "uptime_text"]
