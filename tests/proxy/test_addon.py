"""The addon under mitmproxy's own test harness (taddons/tflow), with an injected rewrite.

The fake rewrite returns the carrier contract's real types, so these tests exercise the
addon's classification, buffering guards, policy application, logging and stats
independently of the carrier layer and the engine (those have their own tests; the
end-to-end tests use the real thing).
"""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow, tutils

from exifguard.engine.report import Category, Kept, Removal, ScrubResult
from exifguard.proxy.addon import Exifguard, StreamResponses, is_loopback, make_addons

from exifguard.carriers import ImageFinding, RequestRewrite  # never skip: the addon needs it

DIRTY = b"\xff\xd8\xff\xe1GPS-CANARY\xff\xd9"
CLEAN = b"\xff\xd8\xff\xe1\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xd9"
REMOVAL = Removal("APP1 Exif", 2, 12, ("GPSLatitude", "Make"), frozenset({Category.LOCATION, Category.DEVICE}),
                  values=(("GPSLatitude", "48.8"),))


class FakeRewrite:
    """Finds DIRTY in a body; `error` / `blockers` simulate what the carrier layer reports."""

    def __init__(self, error: str | None = None, blockers: tuple[str, ...] = (), raises: bool = False):
        self.error, self.blockers, self.raises = error, blockers, raises
        self.calls: list[tuple] = []

    def __call__(self, method, url, headers, body, options):
        self.calls.append((method, url, headers, body, options))
        if self.raises:
            raise RuntimeError("boom")
        i = body.find(DIRTY)
        if i < 0:
            return RequestRewrite(body, {}, (), ())
        if self.error:
            img = ImageFinding("raw body", "JPEG", len(DIRTY), "IMG_1.jpg", None, self.error)
            return RequestRewrite(body, {}, (img,), self.blockers, original_body=body)
        res = ScrubResult(CLEAN, "JPEG", (REMOVAL,), (Kept("orientation"),), len(DIRTY))
        img = ImageFinding("raw body", "JPEG", len(DIRTY), "IMG_1.jpg", res, None)
        new = body[:i] + CLEAN + body[i + len(DIRTY):]
        return RequestRewrite(new, {"content-md5": "new-md5"}, (img,), self.blockers, original_body=body)


def flow(host="claude.ai", method="POST", body=b"--b\r\n" + DIRTY + b"\r\n--b--", headers=(), path="/api/upload"):
    hdrs = http.Headers([(b"content-type", b"application/octet-stream"),
                         *((k.encode(), v.encode()) for k, v in headers)])
    req = tutils.treq(method=method.encode(), host=host, port=443, scheme=b"https", path=path.encode(),
                      headers=hdrs, content=body)
    return tflow.tflow(req=req)


async def run(addon, tctx, f):
    addon.requestheaders(f)
    if f.live and not f.error:
        await addon.request(f)


@pytest.fixture
def setup():
    def make(rewrite=None, **opts):
        addon = Exifguard(rewrite or FakeRewrite())
        tctx = taddons.context(addon)
        if opts:
            tctx.configure(addon, **opts)
        return addon, tctx
    return make


async def test_strip_rewrites_body_sets_headers_logs_and_counts(setup, caplog, tmp_path):
    caplog.set_level(logging.INFO)
    audit = tmp_path / "audit.jsonl"
    addon, tctx = setup(exifguard_audit_log=str(audit))
    f = flow(path="/api/upload?sig=SECRET")
    await run(addon, tctx, f)
    assert f.response is None
    assert CLEAN in f.request.content and DIRTY not in f.request.content
    assert f.request.headers["content-md5"] == "new-md5"
    assert f.request.headers["content-length"] == str(len(f.request.content))
    assert addon.stats.stripped == 1 and addon.stats.uploads_checked == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("exifguard: claude.ai")]
    assert len(lines) == 1 and "removed location (GPS), device (Make)" in lines[0] and "48.8" not in lines[0]
    assert stat.S_IMODE(os.stat(audit).st_mode) == 0o600
    rec = json.loads(audit.read_text())
    assert rec["action"] == "stripped" and rec["path"] == "/api/upload" and "SECRET" not in audit.read_text()
    assert "IMG_1" not in audit.read_text()


