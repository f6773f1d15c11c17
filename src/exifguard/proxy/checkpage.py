"""Proof in the person's own browser: exifguard answers `/.well-known/exifguard*` itself.

On every host exifguard intercepts (the Exifguard addon's host table: a name it would
look up as one of its hosts), requests under these paths are answered here and are
**never forwarded**: the service is not contacted (`exifguard run` uses
connection_strategy=lazy, so no upstream connection exists until a request is sent on).

* `GET /.well-known/exifguard.json` -> `{"exifguard": true, "protected": ..., "host": ...,
  "version": ..., "mode": ...}`; `protected` is false only in audit mode (routed, but
  uploads are forwarded unchanged).  Readable cross-origin by pages on other intercepted
  hosts and by exifguard's own loopback status page (the Origin is echoed only for those,
  so an arbitrary web site cannot read it).
* `GET /.well-known/exifguard` -> the check page: "this browser reaches <host> through
  exifguard and trusts its certificate", a table probing one host per service (see
  `probe.py` for how protected / not routed / certificate not trusted are told apart),
  and a live test.
* `GET /.well-known/exifguard/seen?host=H&since=T` -> whether a TLS handshake for H
  failed on the browser's side since T (recorded by `tls_failed_client`, host names only,
  a small ring with a short time to live).
* `GET /.well-known/exifguard/sample.jpg` -> a small photo with GPS, camera and time
  metadata (the selftest's canary photo, with a marker made at start).
* `POST /.well-known/exifguard/test-upload` -> the live test.  The Exifguard addon runs
  first and inspects it like any upload (same carriers, engine, policy, log line and
  audit record, marked `selftest` so `exifguard report` leaves it out); then this addon
  answers with what was removed (carrier, tag names, categories: never values), checks
  independently (piexif) that what would have been sent has no GPS, no marker and the
  same length, or says that exifguard blocked it and why.

Issue 11's guarantees hold: the guard's hooks still refuse every request while exifguard
is not healthy (this addon never answers before them: it answers in `request`, and leaves
any response already set alone, except to explain a blocked test upload), and this addon
checks the guard's health itself, so a broken proxy never claims `protected`.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mitmproxy import ctx, http, tls

from .. import __version__
from . import probe
from .hosts import HostSet, normalise_host


TEST_UPLOAD_MAX = 2 * 1024 * 1024
EXIFGUARD_ADDON = "exifguard"
GUARD_ADDON = "exifguard_guard"
SAMPLE_NAME = "exifguard-sample.jpg"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def _in_namespace(path: str) -> bool:
    p = path.split("?", 1)[0]
    return p == probe.WELL_KNOWN or p == probe.JSON_PATH or p.startswith(probe.WELL_KNOWN + "/")


class CheckPage:
    """Answers /.well-known/exifguard* on intercepted hosts; see the module docstring."""

    name = "exifguard_checkpage"

    def __init__(self) -> None:
        self.failures = probe.TlsFailures()
        self.marker = "EXIFGUARD-CHECKPAGE-" + secrets.token_hex(6)
        self._sample: bytes | None = None

    # ---- what the other addons know ------------------------------------------------------
    @staticmethod
    def _addon(name: str) -> Any:
        try:
            return ctx.master.addons.get(name)
        except Exception:  # noqa: BLE001 - no master (imported outside mitmproxy)
            return None

    def _hosts(self) -> HostSet | None:
        eg = self._addon(EXIFGUARD_ADDON)
        hosts = getattr(eg, "hosts", None)
        return hosts if isinstance(hosts, HostSet) else None

    def _mode(self) -> str:
        eg = self._addon(EXIFGUARD_ADDON)
        mode = getattr(eg, "mode", None)
        return str(getattr(mode, "value", mode) or "unknown")

    def _unhealthy(self, flow: http.HTTPFlow) -> str | None:
        """Why exifguard is not fit to say "protected" now (None: it is)."""
        guard = self._addon(GUARD_ADDON)
        if self._addon(EXIFGUARD_ADDON) is None:
            return "exifguard's addon is not loaded in this proxy"
        if guard is None:
            return None  # loaded without the guard (tests, a custom script): the addon is there
        try:
            if not guard.healthy():
                return "; ".join(guard.faults()) or "the proxy is still starting"
            from .guard import DONE_KEY
            done = flow.metadata.get(DONE_KEY, set())
            for hook in ("requestheaders", "request"):
                missing = [m for m in guard.hooked.get(hook, ()) if m.startswith(EXIFGUARD_ADDON + ".")
                           and m not in done]
                if missing:
                    return f"{missing[0]} did not complete for this request"
        except Exception as exc:  # noqa: BLE001 - cannot tell: not healthy
            return f"the guard could not be asked ({type(exc).__name__})"
        return None

    # ---- TLS: remember failed handshakes (host names only) ---------------------------------
    def tls_failed_client(self, data: tls.TlsData) -> None:
        sni = getattr(data.conn, "sni", None)
        hosts = self._hosts()
        if not sni or hosts is None:
            return
        if hosts.lookup(str(sni)) is not None:
            self.failures.record(str(sni))

    # ---- requests ----------------------------------------------------------------------------
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        if req.method.upper() != "POST" or req.path.split("?", 1)[0] != probe.TEST_PATH:
            return
        watch = flow.metadata.get("exifguard")
        if watch is not None and hasattr(watch, "test_upload"):
            # audited as a test, so `exifguard report` leaves it out; answered in `request`
            watch.test_upload = True

    def request(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        if req.method.upper() == "CONNECT" or not _in_namespace(req.path):
            return
        hosts = self._hosts()
        host = normalise_host(req.pretty_host)
        if hosts is None or hosts.lookup(host) is None:
            return  # not an exifguard host: none of our business
        path = req.path.split("?", 1)[0]
        if path == probe.TEST_PATH and req.method.upper() == "POST":
            return self._test_upload(flow, host)
        if flow.response is not None or flow.error is not None or not flow.live:
            return  # already answered (e.g. the guard refused it): leave that answer
        why = self._unhealthy(flow)
        if why is not None:
            flow.response = http.Response.make(
                503, f"exifguard is not active in this proxy, so this request was refused and nothing "
                     f"was sent: {why}.\n", probe.security_headers("text/plain; charset=utf-8"))
            return
        if req.scheme != "https":
            # over plain HTTP nothing here would prove that the browser trusts exifguard's
            # certificate; answered (not forwarded) with where to look instead
            flow.response = http.Response.make(
                400, f"exifguard's check page is at https://{host}{probe.WELL_KNOWN}\n",
                probe.security_headers("text/plain; charset=utf-8"))
            return
        cors = self._cors(req, hosts)
        method = req.method.upper()
        if method == "OPTIONS":
            flow.response = http.Response.make(204, b"", {**probe.security_headers("text/plain"), **cors,
                                                           "access-control-allow-methods": "GET"})
        elif method not in ("GET", "HEAD"):
            flow.response = http.Response.make(405, "exifguard answers only GET here.\n",
                                               {**probe.security_headers("text/plain; charset=utf-8"),
                                                "allow": "GET"})
        elif path == probe.JSON_PATH:
            body = json.dumps(self.status(host)).encode()
            flow.response = http.Response.make(200, body, {**probe.security_headers("application/json"), **cors})
        elif path == probe.WELL_KNOWN:
            self._page(flow, host, hosts)
        elif path == probe.SEEN_PATH:
            self._seen(flow, hosts, cors)
        elif path == probe.SAMPLE_PATH:
            flow.response = http.Response.make(200, self.sample(), probe.security_headers("image/jpeg"))
        else:
            flow.response = http.Response.make(404, "no such exifguard page.\n",
                                               probe.security_headers("text/plain; charset=utf-8"))

    # ---- answers -------------------------------------------------------------------------------
    def status(self, host: str) -> dict[str, Any]:
        mode = self._mode()
        return {"exifguard": True, "protected": mode in ("strip", "block"), "host": host,
                "version": __version__, "mode": mode}

    def sample(self) -> bytes:
        if self._sample is None:
            from .selftest import canary_jpeg
            self._sample = canary_jpeg(self.marker)
        return self._sample

    @staticmethod
    def _cors(req: http.Request, hosts: HostSet) -> dict[str, str]:
        """Echo the Origin only for pages that are exifguard's own: another intercepted
        host's check page, or the loopback status page."""
        origin = req.headers.get("origin", "")
        try:
            u = urlsplit(origin)
            name = (u.hostname or "").lower()
        except ValueError:
            return {"vary": "Origin"}
        ok = (u.scheme == "https" and hosts.lookup(name) is not None) or \
             (u.scheme == "http" and name in LOOPBACK_NAMES)
        return {"access-control-allow-origin": origin, "vary": "Origin"} if ok else {"vary": "Origin"}

    def _seen(self, flow: http.HTTPFlow, hosts: HostSet, cors: dict[str, str]) -> None:
        q = parse_qs(urlsplit(flow.request.path).query)
        asked = normalise_host((q.get("host") or [""])[0])[:253]
        intercepted = bool(asked) and hosts.lookup(asked) is not None
        since = probe.parse_since((q.get("since") or [None])[0], time.time())
        failed = intercepted and self.failures.failed_since(asked, since)
        body = json.dumps(probe.seen_answer(asked if intercepted else "", intercepted, failed)).encode()
        flow.response = http.Response.make(200, body, {**probe.security_headers("application/json"), **cors})

    def _page(self, flow: http.HTTPFlow, host: str, hosts: HostSet) -> None:
        nonce = probe.nonce()
        targets = probe.probe_targets(hosts)
        connect = ["'self'", *dict.fromkeys(f"https://{t.host}" for t in targets)]
        body = render_check_page(host=host, mode=self._mode(), targets=targets, since=time.time(),
                                 nonce=nonce, sample_bytes=len(self.sample()),
                                 cert_install=cert_install_command())
        flow.response = http.Response.make(200, body.encode(), probe.security_headers(
            "text/html; charset=utf-8", probe.csp(nonce, connect, images=True)))

    def _test_upload(self, flow: http.HTTPFlow, host: str) -> None:
        """The live test: never forwarded, whatever happened before."""
        if flow.error is not None or not flow.live:
            return
        watch = flow.metadata.get("exifguard")
        result: dict[str, Any] = {"host": host, "mode": self._mode(), "removed": [], "summary": "",
                                  "verification": None}
        prior = flow.response
        if prior is not None:
            reason = getattr(watch, "refused", None) or prior.get_text(strict=False) or ""
            result.update(outcome="blocked", ok=self._mode() == "block", status=prior.status_code,
                          reason=str(reason).strip()[:500])
            flow.response = http.Response.make(prior.status_code, json.dumps(result).encode(),
                                               probe.security_headers("application/json"))
            return
        why = self._unhealthy(flow)
        if why is not None:
            result.update(outcome="refused", ok=False, status=503, reason=why)
            flow.response = http.Response.make(503, json.dumps(result).encode(),
                                               probe.security_headers("application/json"))
            return
        if watch is None:
            result.update(outcome="not-inspected", ok=False, status=200,
                          reason=f"exifguard checks uploads to {host} only when they come from an AI "
                                 "app's page; run the live test on that app's own host")
        else:
            result.update(self._verify(flow, watch))
        flow.response = http.Response.make(200, json.dumps(result).encode(),
                                           probe.security_headers("application/json"))

    def _verify(self, flow: http.HTTPFlow, watch: Any) -> dict[str, Any]:
        from ..engine.report import Removal
        from .logline import describe_removed
        from .selftest import exif_tag_names
        records = list(getattr(watch, "images", None) or [])
        removed: list[dict[str, Any]] = []
        removals: list[Removal] = []
        actions = []
        for r in records:
            actions.append(getattr(r, "action", None))
            for x in getattr(r, "removed", ()):
                removals.append(x)
                removed.append({"carrier": x.carrier, "tags": list(x.tags),
                                "categories": sorted(c.value for c in x.categories)})
        raw = flow.request.raw_content or b""
        image = None
        if len(raw) <= TEST_UPLOAD_MAX:
            image = first_jpeg_part(flow.request.headers.get("content-type", ""),
                                    flow.request.get_content(strict=False) or b"")
        sample = self.sample()
        before = exif_tag_names(sample)
        verification: dict[str, Any] = {"found": image is not None}
        if image is not None:
            after = exif_tag_names(image)
            verification.update(
                gps_left=any(t.startswith("GPS") for t in after),
                marker_left=self.marker.encode() in image,
                same_length=len(image) == len(sample),
                sent_bytes=len(sample), arrived_bytes=len(image),
                removed_tags=[t for t in before if t not in after], tags_left=after)
        clean = image is not None and not verification["gps_left"] and not verification["marker_left"]
        if "audit" in actions:
            outcome = "audit"
        elif "passed" in actions:
            outcome = "passed"
        elif records and clean:
            outcome = "cleaned"
        else:
            outcome = "failed"
        return {"outcome": outcome, "ok": outcome == "cleaned" and bool(verification.get("same_length")),
                "status": 200, "removed": removed, "summary": describe_removed(removals),
                "verification": verification}


