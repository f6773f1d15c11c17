"""Hypothesis: bodies without images round-trip byte-identical; an embedded canary never survives."""

from __future__ import annotations

import base64
import io
import json
from urllib.parse import quote

import piexif
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from carriers.builders import field_part, file_part, multipart
from carriers.helpers import decode_span
from exifguard import sniff
from exifguard.carriers import CarrierOptions, rewrite_request
from exifguard.carriers.scan import signature_in
from support import canary

MARK = b"CANARY-7f3a9c"
OPTS = CarrierOptions(uploads=None)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def canary_jpeg() -> bytes:
    buf = io.BytesIO()
    exif = piexif.dump({"0th": {piexif.ImageIFD.Artist: MARK, piexif.ImageIFD.Make: MARK},
                        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N",
                                piexif.GPSIFD.GPSLatitude: ((52, 1), (31, 1), (0, 1))}})
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "JPEG", exif=exif, comment=MARK)
    return buf.getvalue()


CANARY = canary_jpeg()
assert canary.find(CANARY, MARK)

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=25)
dump_style = st.sampled_from([{}, {"indent": 2}, {"ensure_ascii": False}, {"separators": (",", ":")}])


def _no_image_payload(b: bytes) -> bool:
    return sniff(b) is None


@SETTINGS
@given(doc=json_values, style=dump_style)
def test_json_without_images_identical(doc, style) -> None:
    body = json.dumps(doc, **style).encode()
    r = rewrite_request("POST", "https://api.test/v1", {"Content-Type": "application/json"}, body, OPTS)
    assert r.body == body and not r.images and not r.blockers


@SETTINGS
@given(parts=st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), st.binary(max_size=300)),
                      min_size=1, max_size=6),
       boundary=st.from_regex(r"[A-Za-z0-9'()+_,.:=?-]{1,60}", fullmatch=True),
       crlf=st.sampled_from([b"\r\n", b"\n"]), preamble=st.binary(max_size=20), quoted=st.booleans())
def test_multipart_without_images_identical(parts, boundary, crlf, preamble, quoted) -> None:
    for _, payload in parts:
        assume(_no_image_payload(payload) and (b"--" + boundary.encode()) not in payload)
    assume(b"--" + boundary.encode() not in preamble)
    # "without images" by the layer's own (deliberately fail-closed) definition: the
    # preamble holds no raw or base64 image signature either (Hypothesis found b"\xff\n",
    # a bare JPEG XL codestream's signature, and b"R0lGODlh", base64 of "GIF89a")
    assume(_no_image_payload(preamble + crlf) and signature_in(preamble) is None)
    body = multipart([field_part(n, p) for n, p in parts], boundary, crlf=crlf,
                     preamble=preamble + crlf if preamble else b"")
    ct = f'multipart/form-data; boundary="{boundary}"' if quoted else f"multipart/form-data; boundary={boundary}"
    r = rewrite_request("POST", "https://x.test/u", {"Content-Type": ct}, body, OPTS)
    assert r.body == body and not r.images and not r.blockers


@SETTINGS
@given(fields=st.lists(st.tuples(text, text), max_size=8))
def test_form_without_images_identical(fields) -> None:
    body = "&".join(f"{quote(k)}={quote(v)}" for k, v in fields).encode()
    r = rewrite_request("POST", "https://x.test/u", {"Content-Type": "application/x-www-form-urlencoded"}, body, OPTS)
    assert r.body == body and not r.images and not r.blockers


def _assert_no_canary(r, body: bytes) -> None:
    assert r.images and all(f.ok for f in r.images), [f.error for f in r.images]
    assert canary.find(r.body, MARK) == []
    for f in r.images:
        a, b = f.span
        region = r.body[a:b + len(r.body) - len(body)] if len(r.body) != len(body) else r.body[a:b]
        assert canary.find(decode_span(f.carrier, region), MARK) == []


@SETTINGS
@given(doc=st.lists(json_values, max_size=4), where=st.integers(0, 4), as_url=st.booleans(),
       escape_slashes=st.booleans(), style=dump_style)
def test_json_with_canary_image_is_clean(doc, where, as_url, escape_slashes, style) -> None:
    b64 = base64.b64encode(CANARY).decode()
    value = "data:image/jpeg;base64," + b64 if as_url else b64
    doc = list(doc)
    doc.insert(min(where, len(doc)), {"source": {"data": value}})
    body = json.dumps({"messages": doc}, **style)
    if escape_slashes:
        body = body.replace("/", "\\/")
    body = body.encode()
    r = rewrite_request("POST", "https://api.test/v1", {"Content-Type": "application/json"}, body, OPTS)
    _assert_no_canary(r, body)
    if not escape_slashes:  # '\/' costs 2 bytes and the count of '/' in the new base64 varies
        assert len(r.body) == len(body)


@SETTINGS
@given(before=st.lists(st.binary(max_size=100), max_size=3), after=st.lists(st.binary(max_size=100), max_size=3),
       as_text=st.booleans(), crlf=st.sampled_from([b"\r\n", b"\n"]))
def test_multipart_with_canary_image_is_clean(before, after, as_text, crlf) -> None:
    for p in before + after:
        assume(_no_image_payload(p) and b"--BND" not in p)
    img_part = ((f'Content-Disposition: form-data; name="files"; filename="base64;x.jpg"\nContent-Type: image/jpeg',
                 base64.b64encode(CANARY)) if as_text else file_part("file", CANARY))
    parts = [field_part(f"b{i}", p) for i, p in enumerate(before)] + [img_part] + \
            [field_part(f"a{i}", p) for i, p in enumerate(after)]
    body = multipart(parts, "BND", crlf=crlf)
    r = rewrite_request("POST", "https://x.test/u", {"Content-Type": "multipart/form-data; boundary=BND"}, body, OPTS)
    _assert_no_canary(r, body)
    # every non-image part byte-identical
    a, b = r.images[0].span
    assert r.body[:a] == body[:a] and r.body[b:] == body[b:]


@SETTINGS
@given(fields=st.lists(st.tuples(st.from_regex(r"[a-z]{1,8}", fullmatch=True), text), max_size=4),
       where=st.integers(0, 4))
def test_form_with_canary_image_is_clean(fields, where) -> None:
    items = [f"{quote(k)}={quote(v)}" for k, v in fields]
    items.insert(min(where, len(items)), "FileBase64=" + quote("data:image/jpeg;base64," +
                                                               base64.b64encode(CANARY).decode(), safe=""))
    body = "&".join(items).encode()
    r = rewrite_request("POST", "https://x.test/u", {"Content-Type": "application/x-www-form-urlencoded"}, body, OPTS)
    _assert_no_canary(r, body)
