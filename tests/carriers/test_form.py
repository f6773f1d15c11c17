"""urlencoded forms: only the image field's value changes; percent-encoding is reproduced."""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl, quote

from carriers.helpers import corpus_image, fake_scrubber
from exifguard import scrub
from exifguard.carriers import CarrierOptions, rewrite_request

FAKE = CarrierOptions(scrubber=fake_scrubber)
TINY = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 2 + b"\xff\xd9"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def url(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def test_lowercase_hex_and_literal_slashes_kept() -> None:
    value = quote(url(TINY), safe="/:;,").replace("%2B", "%2b")
    body = f"a=1&FileBase64={value}&z=%7Bx%7D".encode()
    r = rewrite_request("POST", "https://substrate.office.com/m365Copilot/UploadFile", FORM, body, FAKE)
    assert r.images[0].ok and r.images[0].carrier == "form field 'FileBase64' (data URL)"
    assert r.body.startswith(b"a=1&FileBase64=data:image/jpeg;base64,") and r.body.endswith(b"&z=%7Bx%7D")
    assert b"%2B" not in r.body
    got = dict(parse_qsl(r.body.decode()))["FileBase64"]
    assert base64.b64decode(got.split(",", 1)[1]) == fake_scrubber(TINY, None).data


def test_literal_plus_is_an_error() -> None:
    body = b"FileBase64=" + url(TINY * 3).encode()
    assert b"+" in body
    r = rewrite_request("POST", "https://x.test/", FORM, body, FAKE)
    assert r.body == body and r.has_errors


def test_form_without_image_identical() -> None:
    body = b"scenario=UploadImage&conversationId=abc&text=hello+world%21&q=" + b"A" * 40
    r = rewrite_request("POST", "https://x.test/", FORM, body, FAKE)
    assert r.body is body and not r.images


def test_real_engine_form() -> None:
    img = corpus_image("WEBP")
    body = ("k=v&FileBase64=" + quote("data:image/webp;base64," + base64.b64encode(img).decode(), safe="")).encode()
    r = rewrite_request("POST", "https://substrate.office.com/m365Copilot/UploadFile", FORM, body)
    assert r.images[0].ok
    got = dict(parse_qsl(r.body.decode()))["FileBase64"]
    assert base64.b64decode(got.split(",", 1)[1]) == scrub(img).data