def first_jpeg_part(content_type: str, body: bytes) -> bytes | None:
    """The first multipart part whose bytes start like a JPEG, exactly as sent (the carrier
    layer's own multipart parser: mitmproxy's `multipart_form` rejoins a part's lines
    without their line breaks, and a JPEG holds CR/LF bytes)."""
    from ..carriers import multipart
    boundary = multipart.boundary_from_content_type(content_type)
    if not boundary:
        return None
    try:
        parts = multipart.parse(body, boundary).parts
    except multipart.MultipartError:
        return None
    for p in parts:
        value = body[p.body_start:p.body_end]
        if value.startswith(b"\xff\xd8\xff"):
            return value
    return None


# ---- the page -------------------------------------------------------------------------------
def cert_install_command() -> str:
    """The command that installs this proxy's CA, spelled to run as shown: the console
    prefix of this checkout or install, and --certs when mitmproxy's confdir is not the
    default certs folder."""
    try:
        import shlex
        from pathlib import Path

        from ..cli.locations import command_prefix, default_certs_dir  # pure module: no cycle
        cmd = f"{command_prefix()} cert install"
        confdir = Path(str(ctx.options.confdir)).expanduser().resolve()
        if confdir != default_certs_dir().expanduser().resolve():
            cmd += f" --certs {shlex.quote(str(confdir))}"
        return cmd
    except Exception:  # noqa: BLE001 - the page matters more than the exact spelling
        return "exifguard cert install"


