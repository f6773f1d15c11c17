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
    from exifguard.proxy import inspect as inspect_mod  # the shared pipeline builds the lines
    real_line, real_encode = inspect_mod.image_line, AuditLog.encode

    def line(**kw):
        threads["line"] = threading.current_thread().name
        return real_line(**kw)

    def encode(self, record):
        threads["audit"] = threading.current_thread().name
        return real_encode(self, record)

    monkeypatch.setattr(inspect_mod, "image_line", line)
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


# ---- bounded work (issue 11, points 2 and 3) -----------------------------------------------

import asyncio  # noqa: E402
import errno  # noqa: E402
import gzip  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
import zlib  # noqa: E402

import brotli  # noqa: E402
import pytest  # noqa: E402
import zstandard  # noqa: E402
from mitmproxy import exceptions  # noqa: E402

from exifguard.carriers import RequestRewrite  # noqa: E402
from exifguard.proxy.addon import RepeatedErrors  # noqa: E402
from exifguard.proxy.decode import decode  # noqa: E402

from .test_addon import DIRTY  # noqa: E402

HANG = 30.0  # hang protection only
MiB = 1024 * 1024
PLAIN = b"--b\r\n" + DIRTY + b"\r\n--b--"

ENCODE = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    "gzip, br": lambda b: brotli.compress(gzip.compress(b)),
    "deflate, zstd": lambda b: zstandard.ZstdCompressor().compress(zlib.compress(b)),
}


