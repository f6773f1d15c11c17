"""One upload, inspected: decode -> carriers -> policy -> log lines and audit records.

Why one module: the mitmproxy addon and the ICAP service must apply exactly the same
steps to an upload, so a fix to one can never leave the other behind.  It imports no
mitmproxy and touches no flow or socket: each front end calls `inspect_upload` in a
worker thread (`workers.InspectionPool`) and then applies the `Inspection` it gets back
(answer the client, or forward the cleaned body with its headers) and emits the prepared
lines and records on its event loop.

Failures, in the order they can happen:
  * the body does not decode within the inspection limit -> `Refused` (413 for a
    compression bomb, 415 for an unknown coding, 422 for a corrupt one);
  * the deadline passes while decoding or in the carrier layer -> `InspectionTimeout`
    (the front end answers 503: we do not know what the body holds);
  * any other exception propagates: the front end fails closed on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..carriers import CarrierOptions, RequestRewrite
from . import decode as codings
from . import policy
from .audit import ImageRecord, strip_query
from .logline import escape, image_line
from .policy import Action, Mode, OnError, Outcome
from .workers import InspectionTimeout

RewriteFn = Callable[..., RequestRewrite]
ACCEPTED_CODINGS = "gzip, deflate, br, zstd"


@dataclass(frozen=True)
class Refused:
    """The body could not be inspected (it did not decode within the limit)."""

    reason: str
    status: int | None = None
    strict: bool = False
    """True: exifguard_on_error=pass does not forward it (capacity, not content)."""
    counter: str = "refused_undecodable"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Upload:
    """What a front end knows of one request."""

    method: str
    url: str
    host: str
    path: str
    headers: list[tuple[str, str]]
    raw: bytes
    """The body as received (still Content-Encoded)."""
    encoding: str
    request_id: str
    selftest: bool = False
    extra: tuple[tuple[str, str], ...] = ()
    """Audit fields the front end adds (ICAP: via, client_ip, user)."""


@dataclass(frozen=True)
class Settings:
    mode: Mode
    on_error: OnError
    limit: int
    """Inspection limit: inflated bytes at most (also the carriers' max_body_bytes)."""
    log_values: bool = False


@dataclass(frozen=True)
class ImageReport:
    """One image's outcome: its event-log line and audit record."""

    action: Action
    line: str
    record: ImageRecord

    @property
    def warns(self) -> bool:
        return self.action in (Action.BLOCKED, Action.PASSED)


@dataclass(frozen=True)
class Inspection:
    rewrite: RequestRewrite
    decision: policy.Decision | None = None
    """None: nothing to decide (no image, no blocker): forward the request as it is."""
    reports: tuple[ImageReport, ...] = ()
    raw_body: bytes | None = None
    """The cleaned body, encoded as it came, when the request is forwarded changed."""
    blocked_line: str | None = None
    """A refusal with no image to name (a blocker only): its event-log line."""
    warning_line: str | None = None
    blocked_reason: str | None = None
    """The blocked refusal's reason alone, unformatted (for notices and answers)."""


def refused_for(exc: codings.DecodeError) -> Refused:
    if isinstance(exc, codings.InflatesTooLarge):
        return Refused(str(exc), 413, counter="refused_too_large")
    if isinstance(exc, codings.UnsupportedEncoding):
        return Refused(str(exc), 415, headers=(("Accept-Encoding", ACCEPTED_CODINGS),))
    return Refused(f"{exc}; it could not be inspected")


def inspect_upload(upload: Upload, options: CarrierOptions, settings: Settings,
                   rewrite: RewriteFn) -> Inspection | Refused:
    """Decode, clean and decide one upload (worker thread); see the module docstring."""
    try:
        decoded = codings.decode(upload.raw, upload.encoding, limit=settings.limit, deadline=options.deadline)
    except codings.DecodeDeadline:
        raise InspectionTimeout("the inspection deadline passed while decoding the upload") from None
    except codings.DecodeError as exc:
        return refused_for(exc)
    body = decoded.body
    rw = rewrite(upload.method, upload.url, upload.headers, body, options)
    if rw.timed_out or (rw.blockers and not rw.images and options.deadline is not None
                        and time.monotonic() > options.deadline):
        # the carrier layer stopped at the deadline: the same strict refusal as when the
        # front end stops waiting first (not forwarded even with on_error=pass)
        raise InspectionTimeout("the inspection did not finish before its deadline")
    if not rw.images and not rw.blockers:
        return Inspection(rw)
    states = [policy.ImageState(ok=i.result is not None and not i.error, error=i.error) for i in rw.images]
    decision = policy.decide(settings.mode, settings.on_error, states, rw.blockers)
    reports = tuple(_reports(rw, decision, upload, settings.log_values))
    raw_body = None
    if decision.outcome is Outcome.FORWARD_CLEANED and rw.body is not body and rw.body != body:
        raw_body = codings.encode(rw.body, decoded) if decoded.codings else rw.body
    blocked = reason = None
    if decision.outcome is Outcome.RESPOND and not rw.images:
        reason = "; ".join(rw.blockers)
        blocked = f"exifguard: BLOCKED upload to {escape(upload.host)}: {escape(reason)}"
    warning = None
    if decision.warning:
        warning = (f"exifguard: WARNING {escape(upload.host)}{escape(strip_query(upload.path), 80)}: "
                   f"{escape(decision.warning)}")
    return Inspection(rw, decision, reports, raw_body, blocked, warning, blocked_reason=reason)


def _reports(rw: RequestRewrite, decision: policy.Decision, upload: Upload, log_values: bool) -> list[ImageReport]:
    blocker_reason = "; ".join(rw.blockers) or None
    out = []
    for img, action in zip(rw.images, decision.actions):
        error = img.error or (blocker_reason if action in (Action.BLOCKED, Action.PASSED) else None)
        r = img.result
        values: list[tuple[str, str]] = []
        if log_values and r is not None:
            for rem in r.removed:
                values.extend(rem.values)
        line = image_line(host=upload.host, action=action.value, fmt=img.format, size=img.size,
                          removed=r.removed if r is not None else (), kept=r.kept if r is not None else (),
                          error=error, values=values)
        record = ImageRecord(host=upload.host, path=upload.path, method=upload.method,
                             request_id=upload.request_id, carrier=img.carrier, format=img.format,
                             input_bytes=img.size, action=action.value, result=r, error=error,
                             filename=img.filename, selftest=upload.selftest, extra=upload.extra)
        out.append(ImageReport(action, line, record))
    return out


__all__ = ["ACCEPTED_CODINGS", "ImageReport", "Inspection", "Refused", "Settings", "Upload", "inspect_upload",
           "refused_for"]