LIVE_SCRIPT = r"""
(function () {
  const cfg = JSON.parse(document.getElementById("exifguard-data").textContent);
  const box = document.getElementById("live");
  const out = document.getElementById("live-result");
  function line(text, cls) {
    const p = document.createElement("p");
    p.textContent = text;
    if (cls) { p.className = cls; }
    out.appendChild(p);
  }
  async function run() {
    box.dataset.state = "running";
    out.textContent = "";
    try {
      const pic = await fetch(cfg.sample_url, {cache: "no-store"});
      const blob = await pic.blob();
      const form = new FormData();
      form.append("file", new File([blob], cfg.sample_name, {type: "image/jpeg"}));
      const r = await fetch(cfg.test_url, {method: "POST", body: form, cache: "no-store"});
      const j = await r.json();
      const v = j.verification || {};
      if (j.outcome === "cleaned") {
        line("exifguard removed: " + (j.summary || "(nothing named)"), "ok");
        for (const x of j.removed) {
          line("  " + x.carrier + ": " + (x.tags.join(", ") || "(whole structure)") +
               (x.categories.length ? "  [" + x.categories.join(", ") + "]" : ""));
        }
        line("Checked independently in what would have been sent: GPS " + (v.gps_left ? "STILL THERE" : "gone") +
             ", marker " + (v.marker_left ? "STILL THERE" : "gone") + ", size " + v.sent_bytes + " -> " +
             v.arrived_bytes + " bytes" + (v.same_length ? " (same length)" : ""), v.gps_left ? "bad" : "ok");
      } else if (j.outcome === "blocked") {
        line("exifguard BLOCKED the test upload (HTTP " + j.status + "): " + j.reason,
             j.ok ? "warn" : "bad");
      } else if (j.outcome === "audit") {
        line("AUDIT mode: exifguard logged what it would remove (" + (j.summary || "nothing") +
             ") but sent the photo UNCHANGED.", "bad");
      } else {
        line("The live test did not show a cleaned photo (" + j.outcome + "): " + (j.reason || "GPS " +
             (v.gps_left ? "still there" : "?")), "bad");
      }
      box.dataset.state = j.outcome;
    } catch (err) {
      line("The live test could not run: " + err, "bad");
      box.dataset.state = "error";
    }
  }
  document.getElementById("live-run").addEventListener("click", run);
  run();
})();
"""


