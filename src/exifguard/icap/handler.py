"""REQMOD: the proxy's policy applied to a request an ICAP client hands over.

Shared with the mitmproxy addon, not copied: the host table (`proxy.hosts.HostSet`
with its Origin/Referer rules for shared storage hosts), the whole inspection of an
upload (`proxy.inspect.inspect_upload`: bounded Content-Encoding decoding, the carrier
layer with its recomputed hashes and sizes, the policy table, the log lines and audit
records), the refusal texts (`proxy.policy.block_text`), the bounded inspection pool
(`proxy.workers.InspectionPool`) and the audit log (`proxy.audit`).

What an ICAP service can answer (RFC 3507 §4.8–4.9), and what we use it for:
  * ``204 No Content``: forward the request unchanged.  Only when the client allowed it
    (``Allow: 204``) or in answer to a preview (§4.5-4.6);
  * ``200`` with the request's header (and body): forward this request instead, used
    for a cleaned body (its Content-Length recomputed when its length changed), and to
    echo an unchanged request when 204 is not allowed;
  * ``200`` with an HTTP *response* (§4.8.2 "request satisfaction"): the proxy answers the
    client with it and sends nothing upstream: a blocked upload gets exifguard's
    explanation (403 block mode, 422 cannot be cleaned, 413/415 not inspectable, 503
    busy or late).

Fail closed: whatever goes wrong while inspecting an upload candidate ends in a
refusal (an encapsulated 4xx/5xx), never in a 204 or an echo of the original, except
where the administrator chose audit mode or on_error=pass, and even then never for
exifguard's own capacity (busy, deadline): see proxy/addon.py's module docstring.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..carriers import CarrierOptions, RequestRewrite, UploadTracker, rewrite_request
from ..engine.report import ScrubOptions
from ..proxy import policy
from ..proxy.audit import AuditLog
from ..proxy.hosts import HostEntry, HostSet, Match, normalise_host
from ..proxy.inspect import Refused, Settings, Upload, inspect_upload
from ..proxy.logline import escape
from ..proxy.policy import Mode, OnError, Outcome
from ..proxy.workers import EXPRESS_SLOTS, Busy, InspectionPool, InspectionTimeout, WorkerFailed
from .protocol import HTTPHead

log = logging.getLogger("exifguard")

RETRY_AFTER = "5"
CLIENT_HEADERS = (("client_ip", "x-client-ip"), ("user", "x-authenticated-user"),
                  ("user", "x-client-username"))
"""ICAP request headers naming the proxy's client (Squid: icap_send_client_ip /
icap_send_client_username; ProxySG: X-Client-IP, X-Authenticated-User).  Recorded in the
audit log so an administrator can follow up; never metadata values."""
NO_BODY_METHODS = frozenset({"OPTIONS"})
"""Never inspected (CORS preflights), as in the proxy: any other method with a body is."""

RewriteFn = Callable[..., RequestRewrite]


@dataclass(frozen=True)
class ServiceConfig:
    """Everything that decides what the service does with a request (see `istag`)."""

    hosts: HostSet = field(default_factory=HostSet.build)
    mode: Mode = Mode.STRIP
    on_error: OnError = OnError.BLOCK
    keep_icc: bool = True
    rename_files: bool = False
    log_values: bool = False
    inspect_limit: int = CarrierOptions().max_body_bytes
    inspect_timeout: float = 60.0
    threads: int = 2
    """Inspections at once per process (the pool's worker threads)."""
    queue: int = 32
    """Inspections that may wait per process; beyond, 503 busy."""
    express: int = EXPRESS_SLOTS
    """Extra slots per process for small bodies (chat messages), so they never wait behind photos."""
    buffer_budget: int = 1024 * 1024 * 1024
    """Body bytes one process may hold at once across its connections; beyond, 503 busy."""
    preview: int = 32768
    """Preview size advertised in OPTIONS.  Not 64 KiB: Squid 5.7 then waits forever on a
    chunked request body (it sent 65535 bytes of preview and never the end of it)."""
    max_connections: int = 128
    """Advertised as Max-Connections; also each process's own limit (one may get them all)."""
    options_ttl: int = 3600
    audit_log: Path | None = None
    service_path: str = "/reqmod"
    processes: int = 1

    def policy_hash(self) -> str:
        """A digest of what changes answers: a new ISTag tells proxies to drop cached verdicts."""
        doc = {"version": __version__, "mode": self.mode.value, "on_error": self.on_error.value,
               "keep_icc": self.keep_icc, "rename_files": self.rename_files, "limit": self.inspect_limit,
               "hosts": sorted((e.domain, e.kind.value, e.subdomains) for e in self.hosts.entries),
               "origins": sorted(self.hosts.origins)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]

    def istag(self) -> str:
        """ISTag (§4.7): quoted, at most 32 characters: version + policy hash."""
        return f'"EG{__version__}-{self.policy_hash()}"'


# ---- outcomes ---------------------------------------------------------------------------
@dataclass
class Verdict:
    """What to answer for one REQMOD, prepared off the event loop."""

    kind: str
    """"unchanged" (204 or echo), "modified" (new head/body), "respond" (HTTP answer)."""
    head: HTTPHead | None = None
    body: bytes | None = None
    status: int = 0
    text: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    lines: list[tuple[int, str]] = field(default_factory=list)
    audit_records: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def unchanged(cls) -> "Verdict":
        return cls("unchanged")

    @classmethod
    def respond(cls, status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> "Verdict":
        return cls("respond", status=status, text=text, headers=headers)


@dataclass
class Counters:
    requests: int = 0
    options: int = 0
    candidates: int = 0
    stripped: int = 0
    blocked: int = 0
    passed: int = 0
    audit: int = 0
    refused: int = 0
    busy: int = 0
    timeouts: int = 0
    internal_errors: int = 0


@dataclass(frozen=True)
class Client:
    """Who sent the request, as the proxy reports it (values clipped, for the audit log)."""
    client_ip: str | None = None
    user: str | None = None

    @classmethod
    def from_icap(cls, headers: Any) -> "Client":
        got: dict[str, str] = {}
        for key, name in CLIENT_HEADERS:
            v = headers.get(name)
            if v and key not in got:
                got[key] = v.strip()[:256]
        return cls(got.get("client_ip"), got.get("user"))


class Reqmod:
    """The REQMOD service for one process; see the module docstring."""

    def __init__(self, config: ServiceConfig, *, rewrite: RewriteFn | None = None,
                 pool: InspectionPool[Any] | None = None) -> None:
        self.config = config
        self.rewrite = rewrite or rewrite_request
        self.pool: InspectionPool[Any] = pool or InspectionPool(config.threads, config.queue,
                                                                bounds_hint="exifguard icap --threads / --queue",
                                                                express=config.express)
        self.uploads = UploadTracker()
        self.counters = Counters()
        self.audit: AuditLog | None = None
        if config.audit_log is not None:
            self.audit = AuditLog(config.audit_log, with_values=config.log_values)

    def close(self) -> None:
        self.pool.close()
        if self.audit is not None:
            self.audit.close()

    # ---- decisions from the head alone ---------------------------------------------------
    def classify(self, head: HTTPHead) -> Match | None:
        """An upload candidate?  (the proxy's rule: AI host, or shared storage with an AI Origin)"""
        if head.method in NO_BODY_METHODS:
            return None
        host = head.host()
        if not host:
            # no host at all: we cannot tell where it goes, so inspect it
            return Match(HostEntry("unknown", "unknown host"), "host")
        return self.config.hosts.classify(host, head.headers.get("origin"), head.headers.get("referer"))

    def declared_too_large(self, head: HTTPHead) -> int | None:
        values = head.headers.get_all("content-length")
        if len(set(v.strip() for v in values)) != 1:
            return None
        v = values[0].strip()
        n = int(v) if v.isdigit() else None
        return n if n is not None and n > self.config.inspect_limit else None

    def refuses(self, *, strict: bool) -> bool:
        on_error = OnError.BLOCK if strict else self.config.on_error
        return policy.decide(self.config.mode, on_error, (), ("?",)).outcome is Outcome.RESPOND

    def cannot_inspect(self, host: str, why: Refused) -> Verdict:
        """Not inspected: refused, or forwarded where the administrator chose so (addon's rule)."""
        on_error = OnError.BLOCK if why.strict else self.config.on_error
        decision = policy.decide(self.config.mode, on_error, (), (why.reason,))
        if decision.outcome is not Outcome.RESPOND:
            v = Verdict.unchanged()
            v.lines.append((logging.WARNING, f"exifguard: WARNING forwarded upload to {escape(host)} "
                                             f"unchecked: {escape(why.reason)}"))
            return v
        self.counters.refused += 1
        v = Verdict.respond(why.status or decision.status or policy.ERROR_STATUS,
                            decision.text or policy.block_text(why.reason), why.headers)
        v.lines.append((logging.WARNING, f"exifguard: BLOCKED upload to {escape(host)}: {escape(why.reason)}"))
        return v

    def too_large(self, host: str, size: int | None) -> Verdict:
        what = f"{size} bytes" if size is not None else "a body"
        return self.cannot_inspect(host, Refused(
            f"the upload ({what}) is over exifguard's inspection limit ({self.config.inspect_limit} bytes)",
            413, strict=True))

    def busy(self, host: str, why: str) -> Verdict:
        self.counters.busy += 1
        return self.cannot_inspect(host, Refused(f"exifguard is busy ({why}); try again in a moment", 503,
                                                  strict=True, headers=(("Retry-After", RETRY_AFTER),)))

    def internal_error(self, host: str, exc: BaseException) -> Verdict:
        self.counters.internal_errors += 1
        log.error("exifguard: internal error while checking an upload: %s (message hidden, it may "
                  "quote the upload)", type(exc).__name__)
        return self.cannot_inspect(host, Refused(f"internal error while checking the upload "
                                                  f"({type(exc).__name__})"))

    # ---- the inspection ----------------------------------------------------------------------
    async def inspect(self, head: HTTPHead, body: bytes, client: Client = Client()) -> Verdict:
        """Decode, clean and decide in the pool; every failure becomes a refusal."""
        self.counters.candidates += 1
        host = normalise_host(head.host() or "unknown")
        try:
            return await self.pool.run(lambda deadline: self._check(head, body, deadline, client),
                                       size=len(body), timeout=self.config.inspect_timeout)
        except Busy as exc:
            return self.busy(host, str(exc))
        except InspectionTimeout as exc:
            self.counters.timeouts += 1
            return self.cannot_inspect(host, Refused(
                f"{exc}; try again, or send a smaller upload", 503, strict=True,
                headers=(("Retry-After", RETRY_AFTER),)))
        except WorkerFailed as exc:
            return self.internal_error(host, exc.exc)
        except Exception as exc:  # noqa: BLE001 - fail closed on anything
            return self.internal_error(host, exc)

    def _check(self, head: HTTPHead, raw: bytes, deadline: float, client: Client) -> Verdict:
        """Worker thread: the shared inspection (proxy/inspect.py), as an ICAP verdict."""
        cfg = self.config
        host = normalise_host(head.host() or "unknown")
        extra = [("via", "icap")]
        if client.client_ip:
            extra.append(("client_ip", client.client_ip))
        if client.user:
            extra.append(("user", client.user))
        upload = Upload(method=head.method, url=head.url(), host=host, path=head.path(),
                        headers=list(head.headers.items), raw=raw,
                        encoding=", ".join(head.headers.get_all("content-encoding")),
                        request_id=uuid.uuid4().hex, extra=tuple(extra))
        options = CarrierOptions(scrub=ScrubOptions(keep_icc=cfg.keep_icc, collect_values=cfg.log_values),
                                 rename_files=cfg.rename_files, uploads=self.uploads,
                                 max_body_bytes=cfg.inspect_limit, deadline=deadline)
        settings = Settings(mode=cfg.mode, on_error=cfg.on_error, limit=cfg.inspect_limit,
                            log_values=cfg.log_values)
        result = inspect_upload(upload, options, settings, self.rewrite)
        if isinstance(result, Refused):
            return self.cannot_inspect(host, result)
        decision = result.decision
        if decision is None:
            return Verdict.unchanged()
        rw = result.rewrite
        if decision.outcome is Outcome.RESPOND:
            verdict = Verdict.respond(decision.status or policy.ERROR_STATUS, decision.text or "")
        elif decision.outcome is Outcome.FORWARD_CLEANED and rw.changed:
            new_head = HTTPHead.parse(head.raw)
            body = raw
            if result.raw_body is not None:
                body = result.raw_body
                if "chunked" not in new_head.headers.tokens("transfer-encoding"):
                    new_head.headers.set("Content-Length", str(len(body)))
            for k, v in rw.set_headers.items():
                new_head.headers.set(k, v)
            verdict = Verdict("modified", head=new_head, body=body)
        else:
            verdict = Verdict.unchanged()
        for line in (result.blocked_line, result.warning_line):
            if line:
                verdict.lines.append((logging.WARNING, line))
        for r in result.reports:
            verdict.lines.append((logging.WARNING if r.warns else logging.INFO, r.line))
            setattr(self.counters, r.action.value, getattr(self.counters, r.action.value) + 1)
            if self.audit is not None:
                verdict.audit_records.append(r.record.to_dict(with_values=self.audit.with_values))
        return verdict

    def emit(self, verdict: Verdict) -> None:
        """Event loop: the prepared log lines and audit records (an audit failure is logged)."""
        for level, line in verdict.lines:
            log.log(level, line)
        if self.audit is None:
            return
        for d in verdict.audit_records:
            try:
                self.audit.append((json.dumps(d, ensure_ascii=True, separators=(",", ":")) + "\n")
                                  .encode("ascii"))
            except (OSError, ValueError) as exc:
                log.error("exifguard: could not write the audit log %s: %s; uploads are still cleaned "
                          "or blocked as usual", escape(str(self.audit.path)),
                          escape(getattr(exc, "strerror", None) or type(exc).__name__))