@pytest.mark.parametrize("host,headers,watched", [
    ("claude.ai", (), True),
    ("files.oaiusercontent.com", (), True),
    ("example.com", (), False),
    ("chatgpt.com", (), False),
    ("acct.blob.core.windows.net", (), False),
    ("acct.blob.core.windows.net", (("origin", "https://chat.mistral.ai"),), True),
    ("api.cloudinary.com", (("referer", "https://www.perplexity.ai/"),), True),
    ("api.cloudinary.com", (("origin", "https://shop.example"),), False),
])
async def test_candidate_classification(setup, host, headers, watched):
    rw = FakeRewrite()
    # shared storage is decrypted only with its opt-in service; then only from an AI app
    addon, tctx = setup(rw, exifguard_hosts=["service:azure-blob", "service:perplexity-cloudinary"])
    f = flow(host=host, headers=headers)
    await run(addon, tctx, f)
    assert ("exifguard" in f.metadata) is watched
    assert (DIRTY in f.request.content) is (not watched)
    assert len(rw.calls) == int(watched)
    assert addon.stats.requests_seen == 1


async def test_user_hosts_option_and_removal(setup):
    addon, tctx = setup(exifguard_hosts=["*.example.org"], exifguard_hosts_remove=["claude.ai"])
    f1, f2 = flow(host="up.example.org"), flow(host="claude.ai")
    await run(addon, tctx, f1)
    await run(addon, tctx, f2)
    assert DIRTY not in f1.request.content and DIRTY in f2.request.content


async def test_cors_preflight_untouched(setup):
    rw = FakeRewrite()
    addon, tctx = setup(rw)
    f = flow(method="OPTIONS")
    before = f.request.raw_content
    await run(addon, tctx, f)
    assert rw.calls == [] and f.request.raw_content == before and f.response is None


async def test_stream_large_bodies_is_refused():
    from mitmproxy.addons.proxyserver import Proxyserver
    addon = Exifguard(FakeRewrite())
    tctx = taddons.context(Proxyserver(), addon)
    with pytest.raises(exceptions.OptionsError, match="stream_large_bodies"):
        tctx.configure(addon, stream_large_bodies="1m")
    assert not tctx.options.stream_large_bodies  # rolled back


async def test_streamed_watched_upload_is_killed(setup, caplog):
    addon, tctx = setup()
    f = flow()
    f.request.stream = True
    addon.requestheaders(f)
    assert f.error is not None and f.error.msg == f.error.KILLED_MESSAGE
    assert "stream" in caplog.text and addon.stats.killed == 1
    # unwatched streamed flows are none of our business
    g = flow(host="example.com")
    g.request.stream = True
    addon.requestheaders(g)
    assert g.error is None


async def test_watched_upload_without_buffered_body_is_killed_with_error(setup, caplog):
    addon, tctx = setup()
    f = flow()
    addon.requestheaders(f)
    f.request.raw_content = None
    with caplog.at_level(logging.ERROR):
        await addon.request(f)
    assert f.error is not None and f.error.msg == f.error.KILLED_MESSAGE
    assert any(r.levelno == logging.ERROR and "leaked" in r.getMessage() for r in caplog.records)


async def test_every_response_is_streamed():
    s = StreamResponses()
    for host in ("claude.ai", "example.com"):
        f = tflow.tflow(resp=True)
        f.request.host = host
        s.responseheaders(f)
        assert f.response.stream is True


async def test_block_mode_answers_403(setup):
    rw = FakeRewrite()
    addon, tctx = setup(rw, exifguard_mode="block")
    f = flow()
    await run(addon, tctx, f)
    assert f.response.status_code == 403
    assert f.response.text.startswith("exifguard blocked this upload:")
    assert f.response.headers["content-type"].startswith("text/plain")
    assert addon.stats.blocked == 1


async def test_audit_mode_forwards_byte_identical(setup, caplog):
    caplog.set_level(logging.INFO)
    addon, tctx = setup(exifguard_mode="audit")
    f = flow()
    before = f.request.raw_content
    await run(addon, tctx, f)
    assert f.response is None and f.request.raw_content == before and "content-md5" not in f.request.headers
    assert addon.stats.audit == 1 and "would remove location" in caplog.text


async def test_on_error_block_answers_422(setup, caplog):
    addon, tctx = setup(FakeRewrite(error="JPEG: Exif segment is truncated"))
    f = flow()
    await run(addon, tctx, f)
    assert f.response.status_code == 422
    assert "exifguard blocked this upload: JPEG: Exif segment is truncated" in f.response.text
    assert addon.stats.blocked == 1 and "BLOCKED" in caplog.text


