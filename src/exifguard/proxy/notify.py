"""Desktop notifications: tell the person when exifguard blocks an upload.

When exifguard refuses an upload, the chat page shows only a generic error ("upload
failed") and the reason sits in a terminal the person may not see, or in a service's log
file.  This addon reads the Exifguard addon's verdict for each upload (it runs right after
it, see `addon.make_addons`) and shows a desktop notification naming the service and the
reason, through `exifguard.desktop.notify`.

Option `exifguard_notify`: `blocked` (default) notifies refusals only, `all` also says
when photos were cleaned, `off` never notifies.  Notices are rate-limited per service and
name no file and no metadata value; the event log line is written whatever happens here.
A notification problem (no desktop, tool missing) is logged once and never affects what
is sent or refused.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mitmproxy import ctx, exceptions, http

from ..desktop.notify import Notice, RateLimiter, Sender, Unavailable, command_for
from .addon import META, _Watch  # addon imports this module only inside make_addons: no cycle
from .logline import describe_removed, escape

log = logging.getLogger(__name__)

LEVELS = ("blocked", "all", "off")
_DONE = "exifguard_notified"
_REASON_LIMIT = 180


class Notifier:
    name = "exifguard_notify"

    def __init__(self, sender: Sender | None = None, limiter: RateLimiter | None = None) -> None:
        self.level = "blocked"
        self._sender = sender
        self._injected = sender is not None
        """A sender given by the caller (tests) is used whatever this desktop offers."""
        self.limiter = limiter or RateLimiter()
        self._summary_pending = False
        self.unavailable: str | None = None
        """Why this desktop cannot show notifications (found once, at start)."""
        self._running = False

    def load(self, loader: Any) -> None:
        loader.add_option("exifguard_notify", str, "blocked",
                          "Desktop notifications: blocked (when an upload is refused, default), "
                          "all (also when photos were cleaned) or off. Rate-limited; they name the "
                          "service and the reason, never file names or metadata values.",
                          choices=list(LEVELS))

    def configure(self, updated: set[str]) -> None:
        if "exifguard_notify" in updated:
            level = ctx.options.exifguard_notify
            if level not in LEVELS:
                raise exceptions.OptionsError(
                    f"exifguard_notify must be one of {', '.join(LEVELS)}, not {escape(level, 40)!r}")
            self.level = level
            if self._running:
                self._check_desktop()

    def running(self) -> None:
        self._running = True
        self._check_desktop()

    def _check_desktop(self) -> None:
        """Say once, at start, when notifications cannot be shown here (a server, a session
        without a desktop), instead of at the first refused upload."""
        if self.level == "off" or self._injected:
            self.unavailable = None
            return
        try:
            command_for(Notice("exifguard", ""))
            self.unavailable = None
        except Unavailable as exc:
            if self.unavailable is None:
                log.warning("exifguard: desktop notifications are not shown: %s", exc)
            self.unavailable = str(exc)

    def _get_sender(self) -> Sender:
        # a method, not a property: mitmproxy reads every attribute of an addon when it
        # collects commands, which would create the sender (and its thread) at load
        if self._sender is None:
            self._sender = Sender(on_problem=lambda msg: log.warning(
                "exifguard: desktop notifications are not shown: %s", msg))
        return self._sender

    # ---- hooks: after the Exifguard addon's own ------------------------------------------
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._check(flow)  # refusals before the body (over the size limit) end here

    def request(self, flow: http.HTTPFlow) -> None:
        self._check(flow)

    def _check(self, flow: http.HTTPFlow) -> None:
        if self.level == "off" or flow.metadata.get(_DONE):
            return
        watch = flow.metadata.get(META)
        if not isinstance(watch, _Watch):
            return
        if watch.refused is not None:
            flow.metadata[_DONE] = True
            self._notify(watch, blocked=True)
        elif self.level == "all" and watch.images and flow.response is None and flow.error is None \
                and flow.live:
            flow.metadata[_DONE] = True
            self._notify(watch, blocked=False)

    def _notify(self, watch: Any, *, blocked: bool) -> None:
        if self.unavailable is not None:
            return
        if watch.selftest_port is not None or watch.test_upload:
            return  # `exifguard selftest` and the check page's live test are not the person's uploads
        service = watch.match.entry.service or watch.host
        key = f"{'blocked' if blocked else 'cleaned'}:{service}"
        admitted, held = self.limiter.admit(key)
        if not admitted:
            self._schedule_summary()
            return
        more = f" ({held} more since the last notice)" if held else ""
        if blocked:
            reason = escape(watch.refused or "", _REASON_LIMIT).rstrip(". ")
            notice = Notice(f"exifguard blocked an upload to {service}",
                            f"{reason}. Nothing was sent to {watch.host}.{more}")
        else:
            removed = [r for img in watch.images for r in img.removed]
            what = describe_removed(removed) or "no private metadata found"
            n = len(watch.images)
            notice = Notice(f"exifguard cleaned {n} image{'s' if n != 1 else ''} for {service}",
                            f"removed: {escape(what, _REASON_LIMIT)}{more}")
        self._get_sender().send(notice)

    def _schedule_summary(self) -> None:
        """Say later how many notices were held back, so a burst is not silently lost."""
        if self._summary_pending:
            return
        wait = self.limiter.next_due_in()
        if wait is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._summary_pending = True
        loop.call_later(wait + 0.05, self._flush)

    def _flush(self) -> None:
        self._summary_pending = False
        if self.level == "off":
            return
        for key, n in self.limiter.due():
            kind, _, service = key.partition(":")
            verb = "blocked" if kind == "blocked" else "cleaned"
            self._get_sender().send(Notice(f"exifguard {verb} {n} more upload{'s' if n != 1 else ''} to {service}",
                                    "see exifguard's log for each one"
                                    + (" (nothing of those was sent)" if verb == "blocked" else "")))
        self._schedule_summary()
