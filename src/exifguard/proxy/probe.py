"""What the check page and the status page share: which host to probe per service, the
memory of failed TLS handshakes, and the page pieces (style, the probe script).

No mitmproxy here: the status page runs in `exifguard run`'s own process (the PAC server),
the check page inside mitmdump (`checkpage.py`).

How a page tells the three states of a service apart (a browser's `fetch()` only says
"it worked" or "it failed", never why):

* it fetches `https://<probe host>/.well-known/exifguard.json`; exifguard's check-page
  addon answers that itself on every host it intercepts.  An answer with
  `"protected": true` means this browser sends the host through exifguard *and* trusts
  exifguard's certificate: **protected**;
* when the fetch fails (or something else answered), the page asks whether exifguard saw
  a TLS handshake for that host fail on the browser's side since the probe started.  The
  addon records such failures per SNI name (`TlsFailures`: host names only, a small ring,
  a short time to live).  A failure means the browser did come through exifguard but
  refused its certificate: **certificate not trusted**; nothing at all means the browser
  went elsewhere (DIRECT, another proxy): **not routed**.

What a probe costs: a routed probe never leaves the computer (exifguard answers it).  A
probe of a host that is *not* routed goes wherever the browser sends it, normally to the
real service: a credential-less `GET /.well-known/exifguard.json` that the service answers
with its own 404, and that exposes nothing but the request itself.

The probe host of a service is one concrete name its rules match (`probe_targets`): an
exact rule as is, a subtree rule's own domain (`*.oaiusercontent.com` ->
`oaiusercontent.com`), a one-label glob with the wildcard filled in.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from .hosts import HostEntry, HostSet, Kind, normalise_host

WELL_KNOWN = "/.well-known/exifguard"
JSON_PATH = WELL_KNOWN + ".json"
SEEN_PATH = WELL_KNOWN + "/seen"
SAMPLE_PATH = WELL_KNOWN + "/sample.jpg"
TEST_PATH = WELL_KNOWN + "/test-upload"

#: How long a failed handshake is remembered, and how many are kept: enough for one page's
#: probes a few times over, small enough that it is no browsing history.
FAILURE_TTL_S = 120.0
FAILURE_SLOTS = 64

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    service: str
    host: str


def concrete_host(entry: HostEntry) -> str | None:
    """One name this rule matches that a browser can ask for (None if none can be made)."""
    if entry.label is None:
        return entry.domain
    for fill in ("", "probe"):
        label = entry.label.replace("*", fill)
        if _LABEL.match(label):
            name = f"{label}.{entry.domain}"
            if entry.matches(name):
                return name
    return None


def probe_targets(hosts: HostSet) -> list[ProbeTarget]:
    """One probe host per service, in the order services appear.

    Preferred: a dedicated rule (every request to it is exifguard's) over a shared one,
    an exact name over a subtree over a glob.  The name is checked to map back to the
    same service (a more specific rule of another service could shadow it).
    """
    by_service: dict[str, list[HostEntry]] = {}
    for e in hosts.entries:
        by_service.setdefault(e.service, []).append(e)
    out = []
    for service, entries in by_service.items():
        ranked = sorted(entries, key=lambda e: (e.kind is not Kind.DEDICATED, e.label is not None,
                                                e.subdomains))  # stable: table order among equals
        for e in ranked:
            name = concrete_host(e)
            if name is None:
                continue
            found = hosts.lookup(name)
            if found is not None and found.service == service:
                out.append(ProbeTarget(service, name))
                break
    return out


CHECK_HOST = "claude.ai"


def check_page_host(hosts: HostSet) -> str:
    """The host whose check page exifguard points people to: claude.ai, unless it was
    removed from the host list (then the first service's probe host)."""
    if hosts.lookup(CHECK_HOST) is not None:
        return CHECK_HOST
    return next((t.host for t in probe_targets(hosts)), CHECK_HOST)


def check_page_url(hosts: HostSet) -> str:
    """`https://claude.ai/.well-known/exifguard` (see `check_page_host`)."""
    return f"https://{check_page_host(hosts)}{WELL_KNOWN}"


class TlsFailures:
    """Recent client-side TLS handshake failures, by host name only (thread-safe).

    Bounded twice: at most `slots` entries, each forgotten after `ttl` seconds.  Only
    names the caller decided to keep (hosts exifguard intercepts) go in.
    """

    def __init__(self, ttl: float = FAILURE_TTL_S, slots: int = FAILURE_SLOTS,
                 clock=time.time) -> None:
        self.ttl, self.clock = ttl, clock
        self._ring: deque[tuple[float, str]] = deque(maxlen=slots)
        self._lock = threading.Lock()

    def record(self, host: str) -> None:
        with self._lock:
            self._ring.append((self.clock(), normalise_host(host)))

    def failed_since(self, host: str, since: float) -> bool:
        h = normalise_host(host)
        now = self.clock()
        with self._lock:
            return any(t >= since and now - t <= self.ttl and name == h for t, name in self._ring)

    def __len__(self) -> int:
        return len(self._ring)


def parse_since(value: str | None, now: float, ttl: float = FAILURE_TTL_S) -> float:
    """A page's `since` (epoch seconds from the server that rendered it), clamped to the
    remembered window; a missing or bad value means "the whole window"."""
    try:
        t = float(value) if value is not None else now - ttl
    except ValueError:
        t = now - ttl
    if t != t:  # NaN
        t = now - ttl
    return min(max(t, now - ttl), now)


def seen_answer(host: str, intercepted: bool, failed: bool) -> dict[str, object]:
    return {"host": host, "intercepted": intercepted, "tls_failed": failed}


# ---- page pieces ---------------------------------------------------------------------------
def nonce() -> str:
    return secrets.token_urlsafe(18)


def csp(nonce_: str, connect: list[str], *, images: bool = False) -> str:
    """A strict policy: only our own nonce'd script and style, fetches to the named origins."""
    return ("default-src 'none'; "
            f"script-src 'nonce-{nonce_}'; style-src 'nonce-{nonce_}'; "
            f"connect-src {' '.join(connect) or chr(39) + 'none' + chr(39)}; "
            f"img-src {chr(39) + 'self' + chr(39) if images else chr(39) + 'none' + chr(39)}; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def security_headers(content_type: str, policy: str | None = None) -> dict[str, str]:
    h = {"content-type": content_type, "cache-control": "no-store", "x-content-type-options": "nosniff",
         "referrer-policy": "no-referrer", "x-frame-options": "DENY"}
    if policy:
        h["content-security-policy"] = policy
    return h


def json_script(data: object, element_id: str = "exifguard-data") -> str:
    """Data for the page's script, in a non-executed block (`</` cannot end it early)."""
    text = json.dumps(data, ensure_ascii=True).replace("</", "<\\/").replace("<!--", "<\\!--")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:56em;padding:0 1em;color:#1b1b1b}
h1{font-size:1.4em} h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #ddd}
.ok{color:#0a6b2d;font-weight:600} .bad{color:#a4161a;font-weight:600} .warn{color:#8a5a00;font-weight:600}
.muted{color:#666} code{background:#f2f2f2;padding:0 .25em;border-radius:3px} td.state{white-space:nowrap}
.box{border:1px solid #ccc;border-radius:6px;padding:.8em 1em;margin:.8em 0}
"""

#: Probes each row of `#probes` (rows carry data-host); `seen` answers whether exifguard saw
#: a failed handshake.  Writes data-state on each row: checking, protected, audit,
#: not-routed, untrusted; and data-done="1" on the table when every row is settled.
PROBE_SCRIPT = r"""
(function () {
  const cfg = JSON.parse(document.getElementById("exifguard-data").textContent);
  const LABEL = {"protected": "protected", "audit": "AUDIT mode: not cleaned",
                 "not-routed": "not routed", "untrusted": "certificate not trusted"};
  const CLS = {"protected": "ok", "audit": "warn", "not-routed": "bad", "untrusted": "bad"};
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  async function timed(url, opts, ms) {
    const ctl = new AbortController();
    const t = setTimeout(() => ctl.abort(), ms);
    try { return await fetch(url, Object.assign({signal: ctl.signal}, opts)); }
    finally { clearTimeout(t); }
  }
  async function direct(host) {
    try {
      const r = await timed("https://" + host + "/.well-known/exifguard.json",
                            {cache: "no-store", credentials: "omit", mode: "cors"}, cfg.timeout_ms);
      const j = await r.json();
      if (j && j.exifguard === true && j.host === host) { return j.protected === true ? "protected" : "audit"; }
    } catch (err) { /* told apart below */ }
    return null;
  }
  async function seen(host) {
    for (let i = 0; i < 4; i++) {
      await sleep(300 * (i + 1));
      try {
        const u = cfg.seen_url + "?host=" + encodeURIComponent(host) + "&since=" + encodeURIComponent(cfg.since);
        const r = await timed(u, {cache: "no-store", credentials: "omit"}, cfg.timeout_ms);
        const j = await r.json();
        if (j && j.tls_failed === true) { return "untrusted"; }
      } catch (err) { /* keep asking a little */ }
    }
    return "not-routed";
  }
  async function one(row) {
    const host = row.dataset.host;
    const cell = row.querySelector(".state");
    let state = await direct(host);
    if (state === null) { state = await seen(host); }
    row.dataset.state = state;
    cell.textContent = LABEL[state];
    cell.className = "state " + CLS[state];
  }
  const rows = Array.from(document.querySelectorAll("#probes tbody tr"));
  Promise.all(rows.map(one)).then(() => {
    const count = (s) => rows.filter((r) => r.dataset.state === s).length;
    const sum = document.getElementById("probe-summary");
    if (sum) {
      let text = count("protected") + " of " + rows.length + " services protected in this browser";
      for (const s of ["untrusted", "not-routed", "audit"]) {
        if (count(s)) { text += "; " + count(s) + " " + LABEL[s]; }
      }
      sum.textContent = text + ".";
      sum.className = count("protected") === rows.length ? "ok" : "bad";
    }
    document.getElementById("probes").dataset.done = "1";
  });
})();
"""


def probe_table(targets: list[ProbeTarget]) -> str:
    rows = "".join(f'<tr data-host="{e(t.host)}" data-state="checking"><td>{e(t.service)}</td>'
                   f'<td><code>{e(t.host)}</code></td><td class="state muted">checking…</td></tr>'
                   for t in targets)
    return ('<table id="probes"><thead><tr><th>service</th><th>probe host</th><th>in this browser</th>'
            f'</tr></thead><tbody>{rows}</tbody></table><p id="probe-summary" class="muted"></p>')


__all__ = ["CHECK_HOST", "check_page_host", "check_page_url", "FAILURE_SLOTS", "FAILURE_TTL_S", "JSON_PATH", "PROBE_SCRIPT", "ProbeTarget", "SAMPLE_PATH",
           "SEEN_PATH", "STYLE", "TEST_PATH", "TlsFailures", "WELL_KNOWN", "concrete_host", "csp",
           "json_script", "parse_since", "probe_table", "probe_targets", "security_headers", "seen_answer"]
