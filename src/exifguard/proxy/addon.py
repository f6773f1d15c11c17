"""The mitmproxy addons: scrub image uploads to AI services, stream every response.

* `Exifguard` — options, host classification, the scrub in a worker thread, the
  policy, the event-log line and audit record per image, `exifguard.stats`, and the
  loopback-only client check.
* `StreamResponses` — `flow.response.stream = True` for every flow, so chat answers
  (server-sent events) are never held back by the proxy.

`make_addons()` returns both; `mitmdump -s` scripts use it.

Why the order of checks matters:
  * `requestheaders` is the last point where buffering can be guaranteed: a watched
    upload that mitmproxy already decided to stream is killed, never forwarded raw;
  * the heavy work (carrier parsing + engine, then the policy decision, each image's
    log line and audit record with the output's sha256) runs in `asyncio.to_thread` so
    other flows keep moving while a 12 MP photo is cleaned; the event loop only applies
    the decision and emits what was prepared, if the flow is still going ahead;
  * every failure path fails closed unless the person chose exifguard_on_error=pass.

Bounded work (issue 11): the body's Content-Encoding is decoded by `decode` from
`raw_content`, streamed and capped at the inspection limit (`request.content` would
inflate a 3 GiB gzip bomb whole); `workers.InspectionPool` runs at most
exifguard_workers inspections at once with at most exifguard_queue waiting (beyond:
503 with Retry-After), gives each a deadline (exifguard_inspect_timeout, also passed to
the carrier layer) and hands memory back to the system after large inspections.

Which refusals the person's exifguard_on_error=pass can turn into forwarding: those about
the *upload* (it cannot be decoded, it inflates past the limit, an internal error while
checking it), as for images the engine cannot clean.  Not those about exifguard's own
*capacity* (busy, deadline passed): they say nothing about the upload, a retry will
probably succeed, and letting load decide what leaves unchecked would let anything that
makes exifguard slow (a large body, a burst) carry metadata out.  Audit mode forwards
in every case: it never changes or refuses anything by design.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import logging
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence  # mitmproxy option typespecs want typing.Sequence

from mitmproxy import command, connection, ctx, exceptions, http
from mitmproxy.utils import human

from ..carriers import CarrierOptions, UploadTracker
from . import decode as codings
from . import policy
from ..engine.report import Removal
from .audit import AuditLog, ImageRecord, strip_query
from .hosts import HostSet, Match, normalise_host
from .inspect import Refused, Settings, Upload, inspect_upload, refused_for
from .logline import escape
from .policy import Action, Mode, OnError, Outcome
from .workers import EXPRESS_SLOTS, Busy, InspectionPool, InspectionTimeout, WorkerFailed, tune_malloc

log = logging.getLogger("exifguard")

DEFAULT_INSPECT_LIMIT = CarrierOptions().max_body_bytes
DEFAULT_INSPECT_TIMEOUT = 60
DEFAULT_QUEUE = 64
RETRY_AFTER = "5"
REPEAT_WINDOW = 60.0


class RepeatedErrors:
    """Log the first of identical errors, then at most one line per `window` seconds.

    Why: a broken audit log (disk full, file removed) or a recurring internal error fails
    the same way for every image; one clear line, then a count, tells the person what is
    wrong without burying everything else in the log.
    """

    def __init__(self, window: float = REPEAT_WINDOW, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 256) -> None:
        self.window, self.clock, self.max_keys = window, clock, max_keys
        self._seen: OrderedDict[Any, tuple[float, int]] = OrderedDict()

    def check(self, key: Any) -> tuple[bool, int]:
        """(log this one now?, how many identical ones were held back since the last line)."""
        now = self.clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.window:
            self._seen[key] = (last[0], last[1] + 1)
            return False, 0
        held = last[1] if last is not None else 0
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return True, held

    @staticmethod
    def suffix(held: int) -> str:
        return f" (the same error {held} more time{'s' if held != 1 else ''} since it was last logged)" \
            if held else ""


_repeats = RepeatedErrors()


def _log_internal_error(what: str, exc: BaseException, repeats: RepeatedErrors | None = None) -> None:
    """Log an unexpected exception by type and place only, unless values may be logged.

    Why: an exception's message (and a traceback's last line) can quote the bytes it
    choked on, which may be a piece of the upload's metadata, and exifguard's log must
    not hold private values unless the person opted in with exifguard_log_values.  The
    type and the line that raised it are enough to file a bug.
    """
    try:
        with_values = bool(ctx.options.exifguard_log_values)
    except Exception:  # noqa: BLE001 - no options loaded: the private default
        with_values = False
    if with_values:
        log.error("exifguard: internal error while %s", what, exc_info=exc)
        return
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno} in {frames[-1].name}" \
        if frames else "unknown place"
    now, held = (repeats or _repeats).check(("internal", what, type(exc).__name__, where))
    if not now:
        return
    log.error("exifguard: internal error while %s: %s at %s (message hidden, it may quote the "
              "upload; exifguard_log_values=true shows it)%s", what, type(exc).__name__, where,
              RepeatedErrors.suffix(held))

SELFTEST_HEADER = "x-exifguard-selftest"
SELFTEST_SINK_HEADER = "x-exifguard-selftest-sink"
META = "exifguard"

RewriteFn = Callable[..., Any]


def parse_hosts(extra: Sequence[str], remove: Sequence[str]) -> HostSet:
    """Option values -> HostSet (raises ValueError naming the bad entry)."""
    return HostSet.build(extra=[h for h in extra if h.strip()], remove=[h for h in remove if h.strip()])


def parse_limit(value: str) -> int:
    """exifguard_inspect_limit -> bytes ("256m", "1g", "1048576"); raises ValueError."""
    try:
        n = human.parse_size(value.strip().lower())
    except (ValueError, AttributeError):
        n = None
    if n is None or n < 1:
        raise ValueError(f"exifguard_inspect_limit must be a size such as 256m or 1g (got {value!r})")
    return n


def _content_length(headers: http.Headers) -> int | None:
    """The declared body size, or None when absent or not one clean number."""
    values = headers.get_all("content-length")
    if not values or len(set(v.strip() for v in values)) != 1:
        return None
    v = values[0].strip()
    return int(v) if v.isdigit() else None


def is_loopback(peer: str) -> bool:
    try:
        addr = ipaddress.ip_address(peer.rsplit("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


@dataclass
class Stats:
    requests_seen: int = 0
    uploads_checked: int = 0
    stripped: int = 0
    blocked: int = 0
    passed: int = 0
    audit: int = 0
    killed: int = 0
    rejected_clients: int = 0
    refused_busy: int = 0
    timed_out: int = 0
    refused_undecodable: int = 0
    refused_too_large: int = 0
    internal_errors: int = 0

    def count(self, action: Action) -> None:
        setattr(self, action.value, getattr(self, action.value) + 1)

    def text(self) -> str:
        return (f"exifguard since start: {self.requests_seen} requests seen, "
                f"{self.uploads_checked} uploads checked; images stripped {self.stripped}, "
                f"blocked {self.blocked}, passed {self.passed}, audited {self.audit}; "
                f"flows killed {self.killed}, non-loopback clients refused {self.rejected_clients}; "
                f"uploads refused: busy {self.refused_busy}, inspection timed out {self.timed_out}, "
                f"undecodable {self.refused_undecodable}, over the inspection limit {self.refused_too_large}")


@dataclass(frozen=True)
class SeenImage:
    """One image's outcome as the addons after this one may see it: names and categories
    only.  Not the audit record: flow.metadata is shown by mitmproxy's console and kept in
    saved flows, so it holds no file name, no metadata value and no image bytes."""

    action: str
    format: str | None
    error: str | None
    removed: tuple[Removal, ...] = ()
    """What was neutralised, with `values` left out."""

    @classmethod
    def of(cls, record: ImageRecord) -> "SeenImage":
        r = record.result
        removed = tuple(dataclasses.replace(x, values=()) for x in r.removed) if r is not None else ()
        return cls(record.action, record.format, record.error, removed)


@dataclass
class _Watch:
    match: Match
    host: str
    path: str
    method: str
    selftest_port: int | None = None
    test_upload: bool = False
    """The check page's live test (answered by exifguard itself, never forwarded): audited as
    a test, like selftest uploads, so `exifguard report` leaves it out."""
    images: list[SeenImage] = field(default_factory=list)
    """What was found and done, image by image, for the addons after this one."""
    refused: str | None = None
    """Why exifguard answered this upload itself with a refusal (None: it was not refused).
    Addons after this one (the notifier, the check page) read it with `images`."""
    large: bool = False
    """Its body was large enough that memory is trimmed once the flow ends."""


@dataclass(frozen=True)
class _Report:
    """One image's outcome, prepared in the worker thread."""
    action: Action
    line: str                   # the event-log line
    record: ImageRecord
    audit_line: bytes | None    # `record` encoded for the audit log open at the time


