"""Shared assertions for carrier tests: extract images from spans, compare outside spans."""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest
from support import corpus, oracle

from exifguard import ScrubResult, sniff
from exifguard.carriers import ImageFinding

#: Real corpus images with location/device metadata, one per main upload format.
IMAGES = {
    "JPEG": "jpeg_apple-iphone4_gps.jpg",
    "PNG": "png_exif-chunk_gps_ownername_text_xmp.png",
    "WEBP": "webp_lossy_htc-desire_exif-gps_icc.webp",
    "HEIC": "heic_apple-iphone11promax_gps_xmp.heic",
}


def corpus_image(fmt: str) -> bytes:
    for f in corpus.manifest():
        if f.name == IMAGES[fmt]:
            return f.data
    pytest.skip(corpus.missing(f"corpus image {IMAGES[fmt]}"))


def decode_span(carrier: str, region: bytes) -> bytes:
    """The image bytes held in a finding's span, whatever the carrier encoding."""
    if sniff(region) is not None:
        return region
    if " JSON " in f" {carrier} " or carrier.startswith("JSON") or "> JSON" in carrier:
        text = json.loads(b'"' + region + b'"').encode("latin-1")
    elif "form field" in carrier:
        text = unquote_to_bytes(region)
    else:
        text = region
    if text[:5].lower() == b"data:":
        text = text.split(b",", 1)[1]
    text = b"".join(text.split())
    if b"-" in text or b"_" in text:
        return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    return base64.b64decode(text + b"=" * (-len(text) % 4))


def new_regions(old: bytes, new: bytes, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Where each old span sits in the new body (only one span may change length)."""
    if len(old) == len(new):
        return list(spans)
    assert len(spans) == 1, "only single-carrier bodies may change length"
    a, b = spans[0]
    return [(a, b + len(new) - len(old))]


def assert_outside_spans_equal(old: bytes, new: bytes, spans: list[tuple[int, int]]) -> None:
    """Every byte outside the image spans is unchanged."""
    if len(old) != len(new):
        (a, b), = spans
        assert old[:a] == new[:a] and old[b:] == new[len(new) - (len(old) - b):]
        return
    last = 0
    for a, b in sorted(spans):
        assert old[last:a] == new[last:a], f"bytes changed outside image spans in [{last}, {a})"
        last = b
    assert old[last:] == new[last:]


def assert_clean_by_exiftool(images: list[tuple[str, bytes]]) -> None:
    """Run ExifTool once over all images; each must show only allowlisted keys."""
    if not oracle.exiftool_available():
        pytest.skip("exiftool missing")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (fmt, data) in enumerate(images):
            p = Path(tmp) / f"img{i}.{fmt.lower()}"
            p.write_bytes(data)
            paths.append((fmt, p))
        tags = oracle.exiftool_files([p for _, p in paths])
        for fmt, p in paths:
            assert oracle.leaks(fmt, tags[str(p)]) == [], f"{fmt} still leaks after the carrier layer"


def fake_scrubber(data: bytes, options) -> ScrubResult:
    """Framing-only stand-in: keep the 4 magic bytes, zero the rest (same length)."""
    return ScrubResult(data=data[:4] + bytes(len(data) - 4), format=sniff(data) or "?",
                       input_length=len(data))


def found_spans(images: tuple[ImageFinding, ...]) -> list[tuple[int, int]]:
    return [f.span for f in images if f.span is not None]
