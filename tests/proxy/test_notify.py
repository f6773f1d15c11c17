"""The notifier addon: one notice per refused upload, naming the service and the reason.

It runs after the Exifguard addon (as in make_addons) under mitmproxy's test harness; the
sender is replaced by a list, so nothing is shown on this machine.
"""

from __future__ import annotations

import pytest
from mitmproxy.test import taddons

from exifguard.desktop.notify import Notice, RateLimiter
from exifguard.proxy.addon import Exifguard
from exifguard.proxy.notify import Notifier

from .test_addon import DIRTY, FakeRewrite, flow


class Recorder:
    def __init__(self) -> None:
        self.notices: list[Notice] = []

    def send(self, notice: Notice) -> None:
        self.notices.append(notice)


@pytest.fixture
def pair():
    def make(rewrite=None, **opts):
        eg, sent = Exifguard(rewrite or FakeRewrite()), Recorder()
        nt = Notifier(sender=sent, limiter=RateLimiter(per_key=60, gap=0))
        tctx = taddons.context(eg, nt)
        tctx.configure(eg, **{k: v for k, v in opts.items() if k != "exifguard_notify"})
        if "exifguard_notify" in opts:
            tctx.configure(nt, exifguard_notify=opts["exifguard_notify"])
        return eg, nt, sent
    return make


async def through(eg, nt, f):
    eg.requestheaders(f)
    nt.requestheaders(f)
    if f.live and not f.error:
        await eg.request(f)
        nt.request(f)


async def test_blocked_upload_notifies_service_and_reason_without_values(pair):
    eg, nt, sent = pair(FakeRewrite(error="JPEG: Exif segment is truncated"))
    f = flow()
    await through(eg, nt, f)
    assert f.response.status_code == 422
    [n] = sent.notices
    assert n.title == "exifguard blocked an upload to Claude"
    assert "JPEG: Exif segment is truncated" in n.body and "Nothing was sent to claude.ai" in n.body
    assert "IMG_1" not in n.title + n.body and "48.8" not in n.title + n.body


async def test_block_mode_refusal_notifies(pair):
    eg, nt, sent = pair(exifguard_mode="block")
    await through(eg, nt, flow())
    assert len(sent.notices) == 1 and "refuses every image upload" in sent.notices[0].body


async def test_cleaned_uploads_notify_only_with_all(pair):
    eg, nt, sent = pair()
    await through(eg, nt, flow())
    assert sent.notices == []
    eg, nt, sent = pair(exifguard_notify="all")
    f = flow()
    await through(eg, nt, f)
    [n] = sent.notices
    assert n.title == "exifguard cleaned 1 image for Claude" and "location (GPS)" in n.body
    assert "48.8" not in n.body


async def test_off_never_notifies(pair):
    eg, nt, sent = pair(FakeRewrite(error="bad"), exifguard_notify="off")
    await through(eg, nt, flow())
    assert sent.notices == []


async def test_untouched_requests_and_other_hosts_do_not_notify(pair):
    eg, nt, sent = pair(FakeRewrite(error="bad"))
    await through(eg, nt, flow(host="example.com"))
    await through(eg, nt, flow(body=b"no image here"))
    assert sent.notices == []


async def test_refusal_before_the_body_notifies(pair):
    eg, nt, sent = pair(exifguard_inspect_limit="1k")
    f = flow(headers=(("content-length", "5000000"),))
    await through(eg, nt, f)
    assert f.error is not None  # killed before the body was read
    [n] = sent.notices
    assert "over exifguard's inspection limit" in n.body


async def test_a_burst_is_rate_limited_per_service(pair):
    eg, nt, sent = pair(FakeRewrite(error="bad"))
    for _ in range(5):
        await through(eg, nt, flow())
    await through(eg, nt, flow(host="copilot.microsoft.com"))
    assert [n.title for n in sent.notices] == ["exifguard blocked an upload to Claude",
                                               "exifguard blocked an upload to Copilot"]


async def test_bad_level_is_refused_by_mitmproxy():
    from mitmproxy import exceptions
    nt = Notifier(sender=Recorder())
    with taddons.context(nt) as tctx:
        with pytest.raises(exceptions.OptionsError):
            tctx.configure(nt, exifguard_notify="sometimes")


async def test_a_desktop_without_notifications_is_named_once_at_start(caplog, monkeypatch):
    """On a server (no session bus) the reason is logged when the proxy starts, not at the
    first refused upload, and nothing is attempted afterwards."""
    import logging
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/nonexistent-exifguard-test")
    caplog.set_level(logging.WARNING)
    eg, nt = Exifguard(FakeRewrite(error="bad")), Notifier()
    with taddons.context(eg, nt) as tctx:
        tctx.configure(eg)
        nt.running()
        assert nt.unavailable and "no desktop session" in caplog.text
        caplog.clear()
        await through(eg, nt, flow())
        assert caplog.text.count("notifications") == 0 and nt._sender is None  # never created
        tctx.configure(nt, exifguard_notify="off")
        assert nt.unavailable is None
