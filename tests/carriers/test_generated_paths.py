"""Every upload path and service shape, carrying generated photos of every format.

test_shapes.py, test_hashes.py and test_raw.py use real corpus images and skip without the
corpus; these tests make the same checks with the generated photos of tests/support/generated.py,
so a fresh clone still covers every request shape (multipart, raw PUT/POST, JSON base64,
data URL, form field, resumable, every service builder in carriers/builders.py), every format
the engine cleans, the recomputed integrity headers and the fail-closed cases.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import zipfile
import zlib
from functools import lru_cache
from urllib.parse import parse_qsl, quote

import pytest

from carriers.builders import SHAPES, field_part, file_part, multipart
from carriers.helpers import (assert_clean_by_exiftool, assert_outside_spans_equal, decode_span, found_spans,
                              new_regions)
from exifguard import ScrubError, scrub, sniff
from exifguard.carriers import CarrierOptions, rewrite_request
from support import canary, generated

FORMATS = generated.FORMATS


@lru_cache(maxsize=None)
def cleaned(fmt: str) -> bytes:
    return scrub(generated.image(fmt)).data


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("build", SHAPES, ids=lambda b: b.__name__)
def test_shape_with_generated_photo(build, fmt) -> None:
    """Found, cleaned exactly as the engine cleans the file, every other byte unchanged, the
    body's length and every declared size still true, integrity headers recomputed."""
    img = generated.image(fmt)
    shape = build(img)
    if shape.before is not None:
        m, u, h, b = shape.before
        rw0 = rewrite_request(m, u, h, b)
        assert rw0.body == b and not rw0.images and not rw0.blockers and not rw0.changed

    rw = rewrite_request(shape.method, shape.url, shape.headers, shape.body, CarrierOptions())
    assert not rw.blockers, rw.blockers
    assert [f.error for f in rw.images] == [None] * shape.images
    assert rw.changed
    if shape.name != "m365_form":  # percent-encoding: '/' and '+' cost 3 bytes, their count varies
        assert len(rw.body) == len(shape.body), "length-preserving: the body keeps its length"
    regions = new_regions(shape.body, rw.body, found_spans(rw.images))
    expected = cleaned(fmt)
    assert expected != img
    for f, (na, nb) in zip(rw.images, regions):
        assert f.ok and f.size == len(img) and f.format == sniff(img)
        a, b = f.span
        assert decode_span(f.carrier, shape.body[a:b]) == img, "span held the original image"
        out = decode_span(f.carrier, rw.body[na:nb])
        assert out == f.result.data == expected
    assert_outside_spans_equal(shape.body, rw.body, found_spans(rw.images))
    assert canary.find(rw.body, generated.MARKER) == [], "a private value is still in the request"
    for what, value, kind in shape.declared:
        actual = len(rw.body) if kind == "body" else len(expected)
        assert value == actual, f"declared {what} no longer true"
    lower = {k.lower(): v for k, v in rw.set_headers.items()}
    for name in ("content-md5", "x-ms-blob-content-md5"):
        if any(k.lower() == name for k, _ in shape.headers):
            assert lower[name] == b64(hashlib.md5(rw.body).digest())
    if any(k.lower() == "content-crc32" for k, _ in shape.headers):
        assert int(lower["content-crc32"], 10 if shape.name.endswith("decimal") else 16) == zlib.crc32(rw.body)


@pytest.mark.parametrize("build", SHAPES, ids=lambda b: b.__name__)
def test_shape_second_pass_is_stable(build) -> None:
    shape = build(generated.image("JPEG"))
    rw = rewrite_request(shape.method, shape.url, shape.headers, shape.body)
    rw2 = rewrite_request(shape.method, shape.url, shape.headers, rw.body)
    assert len(rw2.images) == shape.images and not rw2.has_errors
    assert rw2.body == rw.body


def test_engine_output_is_clean_by_exiftool() -> None:
    """What every shape above delivers (the engine's output) is clean by ExifTool's account."""
    assert_clean_by_exiftool([(generated.oracle_format(f), cleaned(f)) for f in generated.ORACLE])


# -- raw bodies: the label does not matter, failures are contained -----------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("ctype", ["application/octet-stream", "text/plain", "image/png",
                                   "application/x-www-form-urlencoded;charset=UTF-8", ""])
def test_raw_photo_found_whatever_the_label(fmt, ctype) -> None:
    img = generated.image(fmt)
    headers = {"Content-Type": ctype} if ctype else {}
    r = rewrite_request("PUT", "https://x.test/upload", headers, img)
    assert [f.format for f in r.images] == [sniff(img)] and r.images[0].ok
    assert r.body == cleaned(fmt)


