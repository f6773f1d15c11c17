"""The service table as data (services.toml): every upload shape reaches a cleaner.

For every request shape in tests/carriers/builders.py the host is classified as an upload
(with the Origin the browser sends), its TLS is decrypted (allow_hosts), the PAC sends it
to exifguard and the CA's name constraints cover it.  Plus: the §9 services, the opt-in
grok-x, label rules, the user services file and its errors, `exifguard hosts`, and the
message `exifguard run` prints when the CA is older than the table.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from carriers.builders import NEW_SHAPES, SHAPES
from exifguard.carriers import declared, hashes
from exifguard.cli import main
from exifguard.proxy import ca, pac
from exifguard.proxy.hosts import (DEFAULT_HOSTS, HostSet, Kind, TableError, describe, load_table,
                                   load_user_services, parse_host_rule)

from .test_pac import evaluate

#: every opt-in service: shapes of shared storage and whole sites are checked with them enabled
OPT_IN = ["service:grok-x", "service:huggingchat", "service:doubao", "service:azure-blob", "service:aws-s3",
          "service:m365-sharepoint", "service:perplexity-cloudinary", "service:kimi-tos", "service:genspark-files"]
ALL = HostSet.build(extra=OPT_IN)


def _shape_request(build):
    """(host, Origin, Referer) of a shape; shapes built before Origins were recorded get their
    service's web origin from the table (what the browser sends for a shared storage host)."""
    s = build(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    h = {k.lower(): v for k, v in s.headers}
    host = urlsplit(s.url).hostname
    origin = h.get("origin")
    entry = ALL.lookup(host)
    if origin is None and entry is not None and entry.kind is Kind.SHARED:
        svc = load_table().get(entry.service_id)
        origin = f"https://www.{svc.origins[0]}" if svc and svc.origins else None
    return host, origin, h.get("referer")


@pytest.mark.parametrize("build", SHAPES, ids=lambda b: b.__name__)
def test_every_shape_is_decrypted_routed_constrained_and_checked(build):
    host, origin, referer = _shape_request(build)
    assert ALL.classify(host, origin, referer) is not None, host
    assert any(re.search(rx, f"{host}:443", re.I) for rx in ALL.allow_hosts()), host
    assert any(host == d or host.endswith("." + d) for d in ALL.domains()), host
    key, cert = ca.build_ca(ALL.domains(), hostname="t")
    info = ca.CAInfo(Path("."), Path("."), Path("."), "t", True, tuple(ALL.domains()), cert.not_valid_after_utc)
    assert info.covers(host)


def test_every_shape_host_goes_to_the_proxy_in_the_pac():
    hosts = [_shape_request(b)[0] for b in SHAPES]
    res = evaluate(pac.pac_text(ALL, "127.0.0.1:8099"), hosts)
    assert set(res.values()) == {"PROXY 127.0.0.1:8099"}, res


SECTION9 = {  # service id -> a host that receives its image bytes (upload-shapes.md §9)
    "qwen": "qwen-webui-prod.oss-accelerate.aliyuncs.com", "sora": "sora.chatgpt.com",
    "notebooklm": "notebooklm.google.com", "zai": "chat.z.ai", "yuanbao": "hunyuan-prod-1258344703.cos.accelerate.myqcloud.com",
    "kimi": "prod-chat-kimi.tos-s3-cn-beijing.volces.com", "genspark": "www.genspark.ai",
    "meta-vibes": "vibes.ai",
}


@pytest.mark.parametrize("sid,host", sorted(SECTION9.items()))
def test_section9_dedicated_hosts_are_checked_without_origin(sid, host):
    m = HostSet.build().classify(host)
    assert m is not None and m.reason == "host" and m.entry.service_id == sid


def test_doubao_shared_bytedance_host_needs_doubao_origin():
    assert HostSet.build().classify("tos-d-x-hl.snssdk.com", origin="https://www.doubao.com") is None  # opt-in
    hs = HostSet.build(extra=["service:doubao"])
    assert hs.classify("tos-d-x-hl.snssdk.com") is None  # other ByteDance apps use it too
    assert hs.classify("tos-d-x-hl.snssdk.com", origin="https://www.douyin.com") is None
    for o in ("https://www.doubao.com", "https://www.dola.com"):
        m = hs.classify("tos-d-x-hl.snssdk.com", origin=o)
        assert m is not None and m.reason == "origin" and m.entry.service_id == "doubao"
    assert hs.classify("tos-other.snssdk.com", referer="https://www.doubao.com/chat/1") is not None
    # only one label matching tos-* directly under snssdk.com
    for other in ("api.snssdk.com", "a.tos-d-x-hl.snssdk.com", "tos-x.snssdk.com.evil.com"):
        assert hs.classify(other, origin="https://www.doubao.com") is None, other


def test_genspark_blob_accounts_are_dedicated_other_blobs_need_an_ai_origin():
    assert HostSet.build().classify("gensparkprod.blob.core.windows.net") is None  # opt-in
    assert "blob.core.windows.net" not in HostSet.build().domains()
    hs = HostSet.build(extra=["service:genspark-files", "service:azure-blob"])
    assert hs.classify("gensparkprod.blob.core.windows.net").entry.service_id == "genspark-files"
    assert hs.classify("mygensparkfiles.blob.core.windows.net").reason == "host"
    assert hs.classify("someone.blob.core.windows.net") is None
    # the Genspark Origin now counts as an AI app for any Azure blob
    assert hs.classify("someone.blob.core.windows.net", origin="https://www.genspark.ai").reason == "origin"
    assert hs.classify("www.genspark.ai").reason == "host" and hs.classify("genspark.ai").reason == "host"


def test_kimi_other_tos_buckets_only_from_kimi():
    assert HostSet.build().classify("new-kimi-bucket.tos-cn-beijing.volces.com", origin="https://www.kimi.com") is None
    hs = HostSet.build(extra=["service:kimi-tos"])
    assert hs.classify("new-kimi-bucket.tos-cn-beijing.volces.com") is None
    assert hs.classify("new-kimi-bucket.tos-cn-beijing.volces.com", origin="https://www.kimi.com") is not None


def test_grok_x_is_opt_in_and_flows_into_every_view():
    default = HostSet.build()
    assert default.classify("x.com") is None
    assert not any(re.search(rx, "x.com:443") for rx in default.allow_hosts())
    assert "x.com" not in default.domains()
    assert evaluate(pac.pac_text(default), ["x.com"])["x.com"] == "DIRECT"
    hs = HostSet.build(extra=["service:grok-x"])
    assert hs.classify("x.com").entry.service_id == "grok-x"
    assert hs.classify("api.x.com") is None  # exactly x.com, where attachment.json is posted
    assert "x.com" in hs.domains()
    assert evaluate(pac.pac_text(hs), ["x.com"])["x.com"] == "PROXY 127.0.0.1:8080"
    with pytest.raises(ValueError, match="unknown service 'grok-y'.*grok-x"):
        HostSet.build(extra=["service:grok-y"])


def test_removing_a_whole_service():
    hs = HostSet.build(remove=["service:genspark"])
    assert hs.classify("www.genspark.ai") is None and hs.classify("genspark.ai") is None
    with pytest.raises(ValueError, match="no host of that service"):
        HostSet.build(remove=["service:nothere"])


def test_table_is_versioned_and_every_service_has_evidence_and_confidence():
    t = load_table()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(\.\d+)?", t.version)
    assert len({s.id for s in t.services}) == len(t.services)
    for s in t.services:
        assert re.fullmatch(r"\d{4}(-\d{2})?", s.evidence), s.id
        assert s.confidence and s.why and s.hosts, s.id
    assert {f"service:{s.id}" for s in t.services if s.opt_in} == set(OPT_IN)
    assert len(DEFAULT_HOSTS) == sum(len(s.hosts) for s in t.services if not s.opt_in)


def test_label_rules_parse_and_reject_bad_globs():
    assert parse_host_rule("tos-*.snssdk.com") == ("snssdk.com", True, "tos-*")
    assert parse_host_rule("*genspark*.blob.core.windows.net") == ("blob.core.windows.net", True, "*genspark*")
    assert parse_host_rule("*.example.com") == ("example.com", True, None)
    for bad in ("a.*.com", "**.com", "tos-*.com.*", "*", "tos_*.x.com", "tos-*.localhost"):
        with pytest.raises(ValueError):
            parse_host_rule(bad)


def test_pac_label_patterns_match_one_label_only():
    hs = HostSet.build(extra=["service:doubao", "service:genspark-files"])
    res = evaluate(pac.pac_text(hs), ["tos-d-x-hl.snssdk.com", "api.snssdk.com", "a.tos-x.snssdk.com",
                                      "abcgensparkdef.blob.core.windows.net"])
    assert res["tos-d-x-hl.snssdk.com"] == "PROXY 127.0.0.1:8080"
    assert res["api.snssdk.com"] == "DIRECT" and res["a.tos-x.snssdk.com"] == "DIRECT"
    assert res["abcgensparkdef.blob.core.windows.net"] == "PROXY 127.0.0.1:8080"


# ---- user services file ------------------------------------------------------------------
GOOD = """
[[service]]
id = "my-ai"
name = "My AI"
origins = ["chat.my-ai.example"]
[[service.hosts]]
host = "uploads.my-ai.example"
[[service.hosts]]
host = "*.storage-cdn.example"
kind = "shared"
"""


def test_user_services_file_adds_hosts_and_origins(tmp_path):
    f = tmp_path / "services.toml"
    f.write_text(GOOD)
    hs = HostSet.build(extra=[f"file:{f}"])
    assert hs.classify("uploads.my-ai.example").reason == "host"
    assert hs.classify("b1.storage-cdn.example") is None
    assert hs.classify("b1.storage-cdn.example", origin="https://chat.my-ai.example").reason == "origin"
    assert "storage-cdn.example" in hs.domains() and "my-ai.example" not in hs.domains()
    assert "uploads.my-ai.example" in hs.domains()
    rows = {r["host"]: r for r in describe(hs)["hosts"]}
    assert rows["uploads.my-ai.example"]["source"] == str(f)


@pytest.mark.parametrize("text,msg", [
    ("[[service]]\nname = 'x'\n[[service.hosts]]\nhost = 'a.example'\n", "needs id"),
    ("[[service]]\nid = 'x'\n", "needs at least one host"),
    ("[[service]]\nid = 'x'\n[[service.hosts]]\nhost = 'http://a.example/'\n", "invalid host"),
    ("[[service]]\nid = 'x'\n[[service.hosts]]\nhost = 'a.example'\nkind = 'always'\n", "kind must be"),
    ("[[service]]\nid = 'x'\n[[service.hosts]]\nhost = '*.cdn.example'\nkind = 'shared'\n", "give the service its web origins"),
    ("[[service]]\nid = 'claude'\n[[service.hosts]]\nhost = 'a.example'\n", "built-in service id"),
    ("[[service]]\nid = 'x'\nhost = 'a.example'\n", "unknown key"),
    ("[[service]]\nid = 'x'\norigins = ['not a host']\n[[service.hosts]]\nhost = 'a.example'\n", "not a host name"),
    ("[[service]\nid = 'x'\n", "not valid TOML"),
    ("hosts = ['a.example']\n", "unknown top-level key"),
])
def test_user_services_file_errors_name_the_problem(tmp_path, text, msg):
    f = tmp_path / "s.toml"
    f.write_text(text)
    with pytest.raises(TableError, match=msg) as e:
        load_user_services(f)
    assert str(f) in str(e.value)
    with pytest.raises(ValueError):
        HostSet.build(extra=[f"file:{f}"])


def test_missing_user_file_is_an_error(tmp_path):
    with pytest.raises(TableError, match="does not exist"):
        HostSet.build(extra=[f"file:{tmp_path / 'nope.toml'}"])


# ---- exifguard hosts -----------------------------------------------------------------------
def test_hosts_json_lists_every_decrypted_host_with_service_and_reason(tmp_path, capsys):
    assert main(["hosts", "--json", "--certs", str(tmp_path / "c")]) == 0
    d = json.loads(capsys.readouterr().out)
    hs = HostSet.build()
    assert sorted(r["host"] for r in d["hosts"]) == sorted(e.spec for e in hs.entries)
    for r in d["hosts"]:
        assert r["service"] and r["why"] and r["kind"] in ("dedicated", "shared") and r["evidence"]
    assert d["ca_domains"] == hs.domains()
    assert [f"service:{o['id']}" for o in d["opt_in"]] == OPT_IN
    assert not any(o["enabled"] for o in d["opt_in"])


def test_hosts_text_with_opt_in_and_user_file(tmp_path, capsys):
    certs = tmp_path / "c"
    certs.mkdir()
    (certs / "services.toml").write_text(GOOD)  # read without a flag
    assert main(["hosts", "--certs", str(certs), "--add-service", "grok-x"]) == 0
    out = capsys.readouterr().out
    assert "x.com" in out and "Grok on X" in out and "uploads.my-ai.example" in out
    off = out.split("off by default", 1)[1]
    assert "grok-x" not in off and "huggingchat" in off  # enabled ones are not listed as off


def test_hosts_names_what_an_older_ca_does_not_cover(tmp_path, capsys):
    certs = tmp_path / "c"
    old = HostSet.build(remove=["chat.z.ai", "service:genspark"])
    ca.create_ca(certs, old.domains(), hostname="t")
    assert main(["hosts", "--certs", str(certs), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d["ca"]["hosts_not_covered"]) == {"chat.z.ai", "genspark.ai", "www.genspark.ai"}


# ---- run's message when the CA is older than the table ------------------------------------
def test_run_message_names_left_out_hosts_and_one_command(tmp_path):
    from exifguard.cli import run
    from exifguard.cli.locations import command_prefix
    hs = HostSet.build(extra=["service:grok-x"])
    left = hs.uncovered(HostSet.build().domains())
    assert [e.spec for e in left] == ["x.com"]
    plan = run.Plan([], {}, ["service:grok-x", "up.example.org"], ["poe.com"], None, 1, "", None, None)
    msg = run.ca_outdated_message(left, command_prefix(), tmp_path, True, plan)
    assert "x.com (Grok on X)" in msg and "fail" in msg
    cmd = msg.strip().splitlines()[-1].strip()
    assert cmd == (f"{command_prefix()} cert reissue --certs {tmp_path} --add-service grok-x "
                   "--add-host up.example.org --remove-host poe.com")


# ---- declared sizes and hashes of the new shapes -------------------------------------------
def test_content_crc32_is_recomputed_in_the_spelling_sent():
    old, new = b"old body" * 10, b"new body" * 10
    c_old, c_new = zlib.crc32(old), zlib.crc32(new)
    for sent, want in [(f"{c_old:08x}", f"{c_new:08x}"), (f"{c_old:08X}", f"{c_new:08X}"),
                       (str(c_old), str(c_new)), (f"0x{c_old:x}", f"0x{c_new:x}")]:
        hs, blockers = hashes.recompute("https://tos-a.snssdk.com/upload/v1/x", [("Content-CRC32", sent)], old, new)
        assert blockers == [] and hs == {"Content-CRC32": want}, sent
    hs, blockers = hashes.recompute("https://h/x", [("content-crc32", "Ignore")], old, new)
    assert hs == {} and blockers == []
    hs, blockers = hashes.recompute("https://h/x", [("content-crc32", "00000000")], old, new)
    assert hs == {} and blockers and "content-crc32" in blockers[0]


@pytest.mark.parametrize("url,part", [
    ("https://tos-d-x-hl.snssdk.com/upload/v1/a?uploadid=u1&part_number=1&phase=transfer", 1),
    ("https://tos-d-x-hl.snssdk.com/upload/v1/a?uploadid=u1&part_number=3&phase=transfer", 3),
    ("https://b.oss-accelerate.aliyuncs.com/k?partNumber=2&uploadId=abc", 2),
    ("https://tos-x.snssdk.com/obj?partNumber=1&uploadID=abc", 1),
    ("https://files.oaiusercontent.com/raw?sig=x", None),
    ("https://x.example/?partNumber=1", None),  # no upload id: not a part upload
])
def test_url_numbered_parts_are_chunks(url, part):
    assert declared.url_part(url) == part
    info = declared.chunk_info([], 100, url)
    assert info.partial is (part is not None)


def test_shape_hosts_cover_all_new_services():
    """Each §9 service has at least one request shape in the builders."""
    shape_hosts = {_shape_request(b)[0] for b in NEW_SHAPES}
    for sid in ("qwen", "sora", "notebooklm", "zai", "doubao", "yuanbao", "kimi", "genspark", "meta-vibes",
                "grok-x"):
        svc = load_table().get(sid)
        assert any(any(e.matches(h) for e in svc.entries()) for h in shape_hosts), sid
    assert all(e.kind in (Kind.DEDICATED, Kind.SHARED) for e in ALL.entries)


def _url_reaches_chunk_info() -> bool:
    import inspect

    import exifguard.carriers as carriers
    return "chunk_info(headers, len(body), url)" in inspect.getsource(carriers)


@pytest.mark.xfail(not _url_reaches_chunk_info(), strict=True,
                   reason="carriers/__init__.py (lead) must pass the URL: declared.chunk_info(headers, len(body), url)")
def test_doubao_chunked_part_with_an_image_is_refused_not_half_cleaned():
    from carriers.helpers import corpus_image
    from exifguard.carriers import rewrite_request
    img = corpus_image("JPEG")
    head = img[:len(img) // 2]  # the first part: the engine alone would clean its head (and miss the tail)
    whole = rewrite_request("POST", "https://tos-d-x-hl.snssdk.com/upload/v1/x", [], head)
    assert whole.changed and not whole.has_errors  # what happens without the part rule
    url = "https://tos-d-x-hl.snssdk.com/upload/v1/tos-cn-i-x/abc?uploadid=u1&part_number=1&phase=transfer"
    rw = rewrite_request("POST", url, [("Content-CRC32", f"{zlib.crc32(head):08x}")], head)
    assert rw.has_errors and not rw.changed
    merge = rewrite_request("POST", url.replace("phase=transfer", "phase=finish"), [], b"1:0a1b2c3d,2:4e5f6071")
    assert not merge.images and not merge.changed


def test_cert_reissue_dry_run_changes_nothing_and_names_the_steps(tmp_path, capsys):
    certs = tmp_path / "c"
    old = ca.create_ca(certs, HostSet.build(remove=["chat.z.ai"]).domains(), hostname="t")
    pem = old.cert_path.read_bytes()
    assert main(["cert", "reissue", "--certs", str(certs), "--dry-run", "--nssdb", str(tmp_path / "db")]) == 0
    out = capsys.readouterr().out
    assert f"remove the old CA '{old.subject}'" in out and "certutil -D" in out and "certutil -A" in out
    assert "chat.z.ai" in out
    assert ca.load_ca(certs).cert_path.read_bytes() == pem


def test_cert_reissue_refuses_while_exifguard_runs_with_the_ca(tmp_path, capsys):
    from exifguard.cli import instance
    certs = tmp_path / "c"
    old = ca.create_ca(certs, HostSet.build(remove=["chat.z.ai"]).domains(), hostname="t")
    lock = instance.InstanceLock(certs / instance.LOCK_NAME)
    assert lock.acquire() is None
    try:
        # the lock is per process; a child process is what a second terminal would be
        import subprocess
        import sys
        r = subprocess.run([sys.executable, "-m", "exifguard.cli", "cert", "reissue", "--certs", str(certs),
                            "--nssdb", str(tmp_path / "db")], capture_output=True, text=True, timeout=120)
    finally:
        lock.release()
    assert r.returncode == 1 and "stop it" in r.stderr, r.stdout + r.stderr
    assert ca.load_ca(certs).cert_path.read_bytes() == old.cert_path.read_bytes()
