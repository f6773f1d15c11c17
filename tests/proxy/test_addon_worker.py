"""The addon does an upload's heavy work in its worker thread and keeps the hooks short.

The rewrite, the policy decision, each image's log line and audit record (with the
sha256 of the cleaned output) are prepared off the event loop; the loop only applies
the decision, logs the prepared lines and appends the prepared records — and only if
the flow is still going ahead.  What gets logged and written is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading

from exifguard.proxy import addon as addon_mod
from exifguard.proxy.audit import AuditLog

from .test_addon import CLEAN, FakeRewrite, flow, run, setup  # noqa: F401 - setup is a fixture


async def test_log_line_and_audit_record_are_prepared_off_the_event_loop(setup, monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    threads: dict[str, str] = {}
    real_line, real_encode = addon_mod.image_line, AuditLog.encode

    def line(**kw):
        threads["line"] = threading.current_thread().name
        return real_line(**kw)

    def encode(self, record):
        threads["audit"] = threading.current_thread().name
        return real_encode(self, record)

    monkeypatch.setattr(addon_mod, "image_line", line)
    monkeypatch.setattr(AuditLog, "encode", encode)
    audit = tmp_path / "audit.jsonl"
    addon, tctx = setup(exifguard_audit_log=str(audit))
    f = flow()
    await run(addon, tctx, f)
    main = threading.main_thread().name
    assert threads["line"] != main and threads["audit"] != main
    rec = json.loads(audit.read_text())
    assert rec["action"] == "stripped" and rec["sha256"] == hashlib.sha256(CLEAN).hexdigest()
    assert rec["output_bytes"] == len(CLEAN)
    assert addon.stats.stripped == 1
    assert any(r.getMessage().startswith("exifguard: claude.ai image (JPEG") for r in caplog.records)


async def test_nothing_is_reported_for_a_flow_that_died_during_the_check(setup, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    audit = tmp_path / "audit.jsonl"

    class KillingRewrite(FakeRewrite):
        def __call__(self, method, url, headers, body, options):
            f.kill()  # the client went away while the image was being cleaned
            return super().__call__(method, url, headers, body, options)

    addon, tctx = setup(KillingRewrite(), exifguard_audit_log=str(audit))
    f = flow()
    await run(addon, tctx, f)
    assert audit.read_text() == ""
    assert addon.stats.stripped == 0
    assert not [r for r in caplog.records if r.getMessage().startswith("exifguard: claude.ai image")]


async def test_audit_log_swapped_during_the_check_gets_the_record(setup, tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    holder = {}

    class SwappingRewrite(FakeRewrite):
        def __call__(self, method, url, headers, body, options):
            out = super().__call__(method, url, headers, body, options)
            holder["tctx"].configure(holder["addon"], exifguard_audit_log=str(second))
            return out

    addon, tctx = setup(SwappingRewrite(), exifguard_audit_log=str(first))
    holder.update(addon=addon, tctx=tctx)
    f = flow()
    await run(addon, tctx, f)
    assert second.exists() and json.loads(second.read_text())["action"] == "stripped"
    assert first.read_text() == ""
