"""JSON bodies: in-place string edits, escapes reproduced exactly, bounds, no re-serialisation."""

from __future__ import annotations

import base64
import json

import pytest

from carriers.helpers import assert_outside_spans_equal, corpus_image, decode_span, fake_scrubber, found_spans
from exifguard import scrub
from exifguard.carriers import CarrierOptions, rewrite_request
from exifguard.carriers import jsonbody

FAKE = CarrierOptions(scrubber=fake_scrubber)
TINY = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(200)) + b"\xff\xd9"


def rw(body: bytes, options: CarrierOptions = FAKE):
    return rewrite_request("POST", "https://api.example.test/v1/x", {"Content-Type": "application/json"},
                           body, options)


def test_deep_path_label_and_in_place_edit() -> None:
    b64 = base64.b64encode(TINY).decode()
    body = ('{ "a" : [1, 2.5e3, true, null, {"weird key": [ {"data": "%s"} ]}],\n  "z": "\\u00e9"}' % b64).encode()
    r = rw(body)
    assert [f.carrier for f in r.images] == ['JSON base64 at $.a[4]["weird key"][0].data']
    assert_outside_spans_equal(body, r.body, found_spans(r.images))
    assert base64.b64decode(json.loads(r.body)["a"][4]["weird key"][0]["data"]) == fake_scrubber(TINY, None).data


def test_escaped_slashes_reproduced() -> None:
    text = "data:image/jpeg;base64," + base64.b64encode(TINY * 3).decode()
    body = json.dumps({"url": text}).replace("/", "\\/").encode()   # PHP-style escaping
    assert b"\\/" in body
    r = rw(body)
    assert r.images[0].ok and r.images[0].carrier == "JSON data URL at $.url"
    assert b"/" not in r.body.replace(b"\\/", b"")          # every slash still escaped
    out = json.loads(r.body)["url"]
    assert base64.b64decode(out.split(",", 1)[1]) == fake_scrubber(TINY * 3, None).data


def test_mixed_escaping_is_an_error_not_corruption() -> None:
    text = base64.b64encode(TINY * 3).decode()
    assert text.count("/") >= 2
    i = text.index("/")
    raw = text[:i] + "\\/" + text[i + 1:]                  # one slash escaped, others literal
    body = ('{"data": "%s"}' % raw).encode()
    r = rw(body)
    assert r.body == body and r.has_errors and "exactly" in r.images[0].error


def test_mime_line_wrapped_base64_with_json_newlines() -> None:
    wrapped = base64.encodebytes(TINY * 4).decode()          # 76-column lines ending in \n
    body = json.dumps({"source": {"type": "base64", "data": wrapped}}).encode()
    assert b"\\n" in body
    r = rw(body)
    assert r.images[0].ok and len(r.body) == len(body)
    new = json.loads(r.body)["source"]["data"]
    assert [len(line) for line in new.split("\n")] == [len(line) for line in wrapped.split("\n")]
    assert base64.b64decode(new) == fake_scrubber(TINY * 4, None).data


@pytest.mark.parametrize("enc", ["urlsafe-unpadded", "urlsafe-padded", "std-unpadded"])
def test_alphabet_and_padding_kept(enc: str) -> None:
    data = TINY * 5 + b"\xfb\xff"                            # ensures '-'/'_' or '+'/'/' appear
    s = (base64.urlsafe_b64encode if enc.startswith("urlsafe") else base64.b64encode)(data).decode()
    if enc.endswith("unpadded"):
        s = s.rstrip("=")
    body = json.dumps({"d": s}).encode()
    r = rw(body)
    assert r.images[0].ok and len(r.body) == len(body)
    new = json.loads(r.body)["d"]
    assert new.endswith("=") == s.endswith("=")
    if enc.startswith("urlsafe"):
        assert "+" not in new and "/" not in new
    assert decode_span("JSON", new.encode()) == fake_scrubber(data, None).data


def test_no_image_json_identical_and_non_image_base64_ignored() -> None:
    pdf = base64.b64encode(b"%PDF-1.7\n" + bytes(5000)).decode()
    body = json.dumps({"model": "x", "messages": [{"content": "hi /9j/ there"}], "doc": pdf}).encode()
    r = rw(body)
    assert r.body is body and not r.images and not r.has_errors


def test_invalid_json_with_image_is_error() -> None:
    body = b'{"data": "' + base64.b64encode(TINY) + b'", }'
    r = rw(body)
    assert r.body == body and r.has_errors and "cannot parse JSON" in r.images[0].error


def test_json_depth_bound() -> None:
    body = b"[" * 300 + b'"' + base64.b64encode(TINY) + b'"' + b"]" * 300
    r = rw(body)
    assert r.body == body and r.has_errors
    assert rw(b"[" * 300 + b"1" + b"]" * 300).images == ()


def test_string_count_bound() -> None:
    b64 = base64.b64encode(TINY).decode()
    body = json.dumps({"s": ["x" * 20] * 50 + [b64]}).encode()
    r = rw(body, CarrierOptions(scrubber=fake_scrubber, max_strings=10))
    assert r.has_errors and r.body == body


def test_tokenizer_agrees_with_json_module() -> None:
    doc = {"a": ["x" * 20, {"b": "y" * 17, "c": [1, {"d": "é" * 20}]}], "e": "\"quoted\\string\" long"}
    body = json.dumps(doc, indent=1, ensure_ascii=False).encode()
    strings = [json.loads(b'"' + body[s.start:s.end] + b'"') for s in jsonbody.iter_value_strings(body)]
    assert strings == ["x" * 20, "y" * 17, "é" * 20, "\"quoted\\string\" long"]


def test_real_engine_anthropic_with_escaped_slashes() -> None:
    img = corpus_image("PNG")
    body = json.dumps({"messages": [{"content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": base64.b64encode(img).decode()}}]}]})
    body = body.replace("/", "\\/").encode()
    r = rewrite_request("POST", "https://api.anthropic.com/v1/messages", {"content-type": "application/json"}, body)
    assert r.images[0].ok, r.images[0].error
    assert base64.b64decode(json.loads(r.body)["messages"][0]["content"][0]["source"]["data"]) == scrub(img).data
