import re

import pytest

from exifguard.proxy.hosts import DEFAULT_HOSTS, HostSet, Kind, normalise_host, parse_host_spec

# every host upload-shapes.md §1/§8 names as receiving image bytes
UPLOAD_HOSTS = [
    "files.oaiusercontent.com", "sdmntprwestus.oaiusercontent.com", "claude.ai", "push.clients6.google.com",
    "content-push.googleapis.com", "copilot.microsoft.com", "substrate.office.com",
    "substrate.svc.cloud.microsoft", "ppl-ai-file-upload.s3.amazonaws.com", "chat.deepseek.com", "grok.com",
    "chat.mistral.ai", "mistralaichatupprodswe.blob.core.windows.net", "rupload.meta.ai", "poe.com",
    "api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com",
    "api.mistral.ai", "api.x.ai",
]
SHARED = ["acct.blob.core.windows.net", "tenant.sharepoint.com", "api.cloudinary.com", "bucket.s3.amazonaws.com"]
#: shared storage (and whole sites) that are only decrypted when their service is added
OPT_IN_SERVICES = ["service:azure-blob", "service:m365-sharepoint", "service:perplexity-cloudinary",
                   "service:aws-s3"]
NOT_DECRYPTED_BY_DEFAULT = SHARED + ["huggingface.co", "www.huggingface.co", "bucket.tos-cn-beijing.volces.com",
                                     "tos-hl-x.snssdk.com", "x.com"]


@pytest.mark.parametrize("host", UPLOAD_HOSTS)
def test_every_upload_host_is_watched_without_origin(host):
    m = HostSet.build().classify(host)
    assert m is not None and m.reason == "host"


@pytest.mark.parametrize("host", SHARED)
def test_shared_storage_needs_ai_origin(host):
    hs = HostSet.build(extra=OPT_IN_SERVICES)
    assert hs.classify(host) is None
    assert hs.classify(host, origin="https://example.com") is None
    assert hs.classify(host, origin="https://chat.mistral.ai").reason == "origin"
    assert hs.classify(host, referer="https://www.perplexity.ai/search/x?q=1").reason == "origin"
    assert hs.classify(host, origin="https://evilperplexity.ai") is None


@pytest.mark.parametrize("host", NOT_DECRYPTED_BY_DEFAULT)
def test_shared_storage_and_whole_sites_are_not_decrypted_by_default(host):
    """Issue 12 item 6: S3, Azure Blob, SharePoint, Cloudinary, all of huggingface.co (and the
    like) are tunnelled untouched unless their service is added: not matched even from an AI
    app, not in allow_hosts, not in the PAC, not in the CA's name constraints."""
    hs = HostSet.build()
    assert hs.classify(host) is None
    assert hs.classify(host, origin="https://www.perplexity.ai", referer="https://huggingface.co/chat") is None
    assert not any(re.search(p, f"{host}:443", re.I) for p in hs.allow_hosts())
    assert not any(host == d or host.endswith("." + d) for d in hs.domains())
    assert not any(host == d or (sub and host.endswith("." + d)) for d, sub in hs.pac_entries())


@pytest.mark.parametrize("host", ["chatgpt.com", "example.com", "evilclaude.ai", "claude.ai.evil.com",
                                  "notoaiusercontent.com", "bank.example", "google.com", "gemini.google.com"])
def test_other_hosts_are_not_watched(host):
    assert HostSet.build().classify(host) is None


def test_host_normalisation():
    hs = HostSet.build()
    assert hs.classify("Claude.AI.:443") is not None
    assert normalise_host("[::1]:8080") == "::1"
    assert normalise_host("FILES.oaiusercontent.com.") == "files.oaiusercontent.com"


def test_allow_hosts_regexes_are_anchored_and_match_only_their_hosts():
    rx = [re.compile(p, re.I) for p in HostSet.build().allow_hosts()]
    assert len(rx) == len(DEFAULT_HOSTS)
    for p in HostSet.build().allow_hosts():
        assert p.startswith("^") and p.endswith(":443$")

    def allowed(hp):
        return any(r.search(hp) for r in rx)

    for h in UPLOAD_HOSTS:
        assert allowed(f"{h}:443"), h
    for h in SHARED:
        assert not allowed(f"{h}:443"), h
    for hp in ["evilclaude.ai:443", "claude.ai.evil.com:443", "claude.ai:8443", "chatgpt.com:443",
               "xoaiusercontent.com:443", "example.com:443", "api.openai.com:80"]:
        assert not allowed(hp), hp
    assert "^(.+\\.)?oaiusercontent\\.com:443$" in HostSet.build().allow_hosts()
    assert "^claude\\.ai:443$" in HostSet.build().allow_hosts()


def test_user_additions_and_removals_flow_into_every_view():
    hs = HostSet.build(extra=["*.example.org", "upload.test-ai.net"], remove=["poe.com"])
    assert hs.classify("a.b.example.org") and hs.classify("example.org") and hs.classify("upload.test-ai.net")
    assert hs.classify("poe.com") is None
    assert not any("poe" in p for p in hs.allow_hosts())
    assert "^(.+\\.)?example\\.org:443$" in hs.allow_hosts()
    assert ("example.org", True) in hs.pac_entries()
    assert "example.org" in hs.domains() and "poe.com" not in hs.domains()


@pytest.mark.parametrize("bad", ["", "*", "http://x.com", "x.com/path", "x.com:443", "a..com", "localhost",
                                 "*.*.com", "-bad.com"])
def test_bad_user_hosts_raise_valueerror(bad):
    with pytest.raises(ValueError):
        parse_host_spec(bad)


def test_removing_unknown_host_is_an_error():
    with pytest.raises(ValueError, match="not in the host list"):
        HostSet.build(remove=["nothere.example"])


def test_ca_domains_cover_every_entry_minimally():
    doms = HostSet.build().domains()
    for e in DEFAULT_HOSTS:
        assert any(e.domain == d or e.domain.endswith("." + d) for d in doms)
    # shared storage is not decrypted by default: mistral's own storage host is named
    # exactly, not covered by all of blob.core.windows.net
    assert "mistralaichatupprodswe.blob.core.windows.net" in doms
    assert not any(d.endswith(("blob.core.windows.net", "sharepoint.com", "amazonaws.com", "cloudinary.com",
                               "huggingface.co", "volces.com", "snssdk.com"))
                   and d not in ("mistralaichatupprodswe.blob.core.windows.net", "ppl-ai-file-upload.s3.amazonaws.com",
                                 "prod-chat-kimi.tos-s3-cn-beijing.volces.com")
                   and "genspark" not in d for d in doms), doms
    assert all(e.kind in (Kind.DEDICATED, Kind.SHARED) for e in DEFAULT_HOSTS)