def render_check_page(*, host: str, mode: str, targets: list[probe.ProbeTarget], since: float, nonce: str,
                      sample_bytes: int, cert_install: str = "exifguard cert install") -> str:
    e = probe.e
    data = {"since": since, "seen_url": probe.SEEN_PATH, "timeout_ms": 8000, "sample_url": probe.SAMPLE_PATH,
            "test_url": probe.TEST_PATH, "sample_name": SAMPLE_NAME}
    if mode == "audit":
        mode_line = ('<p class="bad">exifguard runs in <b>audit</b> mode: it logs what it would remove '
                     'and sends uploads UNCHANGED.</p>')
    elif mode == "block":
        mode_line = '<p class="warn">exifguard runs in <b>block</b> mode: every image upload is refused.</p>'
    else:
        mode_line = '<p>Mode: <b>strip</b> — photos are cleaned in flight before they leave this computer.</p>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">
<title>exifguard check: {e(host)}</title><style nonce="{nonce}">{probe.STYLE}</style></head>
<body>
<h1 id="verdict" class="ok">This browser reaches <code>{e(host)}</code> through exifguard and trusts its certificate.</h1>
<p class="muted">This page was made by exifguard {e(__version__)} on this computer; {e(host)} itself was not contacted.</p>
{mode_line}
<h2>Every AI service, from this browser</h2>
<p class="muted">Each row asks one host of the service for exifguard's answer.
<b>not routed</b>: this browser sends that host elsewhere (set the proxy or PAC for it);
<b>certificate not trusted</b>: it reaches exifguard but refuses its certificate (install it:
<code>{e(cert_install)}</code>).</p>
{probe.probe_table(targets)}
<h2>Live test</h2>
<div id="live" class="box" data-state="idle">
<p>This page uploads a sample photo ({sample_bytes} bytes, with GPS coordinates, camera make and model,
a serial number and capture times) to <code>{e(host)}</code>. exifguard cleans it like any upload and answers
itself: nothing is sent to {e(host)}.</p>
<img src="{e(probe.SAMPLE_PATH)}" alt="the sample photo" width="64" height="48">
<p><button id="live-run" type="button">Run the live test again</button></p>
<div id="live-result" aria-live="polite"></div>
</div>
{probe.json_script(data)}
<script nonce="{nonce}">{probe.PROBE_SCRIPT}</script>
<script nonce="{nonce}">{LIVE_SCRIPT}</script>
</body></html>
"""


__all__ = ["CheckPage", "render_check_page"]
