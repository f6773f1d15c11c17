"""Every format the engine cleans, on generated photos: runs on a fresh clone, without the corpus.

The corpus tests (test_<format>.py) check real camera files; these check one generated photo
per format (tests/support/generated.py: Exif with GPS, serial, owner, XMP, IPTC, comments,
MPF, appended data) the same way: ExifTool finds the private metadata before and nothing
outside the allowlists after, no marker survives in any encoding, the length is kept, the
pixels and the orientation are unchanged, a second pass changes nothing, and the compact
mode is clean too.
"""

from __future__ import annotations

import io
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest
from PIL import Image

from exifguard import Category, scrub, sniff
from support import canary, generated, oracle

FORMATS = generated.FORMATS
#: formats whose generated photo carries Exif GPS (GIF and BMP have no GPS fields)
WITH_GPS = ("JPEG", "MPO", "PNG", "WEBP", "TIFF", "HEIC", "AVIF", "JXL")
#: formats where EXIF Orientation is how the picture is displayed (HEIF uses irot instead)
ORIENTED = ("JPEG", "MPO", "PNG", "WEBP", "TIFF")
#: formats Pillow decodes here (JPEG XL: no decoder; the engine never decodes pixels anyway)
DECODABLE = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "TIFF", "HEIC", "AVIF", "BMP")


def _pixels(data: bytes) -> tuple:
    try:
        import pillow_heif
        pillow_heif.register_heif_opener()
    except ImportError:
        pass
    with Image.open(io.BytesIO(data)) as im:
        return im.size, im.convert("RGB").tobytes()


@lru_cache(maxsize=1)
def _exiftool_views() -> dict[tuple[str, str], dict]:
    """ExifTool once over every original, cleaned and compact output (one process)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for fmt in generated.ORACLE:
            img = generated.image(fmt)
            for kind, data in (("original", img), ("cleaned", scrub(img).data),
                               ("compact", scrub(img, preserve_length=False).data)):
                p = Path(tmp) / f"{kind}-{fmt}{generated.EXT[fmt]}"
                p.write_bytes(data)
                paths[(fmt, kind)] = p
        tags = oracle.exiftool_files(list(paths.values()))
        return {key: tags[str(p)] for key, p in paths.items()}


@pytest.mark.parametrize("fmt", FORMATS)
def test_generated_photo_is_what_it_claims(fmt: str) -> None:
    """Sanity for the fixtures: the format sniffs right and the marker is there to find."""
    img = generated.image(fmt)
    assert sniff(img) == ("JPEG" if fmt == "MPO" else fmt)
    assert canary.find(img, generated.MARKER), "the generated photo carries no private marker"


@pytest.mark.parametrize("fmt", FORMATS)
def test_generated_photo_cleaned_same_length_idempotent(fmt: str) -> None:
    img = generated.image(fmt)
    res = scrub(img)
    assert res.removed, "nothing reported removed from a photo full of metadata"
    assert len(res.data) == len(img)
    assert canary.find(res.data, generated.MARKER) == []
    again = scrub(res.data)
    assert again.data == res.data
    if fmt in WITH_GPS:
        assert Category.LOCATION in res.categories
        assert any(t.startswith("GPS") for t in res.tags), res.tags


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f in DECODABLE])
def test_generated_photo_pixels_and_orientation_unchanged(fmt: str) -> None:
    img = generated.image(fmt)
    out = scrub(img).data
    assert _pixels(out) == _pixels(img)
    if fmt in ORIENTED:
        with Image.open(io.BytesIO(out)) as im:
            assert im.getexif().get(0x0112) == 6, "orientation lost: the photo would turn sideways"


@pytest.mark.parametrize("fmt", FORMATS)
def test_generated_photo_compact_is_clean(fmt: str) -> None:
    img = generated.image(fmt)
    out = scrub(img, preserve_length=False).data
    assert len(out) <= len(img)
    assert canary.find(out, generated.MARKER) == []
    assert scrub(out, preserve_length=False).data == out
    if fmt in DECODABLE:
        assert _pixels(out) == _pixels(img)


@oracle.requires_exiftool
@pytest.mark.parametrize("fmt", generated.ORACLE)
def test_generated_photo_exiftool_before_and_after(fmt: str) -> None:
    views = _exiftool_views()
    before = views[(fmt, "original")]
    oracle_fmt = generated.oracle_format(fmt)
    assert oracle.leaks(oracle_fmt, before), "ExifTool saw nothing private in the original"
    if fmt in WITH_GPS:
        assert any("GPSLatitude" in k for k in before), "the original has no GPS for ExifTool"
    for kind in ("cleaned", "compact"):
        after = views[(fmt, kind)]
        assert oracle.leaks(oracle_fmt, after) == [], kind
        assert not any("GPS" in k for k in after), kind