async def test_on_error_pass_forwards_and_warns(setup, caplog):
    addon, tctx = setup(FakeRewrite(error="JPEG: Exif segment is truncated"), exifguard_on_error="pass")
    f = flow()
    before = f.request.raw_content
    with caplog.at_level(logging.WARNING):
        await run(addon, tctx, f)
    assert f.response is None and f.request.raw_content == before
    assert addon.stats.passed == 1
    assert any(r.levelno == logging.WARNING and "WITHOUT cleaning" in r.getMessage() for r in caplog.records)


async def test_blocker_blocks_by_default_and_passes_original_on_pass(setup):
    addon, tctx = setup(FakeRewrite(blockers=("body hash covered by AWS SigV4 signature",)))
    f = flow()
    await run(addon, tctx, f)
    assert f.response.status_code == 422 and "SigV4" in f.response.text
    addon2, tctx2 = setup(FakeRewrite(blockers=("signed",)), exifguard_on_error="pass")
    g = flow()
    before = g.request.raw_content
    await run(addon2, tctx2, g)
    assert g.response is None and g.request.raw_content == before and addon2.stats.passed == 1


async def test_internal_failure_fails_closed(setup):
    addon, tctx = setup(FakeRewrite(raises=True))
    f = flow()
    await run(addon, tctx, f)
    assert f.response.status_code == 422 and "internal error" in f.response.text


async def test_failure_after_the_rewrite_fails_closed(setup):
    """Regression: an exception while applying the policy (here a malformed finding) used to
    escape the hook; mitmproxy logs hook errors and forwards the flow with its original body."""
    def broken(method, url, headers, body, options):
        return RequestRewrite(body, {}, (object(),), ())
    addon, tctx = setup(broken)
    f = flow()
    await run(addon, tctx, f)
    assert f.response is not None and f.response.status_code == 422
    assert "internal error" in f.response.text


async def test_failure_while_classifying_kills_the_flow(setup, monkeypatch):
    """Regression: an exception in requestheaders left the flow unwatched, so its body went
    out unchecked."""
    addon, tctx = setup()

    class BrokenHosts:
        def classify(self, *a, **k):
            raise RuntimeError("classify bug")
    monkeypatch.setattr(addon, "hosts", BrokenHosts())
    f = flow()
    await run(addon, tctx, f)
    assert f.error is not None or not f.live
    assert addon.stats.killed == 1


async def test_bad_content_encoding_fails_closed(setup):
    addon, tctx = setup()
    f = flow(headers=(("content-encoding", "gzip"),))
    f.request.raw_content = b"not gzip at all" + DIRTY
    await run(addon, tctx, f)
    assert f.response.status_code == 422


async def test_options_validation(setup):
    addon, tctx = setup()
    with pytest.raises(exceptions.OptionsError):
        tctx.configure(addon, exifguard_hosts=["http://bad/"])
    with pytest.raises(exceptions.OptionsError):
        tctx.configure(addon, exifguard_mode="scrub")
    with pytest.raises(exceptions.OptionsError):
        tctx.configure(addon, exifguard_hosts_remove=["never.listed.example"])


async def test_keep_icc_and_rename_reach_the_carrier_options(setup):
    rw = FakeRewrite()
    addon, tctx = setup(rw, exifguard_keep_icc=False, exifguard_rename_files=True)
    await run(addon, tctx, flow())
    opts = rw.calls[0][4]
    assert opts.scrub.keep_icc is False and opts.rename_files is True and opts.scrub.collect_values is False


async def test_stats_command(setup):
    addon, tctx = setup()
    await run(addon, tctx, flow())
    await run(addon, tctx, flow(host="example.com"))
    text = tctx.master.commands.execute("exifguard.stats")
    assert isinstance(text, str)
    assert "2 requests seen" in text and "stripped 1" in text and "blocked 0" in text