def gzip_bomb(total: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(MiB)
    return b"".join(c.compress(chunk) for _ in range(total // MiB)) + c.flush()


@pytest.fixture
def no_mitmproxy_decoding(monkeypatch):
    """`request.content` decodes the whole body in one go (the 6.8 GB bomb): never used."""
    from mitmproxy import http as mhttp

    def refuse(self, strict=True):
        if self.headers.get("content-encoding"):
            raise AssertionError("the addon asked mitmproxy to decode a request body")
        return self.raw_content
    monkeypatch.setattr(mhttp.Request, "get_content", refuse)


async def until(cond, what: str) -> None:
    end = time.monotonic() + HANG
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def blocked_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "BLOCKED" in r.getMessage()]


@pytest.mark.parametrize("coding", list(ENCODE))
async def test_encoded_upload_is_cleaned_and_sent_encoded_the_same_way(setup, coding, no_mitmproxy_decoding):
    rw = FakeRewrite()
    addon, tctx = setup(rw)
    f = flow(body=ENCODE[coding](PLAIN), headers=(("content-encoding", coding),))
    await run(addon, tctx, f)
    assert f.response is None
    assert rw.calls[0][3] == PLAIN, "the carrier layer must see the decoded body"
    assert f.request.headers["content-encoding"] == coding
    sent = decode(f.request.raw_content, coding, limit=MiB).body
    assert DIRTY not in sent and CLEAN in sent and len(sent) == len(PLAIN)
    assert f.request.headers["content-length"] == str(len(f.request.raw_content))
    assert addon.stats.stripped == 1


async def test_unchanged_encoded_body_is_forwarded_byte_identical(setup):
    addon, tctx = setup()
    raw = gzip.compress(b"no image here " * 100)
    f = flow(body=raw, headers=(("content-encoding", "gzip"),))
    await run(addon, tctx, f)
    assert f.response is None and f.request.raw_content == raw


async def test_gzip_bomb_is_refused_413_before_the_carrier_sees_it(setup, caplog, no_mitmproxy_decoding):
    rw = FakeRewrite()
    addon, tctx = setup(rw, exifguard_inspect_limit="1m")
    f = flow(body=gzip_bomb(64 * MiB), headers=(("content-encoding", "gzip"),))
    await run(addon, tctx, f)
    assert f.response.status_code == 413
    assert "inflates to more than 1048576 bytes" in f.response.text
    assert f.response.text.startswith("exifguard blocked this upload:")
    assert rw.calls == [] and addon.stats.refused_too_large == 1
    assert len(blocked_lines(caplog)) == 1


async def test_bomb_follows_the_policy_for_uploads_that_cannot_be_inspected(setup):
    bomb = gzip_bomb(8 * MiB)
    addon, tctx = setup(exifguard_inspect_limit="1m", exifguard_on_error="pass")
    f = flow(body=bomb, headers=(("content-encoding", "gzip"),))
    await run(addon, tctx, f)
    assert f.response is None and f.request.raw_content == bomb  # the person chose pass
    addon, tctx = setup(exifguard_inspect_limit="1m", exifguard_mode="block", exifguard_on_error="pass")
    g = flow(body=bomb, headers=(("content-encoding", "gzip"),))
    await run(addon, tctx, g)
    assert g.response.status_code == 413  # block mode refuses what it cannot inspect


async def test_unknown_encoding_is_refused_415(setup, caplog):
    rw = FakeRewrite()
    addon, tctx = setup(rw)
    f = flow(body=b"\x1f\x9d" + DIRTY, headers=(("content-encoding", "compress"),))
    await run(addon, tctx, f)
    assert f.response.status_code == 415 and "'compress' cannot be decoded" in f.response.text
    assert f.response.headers["accept-encoding"] == "gzip, deflate, br, zstd"
    assert rw.calls == []
    addon2, tctx2 = setup(exifguard_on_error="pass")
    g = flow(body=b"x" + DIRTY, headers=(("content-encoding", "compress"),))
    await run(addon2, tctx2, g)
    assert g.response is None and "forwarded upload to claude.ai unchecked" in caplog.text


async def test_two_content_encoding_fields_are_one_stack(setup):
    rw = FakeRewrite()
    addon, tctx = setup(rw)
    f = flow(body=ENCODE["gzip, br"](PLAIN), headers=(("content-encoding", "gzip"), ("content-encoding", "br")))
    await run(addon, tctx, f)
    assert f.response is None and rw.calls[0][3] == PLAIN
    assert DIRTY not in decode(f.request.raw_content, "gzip, br", limit=MiB).body


async def test_declared_length_over_the_limit_is_refused_before_buffering(setup, caplog):
    rw = FakeRewrite()
    addon, tctx = setup(rw, exifguard_inspect_limit="1m")
    f = flow(headers=(("content-length", str(2 * MiB)),))
    addon.requestheaders(f)
    assert f.error is not None and f.error.msg == f.error.KILLED_MESSAGE
    assert "Content-Length (2097152 bytes) is over exifguard's inspection limit" in caplog.text
    assert addon.stats.refused_too_large == 1
    small = flow(headers=(("content-length", str(MiB)),))
    addon.requestheaders(small)
    assert small.error is None
    audit, atctx = setup(exifguard_inspect_limit="1m", exifguard_mode="audit")
    g = flow(headers=(("content-length", str(2 * MiB)),))
    audit.requestheaders(g)
    assert g.error is None  # audit mode never refuses


class BlockingRewrite(FakeRewrite):
    """Holds its worker thread until released (a slow inspection)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def __call__(self, method, url, headers, body, options):
        self.entered.release()
        assert self.release.wait(HANG), "test never released the inspection"
        return super().__call__(method, url, headers, body, options)


async def test_busy_proxy_answers_503_with_retry_after_even_with_on_error_pass(setup, caplog):
    rw = BlockingRewrite()
    addon, tctx = setup(rw, exifguard_workers=1, exifguard_queue=0, exifguard_on_error="pass")
    tctx.configure(addon, exifguard_express=0)  # regular slots only (the express lane: test_workers.py)
    first = flow()
    task = asyncio.create_task(run(addon, tctx, first))
    assert await asyncio.to_thread(rw.entered.acquire, True, HANG)
    second = flow()
    await run(addon, tctx, second)
    assert second.response.status_code == 503 and second.response.headers["retry-after"]
    assert "exifguard is busy" in second.response.text and addon.stats.refused_busy == 1
    for _ in range(3):  # a flood of refusals is one log line and a count
        more = flow()
        await run(addon, tctx, more)
        assert more.response.status_code == 503
    assert len([m for m in blocked_lines(caplog) if "busy" in m]) == 1
    rw.release.set()
    await task
    assert first.response is None and DIRTY not in first.request.content
    assert "refused: busy 4" in addon.stats.text()


async def test_busy_in_audit_mode_forwards(setup):
    rw = BlockingRewrite()
    addon, tctx = setup(rw, exifguard_workers=1, exifguard_queue=0, exifguard_mode="audit")
    tctx.configure(addon, exifguard_express=0)  # regular slots only (the express lane: test_workers.py)
    task = asyncio.create_task(run(addon, tctx, flow()))
    assert await asyncio.to_thread(rw.entered.acquire, True, HANG)
    g = flow()
    before = g.request.raw_content
    await run(addon, tctx, g)
    assert g.response is None and g.request.raw_content == before
    rw.release.set()
    await task


async def test_timeout_blocks_once_and_keeps_the_slot_until_the_thread_ends(setup, caplog):
    rw = BlockingRewrite()
    addon, tctx = setup(rw, exifguard_inspect_timeout=1, exifguard_workers=1, exifguard_queue=0,
                        exifguard_on_error="pass")
    tctx.configure(addon, exifguard_express=0)  # regular slots only (the express lane: test_workers.py)
    f = flow()
    await run(addon, tctx, f)
    assert f.response.status_code == 503 and "did not finish within 1 s" in f.response.text
    assert f.response.headers["retry-after"]
    assert addon.stats.timed_out == 1
    assert len(blocked_lines(caplog)) == 1
    # the inspection still runs in its thread and still holds the only slot
    assert addon.pool.stats.running == 1
    g = flow()
    await run(addon, tctx, g)
    assert g.response.status_code == 503 and "busy" in g.response.text
    rw.release.set()
    await until(lambda: addon.pool.stats.running == 0, "the slow inspection to end")
    h = flow()
    rw.release.set()
    await run(addon, tctx, h)
    assert h.response is None and DIRTY not in h.request.content
    assert f.request.raw_content is not None and DIRTY in f.request.raw_content  # never rewritten late


@pytest.mark.parametrize("marked", [True, False], ids=["timed_out-flag", "clock-past-deadline"])
async def test_carrier_deadline_blocker_is_a_strict_refusal(setup, monkeypatch, marked):
    from exifguard.proxy import inspect as inspect_mod
    seen = {}

    def late(method, url, headers, body, options):
        seen["deadline"] = options.deadline
        return RequestRewrite(body, {}, (), ("the upload could not be inspected before the deadline",), body,
                              timed_out=marked)
    addon, tctx = setup(late, exifguard_on_error="pass")
    if not marked:
        monkeypatch.setattr(inspect_mod, "time", types.SimpleNamespace(monotonic=lambda: time.monotonic() + 1e6))
    f = flow()
    await run(addon, tctx, f)
    assert f.response is not None and f.response.status_code == 503
    assert seen["deadline"] is not None


async def test_carrier_options_carry_the_deadline_and_the_limit(setup):
    rw = FakeRewrite()
    addon, tctx = setup(rw, exifguard_inspect_limit="3m", exifguard_inspect_timeout=45)
    before = time.monotonic()
    await run(addon, tctx, flow())
    opts = rw.calls[0][4]
    assert opts.max_body_bytes == 3 * MiB
    assert before + 45 <= opts.deadline <= time.monotonic() + 45


class DyingRewrite(FakeRewrite):
    def __call__(self, method, url, headers, body, options):
        raise SystemExit("worker thread dies")


async def test_worker_thread_dying_fails_closed_and_the_proxy_keeps_serving(setup, caplog):
    addon, tctx = setup(DyingRewrite())
    f = flow()
    await run(addon, tctx, f)
    assert f.response.status_code == 422 and "internal error" in f.response.text
    assert "SystemExit" in caplog.text
    addon._rewrite = FakeRewrite()
    g = flow()
    await run(addon, tctx, g)
    assert g.response is None and DIRTY not in g.request.content
    await until(lambda: addon.pool.stats.running == 0, "slots free")


async def test_full_disk_audit_log_is_logged_once_and_uploads_still_cleaned(setup, caplog, tmp_path, monkeypatch):
    clock = [0.0]
    addon, tctx = setup(exifguard_audit_log=str(tmp_path / "audit.jsonl"))
    addon.repeats = RepeatedErrors(window=60, clock=lambda: clock[0])

    def full(self, line):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(AuditLog, "append", full)
    for _ in range(3):
        f = flow()
        await run(addon, tctx, f)
        assert f.response is None and DIRTY not in f.request.content
    errs = [r.getMessage() for r in caplog.records if "could not write the audit log" in r.getMessage()]
    assert len(errs) == 1 and "No space left on device" in errs[0] and "still cleaned" in errs[0]
    clock[0] = 61
    await run(addon, tctx, flow())
    errs = [r.getMessage() for r in caplog.records if "could not write the audit log" in r.getMessage()]
    assert len(errs) == 2 and "2 more times" in errs[1]
    assert addon.stats.stripped == 4


async def test_full_disk_audit_log_with_on_error_block_still_blocks_dirty_uploads(setup, tmp_path, monkeypatch):
    addon, tctx = setup(FakeRewrite(error="JPEG: truncated"), exifguard_audit_log=str(tmp_path / "a.jsonl"))
    monkeypatch.setattr(AuditLog, "append", lambda self, line: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    f = flow()
    await run(addon, tctx, f)
    assert f.response.status_code == 422


async def test_repeated_internal_errors_are_logged_once(setup, caplog):
    addon, tctx = setup(FakeRewrite(raises=True))
    for _ in range(3):
        f = flow()
        await run(addon, tctx, f)
        assert f.response.status_code == 422
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("exifguard: internal error")]
    assert len(lines) == 1
    assert len(blocked_lines(caplog)) == 3  # one outcome line per upload
    assert addon.stats.internal_errors == 3


@pytest.mark.parametrize("opt,value", [
    ("exifguard_inspect_limit", "lots"), ("exifguard_inspect_limit", "0"), ("exifguard_inspect_limit", "-5m"),
    ("exifguard_inspect_timeout", 0), ("exifguard_workers", -1), ("exifguard_queue", -1),
])
async def test_bad_bounds_are_option_errors(setup, opt, value):
    addon, tctx = setup()
    with pytest.raises(exceptions.OptionsError, match=opt):
        tctx.configure(addon, **{opt: value})


async def test_bounds_options_apply(setup):
    addon, tctx = setup(exifguard_inspect_limit="64m", exifguard_workers=3, exifguard_queue=7,
                        exifguard_inspect_timeout=9)
    assert addon.inspect_limit == 64 * MiB and addon.inspect_timeout == 9
    assert addon.pool.workers == 3 and addon.pool.queue == 7
    tctx.configure(addon, exifguard_inspect_limit="1048576")
    assert addon.inspect_limit == MiB


async def test_memory_is_trimmed_after_a_large_upload(setup):
    trims = []
    addon, tctx = setup()
    addon.pool._trim = lambda: trims.append(1)
    addon.pool._trim_delay = 0.01
    addon.pool._trim_min_interval = 0
    f = flow(body=b"x" * (2 * MiB) + DIRTY)
    await run(addon, tctx, f)
    await until(lambda: trims, "a trim after the large inspection")
    addon.response(f)
    await until(lambda: len(trims) == 2, "a trim after the large flow ended")
    small = flow()
    await run(addon, tctx, small)
    addon.response(small)
    await asyncio.sleep(0.1)
    assert len(trims) == 2