@dataclass(frozen=True)
class _Checked:
    """What the event loop needs once the worker thread is done with an upload."""
    decision: policy.Decision
    reports: tuple[_Report, ...]
    audit: AuditLog | None
    raw_body: bytes | None = None
    """The cleaned body encoded with the request's Content-Encoding (None: forward it as it is)."""
    blocked_line: str | None = None
    blocked_reason: str | None = None
    warning_line: str | None = None


class Exifguard:
    """Scrub images in requests to AI hosts; see the module docstring."""

    name = "exifguard"

    def __init__(self, rewrite: RewriteFn | None = None) -> None:
        self._rewrite = rewrite
        self.hosts = HostSet.build()
        self.mode = Mode.STRIP
        self.on_error = OnError.BLOCK
        self.audit: AuditLog | None = None
        self.stats = Stats()
        # One tracker for the proxy's lifetime: a continuation chunk of a resumable upload
        # is judged by what its first chunk was (an image: fail closed; anything else: pass).
        self.uploads = UploadTracker()
        self.inspect_limit = DEFAULT_INSPECT_LIMIT
        self.inspect_timeout: float = DEFAULT_INSPECT_TIMEOUT
        # small bodies (chat messages) have an express lane: they never wait behind photos
        self.pool: InspectionPool[Any] = InspectionPool(None, DEFAULT_QUEUE, express=EXPRESS_SLOTS)
        self.repeats = RepeatedErrors()

    # ---- options -------------------------------------------------------------------
    def load(self, loader: Any) -> None:
        tune_malloc()  # process-wide, once: large bodies go back to the system when freed
        loader.add_option("exifguard_hosts", Sequence[str], [],
                          "Extra hosts whose uploads exifguard cleans (example.com or *.example.com). "
                          "Add them to allow_hosts too (exifguard run does this).")
        loader.add_option("exifguard_hosts_remove", Sequence[str], [],
                          "Hosts to remove from exifguard's default AI host list.")
        loader.add_option("exifguard_mode", str, "strip",
                          "strip: remove metadata from uploaded images; audit: log what would be "
                          "removed and forward unchanged; block: refuse every image upload.",
                          choices=[m.value for m in Mode])
        loader.add_option("exifguard_on_error", str, "block",
                          "When an image cannot be cleaned: block (answer 422, nothing is sent) or "
                          "pass (forward it unchanged and log a warning).",
                          choices=[o.value for o in OnError])
        loader.add_option("exifguard_audit_log", str, "",
                          "Path of the JSON Lines audit log (one record per image, mode 0600); "
                          "empty: no audit log.")
        loader.add_option("exifguard_log_values", bool, False,
                          "Include metadata values and original file names in the event log and "
                          "audit log (private data; off by default).")
        loader.add_option("exifguard_rename_files", bool, False,
                          "Replace multipart file names (which often encode capture times) with a "
                          "neutral name.")
        loader.add_option("exifguard_keep_icc", bool, True,
                          "Keep ICC colour profiles (they render colours; they can name a device).")
        loader.add_option("exifguard_allow_remote", bool, False,
                          "Accept proxy clients from non-loopback addresses (default: refuse them).")
        loader.add_option("exifguard_selftest_token", str, "",
                          "Secret set by `exifguard run` so `exifguard selftest` can route one "
                          "request to a local sink; empty disables the selftest route.")
        loader.add_option("exifguard_inspect_limit", str, str(DEFAULT_INSPECT_LIMIT),
                          "Largest upload body exifguard inspects, after undoing its Content-Encoding "
                          "(bytes, or with a k/m/g suffix). A body that inflates past it is refused "
                          "after at most this many inflated bytes; one whose Content-Length exceeds "
                          "it is refused before it is buffered.")
        loader.add_option("exifguard_inspect_timeout", int, DEFAULT_INSPECT_TIMEOUT,
                          "Seconds one upload's inspection may take (and may wait for a free worker) "
                          "before the upload is refused with 503; nothing is sent.")
        loader.add_option("exifguard_workers", int, 0,
                          "Uploads inspected at the same time (0: two per CPU core). Bounds memory.")
        loader.add_option("exifguard_queue", int, DEFAULT_QUEUE,
                          "Uploads that may wait for a worker; more are refused with 503 and "
                          "Retry-After (nothing is sent).")
        loader.add_option("exifguard_express", int, EXPRESS_SLOTS,
                          "Extra inspection slots for small bodies (at most 256 KiB: chat messages, "
                          "API calls, small images), so they never wait behind large photos; "
                          "0 turns this express lane off.")

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        try:
            if "exifguard_hosts" in updated or "exifguard_hosts_remove" in updated:
                self.hosts = parse_hosts(opts.exifguard_hosts, opts.exifguard_hosts_remove)
            if "exifguard_mode" in updated:
                self.mode = policy.parse_mode(opts.exifguard_mode)
            if "exifguard_on_error" in updated:
                self.on_error = policy.parse_on_error(opts.exifguard_on_error)
            if "exifguard_inspect_limit" in updated:
                self.inspect_limit = parse_limit(opts.exifguard_inspect_limit)
            if "exifguard_inspect_timeout" in updated:
                if opts.exifguard_inspect_timeout < 1:
                    raise ValueError(f"exifguard_inspect_timeout must be at least 1 second "
                                     f"(got {opts.exifguard_inspect_timeout})")
                self.inspect_timeout = opts.exifguard_inspect_timeout
            if "exifguard_workers" in updated or "exifguard_queue" in updated:
                if opts.exifguard_workers < 0:
                    raise ValueError(f"exifguard_workers must be 0 (automatic) or more "
                                     f"(got {opts.exifguard_workers})")
                if opts.exifguard_queue < 0:
                    raise ValueError(f"exifguard_queue must be 0 or more (got {opts.exifguard_queue})")
                self.pool.resize(opts.exifguard_workers or None, opts.exifguard_queue)
            if "exifguard_express" in updated:
                if opts.exifguard_express < 0:
                    raise ValueError(f"exifguard_express must be 0 or more (got {opts.exifguard_express})")
                self.pool.set_express(opts.exifguard_express)
        except ValueError as exc:
            raise exceptions.OptionsError(str(exc)) from exc
        if "stream_large_bodies" in updated and getattr(opts, "stream_large_bodies", None):
            raise exceptions.OptionsError(
                "exifguard cannot check streamed request bodies: unset stream_large_bodies "
                "(use body_size_limit to cap memory instead)")
        if "exifguard_audit_log" in updated or "exifguard_log_values" in updated:
            if self.audit is not None:
                self.audit.close()
                self.audit = None
            if opts.exifguard_audit_log:
                try:
                    self.audit = AuditLog(opts.exifguard_audit_log, with_values=opts.exifguard_log_values)
                except OSError as exc:
                    raise exceptions.OptionsError(
                        f"cannot open exifguard audit log {opts.exifguard_audit_log}: {exc.strerror}") from exc

    def done(self) -> None:
        if self.audit is not None:
            self.audit.close()
            self.audit = None
        self.pool.close()

    # ---- connections -----------------------------------------------------------------
    def client_connected(self, client: connection.Client) -> None:
        if ctx.options.exifguard_allow_remote:
            return
        peer = client.peername[0] if client.peername else ""
        if not is_loopback(str(peer)):
            self.stats.rejected_clients += 1
            log.warning("exifguard: refused proxy client %s (not loopback; set "
                        "exifguard_allow_remote to allow)", escape(peer, 60))
            client.error = "exifguard accepts only loopback clients"

    # ---- requests --------------------------------------------------------------------
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        try:
            self._requestheaders(flow)
        except Exception as exc:  # noqa: BLE001 - mitmproxy would log it and forward the flow
            # We do not know whether this is an upload we must clean: fail closed.
            _log_internal_error("classifying a request", exc, self.repeats)
            if self.mode is Mode.AUDIT or self.on_error is OnError.PASS:
                return
            self.stats.killed += 1
            log.error("exifguard: killed a request after an internal error (%s); nothing was sent",
                      type(exc).__name__)
            flow.kill()

    def _requestheaders(self, flow: http.HTTPFlow) -> None:
        self.stats.requests_seen += 1
        req = flow.request
        if req.method.upper() == "OPTIONS":  # CORS preflight: never touched
            return
        host = req.pretty_host
        match = self.hosts.classify(host, req.headers.get("origin"), req.headers.get("referer"))
        if match is None:
            return
        watch = _Watch(match, normalise_host(host), req.path, req.method.upper())
        token = ctx.options.exifguard_selftest_token
        if token and SELFTEST_HEADER in req.headers:
            if hmac.compare_digest(req.headers[SELFTEST_HEADER].encode(), token.encode()):
                try:
                    watch.selftest_port = int(req.headers.get(SELFTEST_SINK_HEADER, ""))
                except ValueError:
                    watch.selftest_port = None
            del req.headers[SELFTEST_HEADER]
            req.headers.pop(SELFTEST_SINK_HEADER, None)
        flow.metadata[META] = watch
        if req.stream:
            self.stats.killed += 1
            watch.refused = "mitmproxy was about to stream the upload unchecked"
            log.error("exifguard: killed upload to %s: mitmproxy was about to stream its body "
                      "unchecked (stream_large_bodies); nothing was sent", escape(watch.host))
            flow.kill()
            return
        req.stream = False
        declared = _content_length(req.headers)
        if declared is not None and declared > self.inspect_limit and self._refuses(strict=False):
            # mitmproxy would buffer the whole body before the `request` hook, and a response
            # set here is only sent after that: closing the connection is the only way to
            # refuse it unbuffered.  (`exifguard run` also sets body_size_limit, so mitmproxy
            # itself answers 413 before this hook for such bodies.)
            self.stats.refused_too_large += 1
            self.stats.killed += 1
            watch.refused = (f"the upload ({declared} bytes) is over exifguard's inspection limit "
                             f"({self.inspect_limit} bytes)")
            log.warning("exifguard: BLOCKED upload to %s: its Content-Length (%d bytes) is over "
                        "exifguard's inspection limit (%d bytes, exifguard_inspect_limit); connection "
                        "closed before the body was read, nothing was sent",
                        escape(watch.host), declared, self.inspect_limit)
            flow.kill()

    async def request(self, flow: http.HTTPFlow) -> None:
        watch = flow.metadata.get(META)
        if not isinstance(watch, _Watch) or flow.response or flow.error or not flow.live:
            return
        req = flow.request
        if req.raw_content is None:
            self.stats.killed += 1
            log.error("exifguard: upload to %s%s was streamed, not buffered: it may have leaked "
                      "metadata; connection killed", escape(watch.host), escape(strip_query(watch.path)))
            flow.kill()
            return
        if req.raw_content:
            try:
                await self._scrub(flow, watch)
            except Exception as exc:  # noqa: BLE001 - mitmproxy would log it and forward the original
                _log_internal_error("applying the policy", exc, self.repeats)
                if flow.live and flow.response is None:
                    self._respond_error(flow, watch, f"internal error while checking the upload "
                                                     f"({type(exc).__name__})")
                return
        if watch.selftest_port and flow.live and flow.response is None:
            # `exifguard selftest`: deliver to its local sink instead of the real service.
            req.scheme, req.host, req.port = "http", "127.0.0.1", watch.selftest_port

    def _carrier_options(self) -> Any:
        from ..engine.report import ScrubOptions
        scrub = ScrubOptions(keep_icc=ctx.options.exifguard_keep_icc,
                             collect_values=ctx.options.exifguard_log_values)
        return CarrierOptions(scrub=scrub, rename_files=ctx.options.exifguard_rename_files,
                              uploads=self.uploads)

    def _rewrite_fn(self) -> RewriteFn:
        if self._rewrite is None:
            from ..carriers import rewrite_request
            self._rewrite = rewrite_request
        return self._rewrite

    async def _scrub(self, flow: http.HTTPFlow, watch: _Watch) -> None:
        req = flow.request
        self.stats.uploads_checked += 1
        raw = req.raw_content or b""
        encoding = ", ".join(req.headers.get_all("content-encoding"))
        try:
            codings.parse_codings(encoding)  # an unknown coding is refused without queueing
        except codings.UnsupportedEncoding as exc:
            return self._cannot_inspect(flow, watch, refused_for(exc))
        watch.large = len(raw) >= self.pool.large_bytes
        try:
            rewrite = self._rewrite_fn()
            options = self._carrier_options()
            headers = list(req.headers.items(multi=True))
            log_values = bool(ctx.options.exifguard_log_values)
            method, url, limit = req.method, req.pretty_url, self.inspect_limit

            def job(deadline: float) -> tuple[Any, Any]:
                return self._check(rewrite, method, url, headers, raw, encoding, limit,
                                   dataclasses.replace(options, deadline=deadline, max_body_bytes=limit),
                                   flow.id, watch, log_values)

            rw, checked = await self.pool.run(job, size=len(raw), timeout=self.inspect_timeout)
        except Busy as exc:
            return self._cannot_inspect(flow, watch, Refused(
                f"exifguard is busy ({exc}); try again in a moment", 503, strict=True,
                counter="refused_busy", headers=(("retry-after", RETRY_AFTER),)))
        except InspectionTimeout as exc:
            return self._cannot_inspect(flow, watch, Refused(
                f"{exc} (exifguard_inspect_timeout); try again, or send a smaller upload", 503, strict=True,
                counter="timed_out", headers=(("retry-after", RETRY_AFTER),)))
        except WorkerFailed as exc:
            _log_internal_error("checking an upload (the worker thread ended)", exc.exc, self.repeats)
            return self._respond_error(flow, watch, f"internal error while checking the upload "
                                                    f"({type(exc.exc).__name__})")
        except Exception as exc:  # noqa: BLE001 - any failure here must fail closed
            _log_internal_error("checking an upload", exc, self.repeats)
            return self._respond_error(flow, watch, f"internal error while checking the upload "
                                                    f"({type(exc).__name__})")
        if isinstance(checked, Refused):
            return self._cannot_inspect(flow, watch, checked)
        if checked is None:  # no image, nothing blocking
            return
        decision = checked.decision
        if not flow.live or flow.response is not None:
            return
        watch.images = [SeenImage.of(r.record) for r in checked.reports]
        if decision.outcome is Outcome.RESPOND:
            flow.response = http.Response.make(decision.status or 403, decision.text or "",
                                               {"content-type": "text/plain; charset=utf-8"})
            watch.refused = _refusal_reason(checked)
        elif decision.outcome is Outcome.FORWARD_CLEANED:
            if checked.raw_body is not None:
                # set raw_content ourselves: `request.content = ...` would re-encode with
                # mitmproxy's codecs, which know neither stacked codings nor x-gzip (and drop
                # the header when they fail)
                req.raw_content = checked.raw_body
                if "transfer-encoding" not in req.headers:
                    req.headers["content-length"] = str(len(checked.raw_body))
            for k, v in rw.set_headers.items():
                req.headers[k] = v
        if checked.warning_line:
            log.warning(checked.warning_line)
        if checked.blocked_line:
            log.warning(checked.blocked_line)
        for report in checked.reports:
            self._report(report, checked.audit)

    def _check(self, rewrite: RewriteFn, method: str, url: str, headers: list[tuple[str, str]], raw: bytes,
               encoding: str, limit: int, options: Any, request_id: str, watch: _Watch,
               log_values: bool) -> tuple[Any, Any]:
        """Worker thread: the shared inspection (proxy/inspect.py), then the audit lines.

        Returns (rewrite, checked): checked is None when there is nothing to decide, a
        `Refused` when the body does not decode within the limit, or a `_Checked`
        (decision, log lines, audit lines with the sha256 of each output, the cleaned body
        encoded as it came).  Exceptions propagate: the caller fails closed on them.
        Nothing here touches the flow.
        """
        upload = Upload(method=method, url=url, host=watch.host, path=watch.path, headers=headers, raw=raw,
                        encoding=encoding, request_id=request_id, selftest=watch.selftest_port is not None or watch.test_upload)
        settings = Settings(mode=self.mode, on_error=self.on_error, limit=limit, log_values=log_values)
        result = inspect_upload(upload, options, settings, rewrite)
        if isinstance(result, Refused):
            return None, result
        if result.decision is None:
            return result.rewrite, None
        audit = self.audit
        reports = []
        for r in result.reports:
            audit_line = None
            if audit is not None:
                try:
                    audit_line = audit.encode(r.record)
                except (OSError, ValueError):
                    audit_line = None  # encoded again on the event loop, which logs the failure
            reports.append(_Report(r.action, r.line, r.record, audit_line))
        return result.rewrite, _Checked(result.decision, tuple(reports), audit, result.raw_body,
                                        result.blocked_line, result.blocked_reason, result.warning_line)

    def _report(self, report: _Report, audit: AuditLog | None) -> None:
        """Event loop: count, log the prepared line, append the prepared audit record."""
        self.stats.count(report.action)
        if report.action in (Action.BLOCKED, Action.PASSED):
            log.warning(report.line)
        else:
            log.info(report.line)
        if self.audit is not None:
            try:
                # prepared for the audit log open at the time; re-encoded if it was swapped since
                line = report.audit_line if self.audit is audit and report.audit_line is not None \
                    else self.audit.encode(report.record)
                self.audit.append(line)
            except (OSError, ValueError) as exc:
                self._audit_failed(exc)

    def _audit_failed(self, exc: BaseException) -> None:
        """One clear line per kind of audit-log failure, then a count (see RepeatedErrors)."""
        errno_ = getattr(exc, "errno", None)
        now, held = self.repeats.check(("audit", type(exc).__name__, errno_))
        if not now:
            return
        path = self.audit.path if self.audit is not None else "(closed)"
        why = getattr(exc, "strerror", None) or str(exc)
        log.error("exifguard: could not write the audit log %s: %s; uploads are still cleaned or "
                  "blocked as usual, but not recorded there%s",
                  escape(str(path), 200), escape(str(why), 200), RepeatedErrors.suffix(held))

    def _refuses(self, *, strict: bool) -> bool:
        """Would an upload we cannot inspect be refused (policy.decide with a blocker)?"""
        on_error = OnError.BLOCK if strict else self.on_error
        return policy.decide(self.mode, on_error, (), ("?",)).outcome is Outcome.RESPOND

    def _cannot_inspect(self, flow: http.HTTPFlow, watch: _Watch, why: Refused) -> None:
        """The upload was not inspected: refuse it, or forward it where the person chose so.

        Follows `policy.decide` for a request with a blocker and no images (audit mode
        forwards; block mode refuses; strip refuses unless exifguard_on_error=pass), except
        that `strict` refusals ignore on_error=pass (see the module docstring).
        """
        setattr(self.stats, why.counter, getattr(self.stats, why.counter) + 1)
        if not flow.live or flow.response is not None:
            return
        on_error = OnError.BLOCK if why.strict else self.on_error
        decision = policy.decide(self.mode, on_error, (), (why.reason,))
        if decision.outcome is not Outcome.RESPOND:
            log.warning("exifguard: WARNING forwarded upload to %s unchecked: %s",
                        escape(watch.host), escape(why.reason))
            return
        if why.counter == "refused_busy":
            # an overload refuses many uploads in a row: one line, then a count
            now, held = self.repeats.check(("busy",))
            if now:
                log.warning("exifguard: BLOCKED upload to %s: %s%s", escape(watch.host), escape(why.reason),
                            f" ({held} more upload{'s' if held != 1 else ''} refused as busy since the "
                            f"last such line)" if held else "")
        else:
            log.warning("exifguard: BLOCKED upload to %s: %s", escape(watch.host), escape(why.reason))
        status = why.status or decision.status or policy.ERROR_STATUS
        watch.refused = why.reason
        flow.response = http.Response.make(status, decision.text or policy.block_text(why.reason),
                                           {"content-type": "text/plain; charset=utf-8", **dict(why.headers)})

    def _respond_error(self, flow: http.HTTPFlow, watch: _Watch, reason: str) -> None:
        """An internal error while checking: refused unless the person chose to pass."""
        self._cannot_inspect(flow, watch, Refused(reason, counter="internal_errors"))

    # ---- flow end: give memory back after large uploads ---------------------------------
    def response(self, flow: http.HTTPFlow) -> None:
        self._flow_ended(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._flow_ended(flow)

    def _flow_ended(self, flow: http.HTTPFlow) -> None:
        watch = flow.metadata.get(META)
        if isinstance(watch, _Watch) and watch.large:
            self.pool.note_large_flow_done()

    # ---- commands --------------------------------------------------------------------
    @command.command("exifguard.stats")
    def stats_command(self) -> str:
        """Counts of requests seen and images stripped/blocked/passed/audited since start."""
        return self.stats.text()


def _refusal_reason(checked: _Checked) -> str:
    """A short reason for a refused upload, for people (no values): the first blocked
    image's error, else the blockers."""
    for r in checked.reports:
        if r.action is Action.BLOCKED:
            return r.record.error or "exifguard_mode=block refuses every image upload"
    return checked.blocked_reason or "the upload could not be checked"


class StreamResponses:
    """Stream every response so chat answers (SSE) reach the browser as they are produced."""

    name = "exifguard_stream_responses"

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            flow.response.stream = True


def make_addons(rewrite: Optional[RewriteFn] = None) -> list[object]:
    """The addon list for `mitmdump -s` scripts and in-process masters."""
    from .checkpage import CheckPage
    from .notify import Notifier
    return [Exifguard(rewrite), CheckPage(), Notifier(), StreamResponses()]


__all__ = ["Exifguard", "StreamResponses", "Stats", "make_addons", "parse_hosts"]