@pytest.mark.parametrize("fmt", ["JPEG", "HEIC"])
def test_engine_failure_blocks_and_sends_nothing_changed(fmt) -> None:
    img = generated.image(fmt)

    def failing(data, options):
        raise ScrubError("cannot clean this one")

    def buggy(data, options):
        raise KeyError("walker bug")

    for scrubber, text in ((failing, "cannot clean this one"), (buggy, "")):
        r = rewrite_request("POST", "https://x.test/", {}, img, CarrierOptions(scrubber=scrubber))
        assert r.has_errors and r.body == img and text in (r.images[0].error or "")


def test_body_over_the_size_limit_is_an_error_not_forwarded_changed() -> None:
    img = generated.image("PNG")
    r = rewrite_request("POST", "https://x.test/", {}, img, CarrierOptions(max_body_bytes=len(img) // 2))
    assert r.body == img and r.has_errors and "larger than" in r.images[0].error


def test_chunks_of_a_photo_are_errors_first_and_continuation() -> None:
    from exifguard.carriers import UploadTracker
    img = generated.image("JPEG")
    opts = CarrierOptions(uploads=UploadTracker())
    url = "https://tenant.sharepoint.com/_api/uploadSession?guid=1"
    half = len(img) // 2
    r1 = rewrite_request("PUT", url, {"Content-Range": f"bytes 0-{half - 1}/{len(img)}"}, img[:half], opts)
    assert r1.body == img[:half] and r1.has_errors and "chunked" in r1.images[0].error
    r2 = rewrite_request("PUT", url, {"Content-Range": f"bytes {half}-{len(img) - 1}/{len(img)}"}, img[half:], opts)
    assert r2.body == img[half:] and r2.has_errors


@pytest.mark.parametrize("fmt", ["HEIC", "JPEG"])
def test_single_chunk_resumable_is_cleaned_and_declared_sizes_hold(fmt) -> None:
    img = generated.image(fmt)
    r = rewrite_request("POST", "https://rupload.meta.ai/gen_ai_document_gen_ai_tenant/u",
                        {"offset": "0", "x-entity-length": str(len(img))}, img)
    assert r.images[0].ok and r.body == cleaned(fmt) and not r.blockers
    r = rewrite_request("PUT", "https://t.sharepoint.com/uploadSession",
                        {"Content-Range": f"bytes 0-{len(img) - 1}/{len(img)}"}, img)
    assert r.images[0].ok and r.body == cleaned(fmt) and not r.blockers


def test_rename_sets_a_neutral_entity_name() -> None:
    r = rewrite_request("POST", "https://rupload.meta.ai/x", {"x-entity-name": "IMG_20240512_142233.jpg"},
                        generated.image("JPEG"), CarrierOptions(rename_files=True))
    assert r.set_headers == {"x-entity-name": "image.jpg"}


# -- integrity headers: recomputed over the new body, or a blocker when a signature covers it ---

def _hash_headers(body: bytes) -> list[tuple[str, str]]:
    return [("Content-MD5", b64(hashlib.md5(body).digest())),
            ("x-amz-checksum-crc32", b64(zlib.crc32(body).to_bytes(4, "big"))),
            ("x-amz-checksum-sha256", b64(hashlib.sha256(body).digest())),
            ("Content-Digest", f"sha-256=:{b64(hashlib.sha256(body).digest())}:"),
            ("X-Goog-Hash", "md5=" + b64(hashlib.md5(body).digest()))]


@pytest.mark.parametrize("fmt", FORMATS)
def test_integrity_headers_recomputed(fmt) -> None:
    img = generated.image(fmt)
    r = rewrite_request("PUT", "https://bucket.s3.amazonaws.com/k", _hash_headers(img), img)
    assert not r.blockers and r.images[0].ok
    new = r.body
    assert r.set_headers == {
        "Content-MD5": b64(hashlib.md5(new).digest()),
        "x-amz-checksum-crc32": b64(zlib.crc32(new).to_bytes(4, "big")),
        "x-amz-checksum-sha256": b64(hashlib.sha256(new).digest()),
        "Content-Digest": f"sha-256=:{b64(hashlib.sha256(new).digest())}:",
        "X-Goog-Hash": "md5=" + b64(hashlib.md5(new).digest())}


@pytest.mark.parametrize("extra,url", [
    ([("x-amz-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
      ("Authorization", "AWS4-HMAC-SHA256 Credential=A/20300101/us-east-1/s3/aws4_request, "
                        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=ab")],
     "https://b.s3.amazonaws.com/k"),
    ([("Content-MD5", "__OLD__")], "https://b.s3.amazonaws.com/k?X-Amz-SignedHeaders=content-md5%3Bhost&X-Amz-Signature=1"),
    ([("Content-MD5", "__OLD__"), ("Authorization", "SharedKey acct:c2ln")], "https://a.blob.core.windows.net/c/b"),
    ([("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")], "https://b.s3.amazonaws.com/k"),
    ([("Content-Encoding", "gzip"), ("Content-MD5", "__GZ__")], "https://x.blob.core.windows.net/c/b"),
], ids=["sigv4-payload", "presigned-signed-md5", "azure-sharedkey", "streaming-signed", "hash-of-gzip"])
def test_signed_or_unverifiable_body_is_blocked(extra, url) -> None:
    img = generated.image("JPEG")
    marks = {"__OLD__": b64(hashlib.md5(img).digest()), "__GZ__": b64(hashlib.md5(gzip.compress(img)).digest())}
    r = rewrite_request("PUT", url, [(k, marks.get(v, v)) for k, v in extra], img)
    assert r.has_errors
    assert r.blockers or (r.body == img and r.images[0].error)
    assert not any(k.lower() == "content-md5" for k in r.set_headers)


def test_s3_post_form_checksum_field_is_blocked() -> None:
    img = generated.image("PNG")
    body = multipart([field_part("key", "k"), field_part("Content-MD5", b64(hashlib.md5(img).digest())),
                      file_part("file", img)], "B")
    r = rewrite_request("POST", "https://b.s3.amazonaws.com/", {"Content-Type": "multipart/form-data; boundary=B"},
                        body)
    assert r.images[0].ok and any("Content-MD5" in b for b in r.blockers)


# -- form fields, escaped JSON, wrappers ------------------------------------------------------

@pytest.mark.parametrize("fmt", ["WEBP", "AVIF", "TIFF"])
def test_form_field_data_url(fmt) -> None:
    img = generated.image(fmt)
    body = ("k=v&FileBase64=" + quote(f"data:image/x;base64,{b64(img)}", safe="")).encode()
    r = rewrite_request("POST", "https://substrate.office.com/m365Copilot/UploadFile",
                        {"Content-Type": "application/x-www-form-urlencoded"}, body)
    assert r.images[0].ok
    got = dict(parse_qsl(r.body.decode()))["FileBase64"]
    assert base64.b64decode(got.split(",", 1)[1]) == cleaned(fmt)


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "JXL"])
def test_json_base64_with_escaped_slashes(fmt) -> None:
    img = generated.image(fmt)
    body = json.dumps({"messages": [{"content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": b64(img)}}]}]}).replace("/", "\\/").encode()
    r = rewrite_request("POST", "https://api.anthropic.com/v1/messages", {"content-type": "application/json"}, body)
    assert r.images[0].ok, r.images[0].error
    assert base64.b64decode(json.loads(r.body)["messages"][0]["content"][0]["source"]["data"]) == cleaned(fmt)