@pytest.mark.parametrize("peer,ok", [("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
                                     ("192.168.1.20", False), ("10.0.0.2", False), ("8.8.8.8", False)])
async def test_non_loopback_clients_refused(setup, peer, ok):
    addon, tctx = setup()
    client = tflow.tclient_conn()
    client.peername = (peer, 50000)
    addon.client_connected(client)
    assert (client.error is None) is ok
    if not ok:
        tctx.configure(addon, exifguard_allow_remote=True)
        c2 = tflow.tclient_conn()
        c2.peername = (peer, 50001)
        addon.client_connected(c2)
        assert c2.error is None
    assert is_loopback("127.0.0.5") and not is_loopback("garbage")


async def test_selftest_route_needs_the_token(setup):
    addon, tctx = setup(exifguard_selftest_token="s3cret")
    f = flow(headers=(("x-exifguard-selftest", "s3cret"), ("x-exifguard-selftest-sink", "4567")))
    await run(addon, tctx, f)
    assert (f.request.scheme, f.request.host, f.request.port) == ("http", "127.0.0.1", 4567)
    assert "x-exifguard-selftest" not in f.request.headers and DIRTY not in f.request.content
    g = flow(headers=(("x-exifguard-selftest", "wrong"), ("x-exifguard-selftest-sink", "4567")))
    await run(addon, tctx, g)
    assert g.request.host == "claude.ai" and "x-exifguard-selftest" not in g.request.headers


def test_make_addons():
    a = make_addons()
    from exifguard.proxy.checkpage import CheckPage
    from exifguard.proxy.notify import Notifier
    # exifguard inspects first; the check page and the notifier see its verdict
    assert [type(x) for x in a] == [Exifguard, CheckPage, Notifier, StreamResponses]


async def test_resumable_upload_state_persists_across_requests(setup):
    """Chunk 2 of a resumable upload is judged by chunk 1 (real carrier layer): a document's
    continuation passes, a photo's continuation is refused (a partial image cannot be cleaned)."""
    from exifguard.carriers import rewrite_request
    addon, tctx = setup(rewrite_request)
    assert addon.uploads is not None

    def chunk(upload_id: str, body: bytes, offset: int, command: str):
        return flow(host="push.clients6.google.com", path=f"/upload/?upload_id={upload_id}&upload_protocol=resumable",
                    body=body, headers=(("x-goog-upload-offset", str(offset)),
                                        ("x-goog-upload-command", command)))

    doc = b"%PDF-1.7\n" + b"x" * 1000
    first = chunk("doc1", doc[:500], 0, "upload")
    await run(addon, tctx, first)
    assert first.response is None
    second = chunk("doc1", doc[500:], 500, "upload, finalize")
    await run(addon, tctx, second)
    assert second.response is None and second.live, "a document's continuation chunk was blocked"

    photo = DIRTY * 40
    p1 = chunk("img1", photo[:300], 0, "upload")
    await run(addon, tctx, p1)
    assert p1.response is not None and p1.response.status_code == 422
    p2 = chunk("img1", photo[300:], 300, "upload, finalize")
    await run(addon, tctx, p2)
    assert p2.response is not None and p2.response.status_code == 422

    unknown = chunk("never-seen", b"y" * 100, 4096, "upload, finalize")
    await run(addon, tctx, unknown)
    assert unknown.response is not None, "a continuation of an upload we never saw must fail closed"


class _LeakyRewrite:
    """Fails with a message quoting private data, as a codec or parser error might."""

    def __call__(self, method, url, headers, body, options):
        raise ValueError("cannot decode b'GPS 52.5200 N, Serial 4242' at offset 17")


async def test_internal_error_log_hides_the_exception_message(setup, caplog):
    addon, tctx = setup(_LeakyRewrite())
    f = flow()
    with caplog.at_level(logging.DEBUG, logger="exifguard"):
        await run(addon, tctx, f)
    assert f.response.status_code == 422
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "ValueError" in text and "test_addon.py" in text
    assert "52.5200" not in text and "4242" not in text


async def test_internal_error_message_logged_when_values_are_opted_in(setup, caplog):
    addon, tctx = setup(_LeakyRewrite(), exifguard_log_values=True)
    f = flow()
    with caplog.at_level(logging.DEBUG, logger="exifguard"):
        await run(addon, tctx, f)
    assert f.response.status_code == 422
    assert "Serial 4242" in caplog.text


async def test_the_verdict_left_on_the_flow_holds_no_file_name_value_or_bytes(setup):
    """flow.metadata is shown by mitmproxy's console and kept in saved flows: the outcome the
    addons after this one read (notifier, check page) carries names and categories only,
    even with exifguard_log_values on."""
    addon, tctx = setup(exifguard_log_values=True)
    f = flow()
    await run(addon, tctx, f)
    watch = f.metadata["exifguard"]
    [seen] = watch.images
    assert seen.action == "stripped" and seen.removed[0].tags == ("GPSLatitude", "Make")
    text = repr(f.metadata)
    assert "48.8" not in text and "IMG_1" not in text and "CANARY" not in text
