"""JPEG scrubbing: real corpus files against ExifTool and Pillow, plus canary JPEGs.

Every check here can fail: ExifTool keys are judged against allowlists/JPEG.txt,
pixels are compared after a real decode, and canaries are searched in raw, UTF-16,
hex, base64 and zlib forms.
"""

from __future__ import annotations

import io
import struct
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from exifguard import ScrubError, scrub
from exifguard.engine import Category, ScrubOptions
from exifguard.engine.verify import jpeg as jpeg_verify
from support import canary, corpus, oracle

from . import icc_builders as ib
from . import jpeg_builders as jb

GOOD = corpus.params("JPEG")
BROKEN = corpus.params("JPEG", broken=True)


# -- helpers -------------------------------------------------------------------------------

def frames(data: bytes, *, first_only: bool = False) -> list[tuple[str, tuple[int, int], bytes]]:
    """Decoded pixels of every frame (mode, size, raw bytes)."""
    out = []
    with Image.open(io.BytesIO(data)) as im:
        n = 1 if first_only else getattr(im, "n_frames", 1)
        for k in range(n):
            im.seek(k)
            out.append((im.mode, im.size, im.tobytes()))
    return out


def displayed(data: bytes) -> tuple[tuple[int, int], bytes]:
    """Pixels as a viewer shows them: orientation applied (Exif or XMP)."""
    with Image.open(io.BytesIO(data)) as im:
        t = ImageOps.exif_transpose(im)
        return t.size, t.tobytes()


