"""Format detection trusts magic bytes only."""

from __future__ import annotations

import pytest

from exifguard import ScrubError, sniff
from exifguard.engine import scrub
from exifguard.engine.errors import UnsupportedFormat
from support import corpus


@pytest.mark.parametrize("head,fmt", [
    (b"\xff\xd8\xff\xe0" + b"\0" * 20, "JPEG"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "PNG"),
    (b"GIF89a" + b"\0" * 20, "GIF"),
    (b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 20, "WEBP"),
    (b"II*\0\x08\0\0\0" + b"\0" * 20, "TIFF"),
    (b"MM\0+\0\x08\0\0" + b"\0" * 20, "TIFF"),
    (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", "HEIC"),
    (b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf", "AVIF"),
    (b"\0\0\0\x10ftypmif1\0\0\0\0", "HEIF"),
    (b"\0\0\0\x0cJXL \r\n\x87\n" + b"\0" * 20, "JXL"),
    (b"\xff\x0a\xfa" + b"\0" * 20, "JXL"),
    (b"\0\0\0\x0cjP  \r\n\x87\n" + b"\0" * 20, "JP2"),
    (b"8BPS\0\x01" + b"\0" * 20, "PSD"),
    (b"\0\0\x01\0\x01\0" + b"\0" * 20, "ICO"),
])
def test_sniff_magic(head: bytes, fmt: str) -> None:
    assert sniff(head) == fmt


@pytest.mark.parametrize("data", [b"", b"hello world", b"<html>", b"%PDF-1.7", b"\0\0\0\x18ftypisom\0\0\0\0"])
def test_non_images_are_not_images(data: bytes) -> None:
    assert sniff(data) is None
    with pytest.raises(ScrubError, match="not an image"):
        scrub(data)


def test_labels_are_ignored_only_bytes_count(tmp_path) -> None:
    # A PNG named .jpg is a PNG; a text file named .png is not an image.
    assert sniff(b"\x89PNG\r\n\x1a\n" + b"\0" * 8) == "PNG"


@pytest.mark.parametrize("head", [b"8BPS\0\x01" + b"\0" * 30, b"\0\0\0\x0cjP  \r\n\x87\n" + b"\0" * 30])
def test_recognised_but_unsupported_raises_scruberror(head: bytes) -> None:
    with pytest.raises(UnsupportedFormat, match="unsupported image format"):
        scrub(head)
    assert issubclass(UnsupportedFormat, ScrubError) and issubclass(ScrubError, ValueError)


@pytest.mark.parametrize("f", corpus.params(broken=None))
def test_corpus_formats_match_manifest(f) -> None:
    expected = f.format
    got = sniff(f.data)
    if expected == "HEIC":
        assert got in ("HEIC", "HEIF")
    else:
        assert got == expected


def test_oversized_input_is_refused() -> None:
    from exifguard.engine import ScrubOptions
    with pytest.raises(ScrubError, match="too large"):
        scrub(b"\xff\xd8\xff" + b"\0" * 100, options=ScrubOptions(max_input_bytes=50))
