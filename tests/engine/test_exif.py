"""The EXIF reader lists names without trusting the block; the writer makes minimal blocks."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from exifguard.engine.categories import categories_for, category_of_tag
from exifguard.engine.exif import find_tiff_header, minimal_tiff, read_tiff, valid_orientation
from exifguard.engine.report import Category
from exifguard.engine.xmp import xmp_orientation, xmp_property_names


def _pillow_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "CanaryMake"
    exif[0x0112] = 6
    exif[0x013B] = "Jane Doe"
    gps = {1: "N", 2: (1.0, 2.0, 3.0)}
    exif[0x8825] = gps
    return exif.tobytes()  # starts with Exif\0\0


def test_read_tiff_names_and_orientation() -> None:
    blob = _pillow_exif()
    off = find_tiff_header(blob)
    assert off == 6
    s = read_tiff(blob[off:])
    assert {"Make", "Orientation", "Artist", "GPSLatitude", "GPSLatitudeRef"} <= set(s.names)
    assert s.orientation == 6
    assert all(e.value is None for e in s.entries)  # no values unless asked
    vals = {e.name: e.value for e in read_tiff(blob[off:], collect_values=True).entries}
    assert vals["Make"] == "CanaryMake"


@pytest.mark.parametrize("orientation", [None, 2, 6, 8])
@pytest.mark.parametrize("big", [True, False])
def test_minimal_tiff_roundtrip(orientation, big) -> None:
    t = minimal_tiff(orientation, big_endian=big)
    s = read_tiff(t)
    assert s.orientation == orientation
    assert len(s.entries) == (0 if orientation is None else 1)
    assert not s.truncated


def test_minimal_exif_is_read_by_pillow() -> None:
    t = minimal_tiff(6)
    img = Image.new("RGB", (4, 2))
    import io
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=b"Exif\0\0" + t)
    back = Image.open(io.BytesIO(buf.getvalue())).getexif()
    assert dict(back) == {0x0112: 6}


@pytest.mark.parametrize("value,keep", [(None, None), (0, None), (1, None), (2, 2), (8, 8), (9, None)])
def test_valid_orientation(value, keep) -> None:
    assert valid_orientation(value) == keep


def test_ifd_loop_is_bounded() -> None:
    # IFD0 at 8 whose next-IFD link points back to itself.
    t = b"MM\0*" + struct.pack(">I", 8) + struct.pack(">H", 0) + struct.pack(">I", 8)
    s = read_tiff(t)
    assert s.entries == ()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_read_tiff_never_raises(blob: bytes) -> None:
    read_tiff(b"II*\0" + blob)
    read_tiff(b"MM\0*" + blob)


def test_categories() -> None:
    assert category_of_tag("GPSLatitude") is Category.LOCATION
    assert category_of_tag("BodySerialNumber") is Category.IDENTITY
    assert category_of_tag("Make") is Category.DEVICE
    assert category_of_tag("DateTimeOriginal") is Category.TIME
    assert category_of_tag("ThumbnailImage") is Category.THUMBNAIL
    assert categories_for("COM", ()) == {Category.TEXT}
    assert categories_for("trailer after EOI", ()) == {Category.OTHER}


def test_xmp_names_and_orientation() -> None:
    pkt = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description exif:GPSLatitude="1,2N" '
           b'tiff:Orientation="3"><dc:creator><rdf:Seq><rdf:li>Jane</rdf:li></rdf:Seq></dc:creator>'
           b'</rdf:Description></rdf:RDF></x:xmpmeta>')
    names = xmp_property_names(pkt)
    assert "GPSLatitude" in names and "Creator" in names and "Orientation" in names
    assert "Li" not in names and "RDF" not in names
    assert xmp_orientation(pkt) == 3
    assert xmp_orientation(b"<tiff:Orientation>6</tiff:Orientation>") == 6