def is_mpo(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as im:
        return im.format == "MPO"


@lru_cache(maxsize=1)
def corpus_exiftool() -> dict[str, dict]:
    """ExifTool over the cleaned output of every good corpus JPEG, in one process."""
    tmp = Path(tempfile.mkdtemp(prefix="exifguard-jpeg-"))
    paths = []
    for f in corpus.files("JPEG"):
        p = tmp / (f.name + ".jpg")
        p.write_bytes(scrub(f.data).data)
        paths.append(p)
        p = tmp / ("compact-" + f.name + ".jpg")
        p.write_bytes(scrub(f.data, preserve_length=False).data)
        paths.append(p)
    result = oracle.exiftool_files(paths)
    return {Path(k).name: v for k, v in result.items()}


# -- corpus --------------------------------------------------------------------------------

@pytest.mark.parametrize("f", GOOD)
def test_corpus_same_length_idempotent_verified(f) -> None:
    data = f.data
    res = scrub(data)
    assert res.format == "JPEG"
    assert len(res.data) == len(data)
    jpeg_verify.verify(res.data, ScrubOptions())
    assert scrub(res.data).data == res.data, "scrub is not idempotent"
    assert scrub(res.data).removed == (), "a second scrub still found something to remove"
    # nothing private left in the report unless values were asked for
    assert all(not r.values for r in res.removed)


@pytest.mark.parametrize("f", GOOD)
def test_corpus_pixels_and_orientation_identical(f) -> None:
    data = f.data
    out = scrub(data).data
    # MPO: the secondary images (after the first EOI) are removed on purpose, so only the
    # first frame can (and must) be identical.
    first_only = is_mpo(data)
    assert frames(out, first_only=first_only) == frames(data, first_only=first_only)
    assert displayed(out) == displayed(data), "displayed orientation changed"
    expected = f.entry.get("orientation")
    if expected in (2, 3, 4, 5, 6, 7, 8):
        with Image.open(io.BytesIO(out)) as im:
            assert im.getexif().get(0x0112) == expected


@pytest.mark.parametrize("f", GOOD)
def test_corpus_compact_smaller_and_same_pixels(f) -> None:
    data = f.data
    res = scrub(data, preserve_length=False)
    assert len(res.data) <= len(data)
    jpeg_verify.verify(res.data, ScrubOptions(preserve_length=False))
    first_only = is_mpo(data)
    assert frames(res.data, first_only=True) == frames(data, first_only=True)
    if not first_only:
        assert frames(res.data) == frames(data)
    assert displayed(res.data) == displayed(data)
    assert scrub(res.data, preserve_length=False).data == res.data


@oracle.requires_exiftool
@pytest.mark.parametrize("f", GOOD)
def test_corpus_exiftool_finds_no_leak(f) -> None:
    tags = corpus_exiftool()
    for name in (f.name + ".jpg", "compact-" + f.name + ".jpg"):
        assert oracle.leaks("JPEG", tags[name]) == [], name


@pytest.mark.parametrize("f", GOOD)
def test_corpus_report_names_what_was_there(f) -> None:
    res = scrub(f.data)
    structure = " ".join(f.entry.get("structure") or [])
    carriers = {r.carrier for r in res.removed}
    if "APP1:Exif" in structure:
        assert "APP1 Exif" in carriers
    if "APP1:XMP" in structure:
        assert "XMP" in carriers
    if "APP13" in structure:
        assert "IPTC (APP13)" in carriers
    after = [int(x.split(":")[1].split("-")[0]) for x in f.entry.get("structure") or []
             if x.startswith("after-EOI:")]
    if after and any(f.data[-after[0]:]):  # an all-zero tail holds nothing to report
        assert "trailer after EOI" in carriers
    if "APP2:MPF" in structure:
        assert "APP2 MPF" in carriers
    gps = (f.entry.get("privacy") or {}).get("gps") or {}
    if any(k.endswith(":GPSLatitude") for k in gps):
        assert Category.LOCATION in res.categories
        assert "GPSLatitude" in res.tags


@pytest.mark.parametrize("f", GOOD)
def test_corpus_without_icc_and_orientation(f) -> None:
    data = f.data
    res = scrub(data, keep_icc=False, keep_orientation=False)
    assert len(res.data) == len(data)
    assert b"ICC_PROFILE\0" not in res.data
    assert b"Exif\0\0" not in res.data
    with Image.open(io.BytesIO(res.data)) as im:
        assert im.getexif().get(0x0112) is None


@pytest.mark.parametrize("f", BROKEN)
def test_broken_corpus_refused_or_clean(f) -> None:
    data = f.data
    try:
        res = scrub(data)
    except ScrubError as exc:
        assert "JPEG" in str(exc)
        return
    assert len(res.data) == len(data)
    jpeg_verify.verify(res.data, ScrubOptions())
    assert scrub(res.data).data == res.data


# -- canaries ------------------------------------------------------------------------------

M = {k: f"CANARY{k.upper()}7Q3Z".encode() for k in (
    "exif", "exif2", "xmp", "extxmp", "iptc1", "iptc2", "com", "app11", "app5", "jfxx", "mpf",
    "trailerjpeg", "mp4", "jfifthumb", "exifthumb")}


def thumb_jpeg(marker: bytes) -> bytes:
    return jb.splice(jb.base_jpeg((16, 8)), [jb.segment(0xFE, b"thumb-" + marker)])


def canary_jpeg(*, progressive: bool = False) -> bytes:
    thumb_pixels = (M["jfifthumb"] * 8)[:3 * 8 * 2]
    secondary = jb.splice(jb.base_jpeg((16, 16)), [jb.exif_app1(M["trailerjpeg"])])
    segs = [
        jb.jfif_app0(thumb_pixels, 8, 2),
        jb.exif_app1(M["exif"], orientation=6, thumbnail=thumb_jpeg(M["exifthumb"])),
        jb.exif_app1(M["exif2"], orientation=3),
        jb.xmp_app1(M["xmp"], orientation=8),
        jb.ext_xmp_app1(M["extxmp"]),
        jb.iptc_app13(M["iptc1"], 80),
        jb.iptc_app13(M["iptc2"], 90),
        jb.segment(0xFE, b"Comment " + M["com"]),
        jb.segment(0xEB, b"JP\0\0\0\0\0\x01jumb" + M["app11"]),
        jb.segment(0xE5, b"ssuniqueid\0" + M["app5"]),
        jb.segment(0xE0, b"JFXX\0\x10" + M["jfxx"]),
        jb.segment(0xE2, b"MPF\0MM\0*\0\0\0\x08" + M["mpf"]),
        jb.segment(0xEE, b"Adobe\0\x64\0\0\0\0\x01"),
    ]
    return jb.splice(jb.base_jpeg(progressive=progressive), segs, secondary + jb.mp4_blob(M["mp4"]))


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_canaries_all_removed(progressive: bool) -> None:
    data = canary_jpeg(progressive=progressive)
    for key, marker in M.items():
        assert canary.find(data, marker), f"test bug: canary {key} not planted"
    res = scrub(data)
    out = res.data
    assert len(out) == len(data)
    for key, marker in M.items():
        assert canary.find(out, marker) == [], f"canary {key} survived"
    assert frames(out) == frames(data)
    assert displayed(out) == displayed(data)
    with Image.open(io.BytesIO(out)) as im:
        assert im.getexif().get(0x0112) == 6
        assert dict(im.getexif()) == {0x0112: 6}
    assert scrub(out).data == out

    carriers = [r.carrier for r in res.removed]
    for c in ("APP1 Exif", "EXIF thumbnail", "XMP", "extended XMP", "IPTC (APP13)", "COM",
              "APP11 JUMBF/C2PA", "APP5 ssuniqueid", "APP0 JFXX", "APP2 MPF", "JFIF thumbnail",
              "trailer after EOI", "MPF secondary image"):
        assert c in carriers, c
    assert carriers.count("APP1 Exif") == 2
    assert carriers.count("IPTC (APP13)") == 2
    for tag in ("Make", "Artist", "XPComment", "UserComment", "MakerNote", "GPSLatitude",
                "Orientation", "By-line", "City", "Creator", "Comment"):
        assert tag in res.tags, tag
    assert {Category.LOCATION, Category.IDENTITY, Category.DEVICE, Category.THUMBNAIL,
            Category.TEXT} <= res.categories
    assert ("orientation", "6") in [(k.what, k.detail) for k in res.kept]
    # no values without collect_values; and the report never carries the canary
    assert all(not r.values for r in res.removed)
    assert all(not canary.find(repr(r).encode(), m) for r in res.removed for m in M.values())


@oracle.requires_exiftool
def test_canary_exiftool_clean() -> None:
    data = canary_jpeg()
    out = scrub(data).data
    tags = oracle.exiftool_bytes(out, ".jpg")
    assert oracle.leaks("JPEG", tags) == []
    assert tags.get("IFD0:Orientation") == "Rotate 90 CW"
    compact = scrub(data, preserve_length=False).data
    assert oracle.leaks("JPEG", oracle.exiftool_bytes(compact, ".jpg")) == []


def test_canary_compact() -> None:
    data = canary_jpeg()
    res = scrub(data, preserve_length=False)
    assert len(res.data) < len(data)
    for key, marker in M.items():
        assert canary.find(res.data, marker) == [], f"canary {key} survived"
    assert frames(res.data) == frames(data)
    with Image.open(io.BytesIO(res.data)) as im:
        assert dict(im.getexif()) == {0x0112: 6}
    assert res.data.count(b"\xff\xd8") == 1


def test_collect_values_only_on_request() -> None:
    data = canary_jpeg()
    res = scrub(data, options=ScrubOptions(collect_values=True))
    exif = next(r for r in res.removed if r.carrier == "APP1 Exif")
    assert any(M["exif"] in v.encode("latin-1", "replace") for _, v in exif.values)


def test_xmp_only_orientation_becomes_minimal_exif() -> None:
    data = jb.splice(jb.base_jpeg(), [jb.xmp_app1(M["xmp"], orientation=6)])
    res = scrub(data)
    assert canary.find(res.data, M["xmp"]) == []
    with Image.open(io.BytesIO(res.data)) as im:
        assert dict(im.getexif()) == {0x0112: 6}
    assert displayed(res.data) == displayed(data)
    assert "XMP" in [r.carrier for r in res.removed]
    assert scrub(res.data).data == res.data


@pytest.mark.parametrize("orientation", [None, 0, 1, 9])
def test_no_valid_orientation_leaves_no_exif(orientation: int | None) -> None:
    data = jb.splice(jb.base_jpeg(), [jb.exif_app1(M["exif"], orientation=orientation)])
    res = scrub(data)
    assert b"Exif\0\0" not in res.data
    assert canary.find(res.data, M["exif"]) == []
    assert len(res.data) == len(data)


def test_keep_icc_false_neutralises_profile() -> None:
    data = jb.splice(jb.base_jpeg(), [jb.segment(0xE2, c) for c in ib.jpeg_chunks(ib.srgb(), 2)])
    kept = scrub(data)
    assert kept.data == data
    assert any(k.what == "colour profile" for k in kept.kept)
    gone = scrub(data, keep_icc=False)
    assert b"ICC_PROFILE\0" not in gone.data
    assert [r.carrier for r in gone.removed] == ["ICC profile", "ICC profile"]


@pytest.mark.parametrize("spare", [0, 1, 2, 3, 4, 5, 40])
def test_minimal_exif_padding_sizes(spare: int) -> None:
    """An Exif span just big enough, or a few bytes bigger: padding inside or after the APP1."""
    tiff = (b"MM\0*\0\0\0\x08\0\x01" + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + b"\0\0\0\0"
            + b"\x01" * spare)
    data = jb.splice(jb.base_jpeg(), [jb.segment(0xE1, b"Exif\0\0" + tiff)])
    res = scrub(data)
    assert len(res.data) == len(data)
    with Image.open(io.BytesIO(res.data)) as im:
        assert dict(im.getexif()) == {0x0112: 6}
    assert scrub(res.data).data == res.data
    assert scrub(res.data).removed == ()


def test_stuffed_bytes_restarts_and_fill_bytes_in_scan() -> None:
    """Restart intervals and FF fill before markers must not end or confuse the walk."""
    img = Image.new("RGB", (64, 64), "white")
    buf = io.BytesIO()
    img.save(buf, "JPEG", restart_marker_blocks=1)
    data = buf.getvalue()
    assert b"\xff\xdd" in data and b"\xff\xd0" in data
    eoi = data.rindex(b"\xff\xd9")
    filled = data[:eoi] + b"\xff\xff\xff" + data[eoi:] + b"tail " + M["mp4"]
    res = scrub(jb.splice(filled, [jb.segment(0xFE, M["com"])]))
    assert canary.find(res.data, M["com"]) == [] and canary.find(res.data, M["mp4"]) == []
    assert frames(res.data) == frames(data)


# -- refusal policy ------------------------------------------------------------------------

def test_truncated_scan_is_accepted_and_clean() -> None:
    data = jb.splice(jb.base_jpeg(), [jb.exif_app1(M["exif"])])
    cut = data[: data.rindex(b"\xff\xd9") - 20]
    res = scrub(cut)
    assert len(res.data) == len(cut)
    assert canary.find(res.data, M["exif"]) == []
    assert any(k.what == "truncated scan" for k in res.kept)


def _after_first(d: bytes) -> int:
    """Offset just past the first segment after SOI."""
    return 4 + int.from_bytes(d[4:6], "big")


@pytest.mark.parametrize("mangle,msg", [
    (lambda d: d[:200], "truncated"),  # inside the APP1
    (lambda d: d[:_after_first(d)] + b"\x00\x00" + d[_after_first(d):], "corrupt"),  # garbage where a marker must be
    (lambda d: d[:2] + b"\xff\xd8" + d[2:], "start-of-image"),
    (lambda d: d[:2] + b"\xff\x42\x00\x04\x00\x00" + d[2:], "reserved marker"),
])
def test_malformed_input_is_refused(mangle, msg: str) -> None:
    data = jb.splice(jb.base_jpeg(), [jb.exif_app1(M["exif"])])
    with pytest.raises(ScrubError, match=msg):
        scrub(mangle(data))


def test_header_without_eoi_is_refused() -> None:
    data = jb.base_jpeg()
    sos = data.index(b"\xff\xda")
    with pytest.raises(ScrubError, match="no end-of-image"):
        scrub(data[:sos])


def test_structure_count_is_bounded() -> None:
    data = jb.splice(jb.base_jpeg(), [jb.segment(0xEF, b"\0\0")] * 50)
    with pytest.raises(ScrubError, match="more than"):
        scrub(data, options=ScrubOptions(max_structures=20))


def test_verifier_rejects_leftovers() -> None:
    """Each leftover must be refused by the verifier on its own (a walker bug is caught)."""
    opts = ScrubOptions()
    jpeg_verify.verify(b"\xff\xd8" + jb.segment(0xE1, b"Exif\0\0" + b"MM\0*\0\0\0\x08\0\0\0\0\0\0")
                       + jb.segment(0xEF, b"\0\0") + b"\xff\xd9" + b"\0" * 9, opts)
    with pytest.raises(ScrubError):
        jpeg_verify.verify(b"\xff\xd8" + jb.segment(0xFE, b"hi") + b"\xff\xd9", opts)
    with pytest.raises(ScrubError):
        jpeg_verify.verify(b"\xff\xd8\xff\xd9" + b"x", opts)
    with pytest.raises(ScrubError):
        jpeg_verify.verify(b"\xff\xd8" + jb.segment(0xEF, b"\0x") + b"\xff\xd9", opts)
    with pytest.raises(ScrubError):
        jpeg_verify.verify(b"\xff\xd8" + jb.exif_app1(b"X", orientation=6) + b"\xff\xd9", opts)
    with pytest.raises(ScrubError):
        jpeg_verify.verify(b"\xff\xd8" + jb.jfif_app0(b"\1" * 3, 1, 1) + b"\xff\xd9", opts)
    with pytest.raises(ScrubError):
        jpeg_verify.verify(b"\xff\xd8" + jb.segment(0xE2, b"ICC_PROFILE\0\1\1")
                           + b"\xff\xd9", ScrubOptions(keep_icc=False))
    with pytest.raises(ScrubError):  # truncated TIFF in the Exif
        jpeg_verify.verify(b"\xff\xd8" + jb.segment(0xE1, b"Exif\0\0II*\0") + b"\xff\xd9", opts)
    with pytest.raises(ScrubError):  # a second (even minimal) Exif
        one = jb.segment(0xE1, b"Exif\0\0MM\0*\0\0\0\x08\0\0\0\0\0\0")
        jpeg_verify.verify(b"\xff\xd8" + one + one + b"\xff\xd9", opts)


# -- fuzzing -------------------------------------------------------------------------------

_FUZZ_BASE = jb.splice(jb.base_jpeg((16, 16)), [
    jb.jfif_app0(), jb.exif_app1(b"FUZZ", orientation=6), jb.xmp_app1(b"FUZZ"),
    jb.iptc_app13(b"FUZZ"), jb.segment(0xFE, b"FUZZ")], b"FUZZTRAILER")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_FUZZ_BASE) - 1), st.integers(0, 255)), max_size=8),
       st.integers(1, len(_FUZZ_BASE)), st.booleans())
def test_fuzz_mutations_refused_or_verified(edits, cut, compact) -> None:
    data = bytearray(_FUZZ_BASE)
    for pos, val in edits:
        data[pos] = val
    data = bytes(data[:cut])
    try:
        res = scrub(data, preserve_length=not compact)
    except ScrubError:
        return
    if compact:
        assert len(res.data) <= len(data)
        jpeg_verify.verify(res.data, ScrubOptions(preserve_length=False))
    else:
        assert len(res.data) == len(data)
        jpeg_verify.verify(res.data, ScrubOptions())
