"""Images in places no supported upload shape puts them must never pass silently.

Regression tests for a review finding: base64 images outside a whole JSON string value
/ form field / part (a JSON key, JSON inside a JSON string, a data URL inside HTML text,
an XML body, JSON Lines, a multipart preamble or epilogue), and base64 JPEGs whose first
segment is not APP0/APP1 (COM, APP13, DQT), came back from `rewrite_request` with
their metadata and *no finding at all*, so the proxy forwarded them.  Each must now
either be cleaned or produce an error finding (which the policy blocks).
"""

from __future__ import annotations

import base64
import io
import json
import struct
from urllib.parse import quote

import pytest
from PIL import Image
from support import canary

from exifguard.carriers import rewrite_request
from exifguard.proxy import policy

MARK = b"RESIDUALcanary42"


def _jpeg(first: bytes) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, "JPEG")
    d = buf.getvalue()
    seg = first + struct.pack(">H", 2 + 4 * len(MARK)) + MARK * 4
    return d[:2] + seg + d[2:]


JPEG_COM = _jpeg(b"\xff\xfe")
JPEG_APP13 = _jpeg(b"\xff\xed")
B64 = base64.b64encode(JPEG_COM).decode()


def _mp(payload: bytes, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    return (preamble + b"--BB\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n" + payload
            + b"\r\n--BB--\r\n" + epilogue)


CASES = {
    "json key": (json.dumps({B64: 1}).encode(), "application/json"),
    "json inside json string": (json.dumps({"p": json.dumps({"a": B64})}).encode(), "application/json"),
    "data url inside html text": (json.dumps({"text": f'<img src="data:image/jpeg;base64,{B64}">'}).encode(),
                                  "application/json"),
    "data url with space": (json.dumps({"u": "data:image/jpeg; base64," + B64}).encode(), "application/json"),
    "prefixed base64": (json.dumps({"a": "base64:" + B64}).encode(), "application/json"),
    "escaped slashes in nested json": (json.dumps({"p": json.dumps({"a": B64})}).replace("/", "\\/").encode(),
                                       "application/json"),
    "json lines": (b'{"a": 1}\n' + json.dumps({"a": B64}).encode(), "application/x-ndjson"),
    "xml": (b"<x><img>" + B64.encode() + b"</img></x>", "application/xml"),
    "form field holding json": (b"x=1&data=" + quote(json.dumps({"a": B64})).encode(),
                                "application/x-www-form-urlencoded"),
    "multipart preamble": (_mp(b"x", preamble=JPEG_COM + b"\r\n"), "multipart/form-data; boundary=BB"),
    "multipart epilogue": (_mp(b"x", epilogue=B64.encode()), "multipart/form-data; boundary=BB"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hidden_base64_image_is_never_forwarded_silently(name: str) -> None:
    body, ctype = CASES[name]
    assert canary.find(body, MARK), "fixture must carry the canary"
    r = rewrite_request("POST", "https://claude.ai/api/x", [("Content-Type", ctype)], body)
    if canary.find(r.body, MARK):
        assert r.images and any(i.error for i in r.images), f"{name}: canary left without a finding"
        states = [policy.ImageState(ok=i.ok, error=i.error) for i in r.images]
        d = policy.decide(policy.Mode.STRIP, policy.OnError.BLOCK, states, r.blockers)
        assert d.outcome is policy.Outcome.RESPOND


@pytest.mark.parametrize("img", [JPEG_COM, JPEG_APP13], ids=["COM first", "APP13 first"])
def test_unparseable_body_with_base64_jpeg_not_starting_with_app0_is_flagged(img: bytes) -> None:
    body = b'{"a": "' + base64.b64encode(img) + b'", '  # truncated JSON: cannot be parsed
    r = rewrite_request("POST", "https://claude.ai/api/x", [("Content-Type", "application/json")], body)
    assert r.images and r.images[0].error, "unparseable body holding a base64 JPEG must be an error finding"


def test_text_that_only_mentions_data_urls_is_not_blocked() -> None:
    body = json.dumps({"text": 'use "data:image/png;base64," + btoa(x) and /9j/ is the JPEG prefix; '
                               "iVBORw0KGgo starts PNGs"}).encode()
    r = rewrite_request("POST", "https://claude.ai/api/x", [("Content-Type", "application/json")], body)
    assert r.images == () and r.body == body


def test_plain_json_base64_image_still_cleaned_not_flagged() -> None:
    body = json.dumps({"source": {"data": B64}}).encode()
    r = rewrite_request("POST", "https://api.anthropic.com/v1/messages",
                        [("Content-Type", "application/json")], body)
    assert len(r.images) == 1 and r.images[0].ok
    assert not canary.find(r.body, MARK) and len(r.body) == len(body)
