"""One fixture per real upload shape (upload-shapes.md), each carrying real corpus images.

For every shape and format: every image is found and cleaned (ExifTool allowlist),
the cleaned bytes are exactly the engine's output, every byte outside the image
spans is unchanged, the body keeps its length, declared sizes stay true and
recomputed hashes verify.  Preceding requests (ChatGPT create, Gemini start) pass
byte-identical.
"""

from __future__ import annotations

import base64
import hashlib
import zlib

import pytest

from carriers.builders import SHAPES
from carriers.helpers import (assert_clean_by_exiftool, assert_outside_spans_equal, corpus_image,
                              decode_span, found_spans, new_regions)
from exifguard import scrub, sniff
from exifguard.carriers import CarrierOptions, rewrite_request


@pytest.fixture(scope="module")
def engine_output():
    cache: dict[str, bytes] = {}

    def get(img: bytes) -> bytes:
        key = hashlib.sha256(img).hexdigest()
        if key not in cache:
            cache[key] = scrub(img).data
        return cache[key]
    return get


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIC"])
@pytest.mark.parametrize("build", SHAPES, ids=lambda b: b.__name__)
def test_shape_cleaned_everything_else_identical(build, fmt, engine_output) -> None:
    img = corpus_image(fmt)
    shape = build(img)
    if shape.before is not None:
        m, u, h, b = shape.before
        rw0 = rewrite_request(m, u, h, b)
        assert rw0.body == b and not rw0.images and not rw0.blockers and not rw0.changed

    rw = rewrite_request(shape.method, shape.url, shape.headers, shape.body, CarrierOptions())
    assert not rw.blockers, rw.blockers
    assert [f.error for f in rw.images] == [None] * shape.images
    assert len(rw.images) == shape.images
    assert rw.changed
    if shape.name != "m365_form":  # percent-encoding: '/' and '+' cost 3 bytes, their count varies
        assert len(rw.body) == len(shape.body), "length-preserving: the body keeps its length"
    regions = new_regions(shape.body, rw.body, found_spans(rw.images))

    expected = engine_output(img)
    assert expected != img
    cleaned = []
    for f, (na, nb) in zip(rw.images, regions):
        assert f.ok and f.size == len(img) and f.format == sniff(img)
        a, b = f.span
        out = decode_span(f.carrier, rw.body[na:nb])
        assert decode_span(f.carrier, shape.body[a:b]) == img, "span held the original image"
        assert out == f.result.data == expected
        cleaned.append((sniff(out), out))
    assert_outside_spans_equal(shape.body, rw.body, found_spans(rw.images))

    for what, value, kind in shape.declared:
        actual = len(rw.body) if kind == "body" else len(cleaned[0][1])
        assert value == actual, f"declared {what} no longer true"

    lower = {k.lower(): v for k, v in rw.set_headers.items()}
    for name in ("content-md5", "x-ms-blob-content-md5"):
        if any(k.lower() == name for k, _ in shape.headers):
            assert lower[name] == base64.b64encode(hashlib.md5(rw.body).digest()).decode()
    sent_crc = next((v for k, v in shape.headers if k.lower() == "content-crc32"), None)
    if sent_crc is not None:  # Doubao/Dola: recomputed, in the spelling the client used
        new_crc = zlib.crc32(rw.body)
        assert lower["content-crc32"] == (str(new_crc) if shape.name.endswith("decimal") else f"{new_crc:08x}")
        assert lower["content-crc32"] != sent_crc

    assert_clean_by_exiftool([(sniff(img) if sniff(img) != "HEIF" else "HEIC", out) for _, out in cleaned])


@pytest.mark.parametrize("build", SHAPES, ids=lambda b: b.__name__)
def test_shape_second_pass_is_stable(build) -> None:
    """Feeding the rewritten request through again finds the images, changes nothing more."""
    img = corpus_image("JPEG")
    shape = build(img)
    rw = rewrite_request(shape.method, shape.url, shape.headers, shape.body)
    rw2 = rewrite_request(shape.method, shape.url, shape.headers, rw.body)
    assert len(rw2.images) == shape.images and not rw2.has_errors
    assert rw2.body == rw.body