@pytest.mark.parametrize("mutilate", [
    lambda b: b[:-20],
    lambda b: b.replace(b"--B", b"--C"),
    lambda b: b.replace(b"\r\n\r\n", b"\r\n", 1),
], ids=["truncated", "no-opening", "broken-headers"])
def test_malformed_multipart_with_a_photo_is_never_half_rewritten(mutilate) -> None:
    body = mutilate(multipart([field_part("x", "1"), file_part("file", generated.image("JPEG"))], "B"))
    r = rewrite_request("POST", "https://x.test/", {"Content-Type": "multipart/form-data; boundary=B"}, body)
    assert r.body == body and r.has_errors


def _stored_zip(name: str, data: bytes) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(name, data)
    return b.getvalue()


@pytest.mark.parametrize("fmt", FORMATS)
def test_photo_inside_a_stored_zip_and_a_binary_wrapper(fmt) -> None:
    """Inside a wrapper, each photo comes out as the engine cleans the file alone (an MPO:
    its two JPEGs cleaned one by one), or the upload is refused; never with the marker."""
    img = generated.image(fmt)
    for body in (_stored_zip("photo" + generated.EXT[fmt], img), b"\x00\x01" + img + b"\x00\x01tail"):
        r = rewrite_request("POST", "https://x.test/", {"Content-Type": "application/octet-stream"}, body)
        if r.has_errors:
            continue  # refused: nothing leaves
        assert canary.find(r.body, generated.MARKER) == []
        assert r.images and all(f.ok for f in r.images)
        if fmt != "MPO":
            assert cleaned(fmt) in r.body
