"""HEIF / HEIC / AVIF: real corpus files, generated canaries and hostile containers.

Judged by ExifTool (allowlists), decoded pixels (pillow-heif for HEIC/HEIF, Pillow's
libavif plugin for AVIF, since this pillow-heif build has no AV1 decoder), lengths,
idempotence and the canary search.
"""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from exifguard import ScrubError, scrub
from exifguard.engine.report import ScrubOptions
from support import canary, corpus, oracle

pillow_heif = pytest.importorskip("pillow_heif")
pillow_heif.register_heif_opener()

MARKER = b"EXIFGUARDcanary7Q"
EXT = {"HEIC": ".heic", "HEIF": ".heif", "AVIF": ".avif"}


def decode(data: bytes) -> tuple[tuple[int, int], str, bytes]:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size, im.mode, im.tobytes()


def _ext(f: corpus.CorpusFile) -> str:
    return "." + f.name.rsplit(".", 1)[-1]


# --------------------------------------------------------------------------- corpus


@oracle.requires_exiftool
@pytest.mark.parametrize("f", corpus.params("HEIC", "HEIF", "AVIF"))
def test_corpus_file_is_clean_lossless_and_idempotent(f: corpus.CorpusFile) -> None:
    data = f.data
    result = scrub(data)
    out = result.data
    assert len(out) == len(data)
    assert result.removed, "every corpus file carries metadata"
    assert any(r.carrier == "HEIF Exif item" and r.tags for r in result.removed)

    tags = oracle.exiftool_bytes(out, _ext(f))
    assert oracle.leaks(f.format, tags) == []
    # Orientation lives in irot: ExifTool's view of it must not change.
    before = corpus.before_state().get(f.name, {})
    assert tags.get("QuickTime:Rotation") == before.get("QuickTime:Rotation")

    # Pixels and displayed size (irot/imir applied by the decoder) are identical.
    assert decode(out) == decode(data)

    again = scrub(out)
    assert again.data == out
    assert again.removed == ()


@pytest.mark.parametrize("f", corpus.params("HEIC", "HEIF", "AVIF", broken=True))
def test_broken_corpus_file_fails_closed(f: corpus.CorpusFile) -> None:
    try:
        result = scrub(f.data)
    except ScrubError:
        return
    assert len(result.data) == len(f.data)  # verified output is acceptable too


@pytest.mark.parametrize("f", corpus.params("HEIC", "HEIF", "AVIF"))
def test_corpus_without_preserve_length_is_not_larger(f: corpus.CorpusFile) -> None:
    out = scrub(f.data, preserve_length=False).data
    assert len(out) <= len(f.data)
    assert out == scrub(f.data).data  # documented: same in-place output


@pytest.mark.parametrize("f", corpus.params("HEIC", "HEIF", "AVIF"))
def test_reports_name_what_was_removed(f: corpus.CorpusFile) -> None:
    result = scrub(f.data)
    privacy = f.entry.get("privacy", {})
    if privacy.get("gps"):
        assert any(t.startswith("GPS") for t in result.tags), "GPS tags listed"
    if any(k.endswith(("Make", "Model")) for k in privacy.get("device", {})):
        assert {"Make", "Model"} & set(result.tags)


# --------------------------------------------------------------------------- canaries


def _exif() -> bytes:
    ex = Image.Exif()
    ex[0x010F] = "Make" + MARKER.decode()
    ex[0x013B] = "Artist" + MARKER.decode()
    ex.get_ifd(0x8769)[0x927C] = b"MakerNote" + MARKER  # a maker-note-ish blob in the Exif IFD
    gps = ex.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (51.0, 10.0, 42.0)
    return ex.tobytes()


XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="' + MARKER
       + b'"/></rdf:RDF></x:xmpmeta>')


def _image() -> Image.Image:
    return Image.linear_gradient("L").convert("RGB").resize((64, 48))


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def full(kind: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return box(kind, bytes([version]) + flags.to_bytes(3, "big") + payload)


def _heic_canary() -> bytes:
    im = _image()
    hf = pillow_heif.from_pillow(im)
    hf.info["exif"] = _exif()
    hf.info["xmp"] = XMP
    hf.info["thumbnails"] = [16]
    hf.add_from_pillow(im.rotate(90, expand=True))  # a second image with its own metadata
    hf[1].info["exif"] = _exif()
    hf[1].info["xmp"] = XMP
    b = io.BytesIO()
    hf.save(b, quality=90)
    return b.getvalue()


def _avif_canary() -> bytes:
    b = io.BytesIO()
    _image().save(b, "AVIF", exif=_exif(), xmp=XMP)
    return b.getvalue()


def _vendor_boxes() -> bytes:
    sefd = box(b"sefd", b"\0\0\0\0Image_UTC_Data" + MARKER + b"MCC=262")
    mpvd = box(b"mpvd", b"\0\0\0\x18ftypmp42" + MARKER * 4)
    uuid = box(b"uuid", bytes(16) + MARKER)
    return sefd + mpvd + uuid


@oracle.requires_exiftool
@pytest.mark.parametrize("kind", ["HEIC", "AVIF"])
def test_generated_canaries_do_not_survive(kind: str) -> None:
    if kind == "AVIF":
        from PIL import features
        if not features.check("avif"):
            pytest.skip("Pillow built without AVIF")
    base = _heic_canary() if kind == "HEIC" else _avif_canary()
    assert canary.find(base, MARKER), "the generator must plant the marker"
    data = base + _vendor_boxes() + MARKER + b"\x01"  # vendor boxes, then a raw trailer
    result = scrub(data)
    out = result.data
    assert canary.find(out, MARKER) == []
    assert len(out) == len(data)
    carriers = {r.carrier for r in result.removed}
    assert {"HEIF Exif item", "HEIF XMP item", "HEIF box sefd", "HEIF box mpvd", "HEIF box uuid",
            "data after last box"} <= carriers
    if kind == "HEIC":  # both images' Exif items are cleaned, not only the primary's
        assert sum(r.carrier == "HEIF Exif item" for r in result.removed) == 2
    assert "GPSLatitude" in result.tags and "MakerNote" in result.tags and "Creator" in result.tags
    assert decode(out) == decode(base)
    tags = oracle.exiftool_bytes(out, EXT[kind])
    assert oracle.leaks(kind, tags) == []
    assert scrub(out).data == out


def test_keep_icc_false_blanks_icc_property() -> None:
    f = next((c for c in corpus.files("HEIC") if "iphone11promax" in c.name), None)
    if f is None:
        pytest.skip(corpus.missing("the iPhone 11 Pro Max HEIC"))
    kept = scrub(f.data)
    dropped = scrub(f.data, keep_icc=False)
    assert any(k.what == "colour profile" for k in kept.kept)
    assert any(r.carrier == "ICC profile" for r in dropped.removed)
    assert b"prof" in kept.data[:4096] and b"colrprof" not in dropped.data[:4096]


# --------------------------------------------------------------------------- synthetic HEIF

IMAGE = b"\x00\x00\x00\x0c" + b"\x26\x01\xaf\x00" * 5  # stand-in coded data (never decoded here)


def build_heif(*, items: list[tuple[int, bytes, bytes, bytes, int]] | None = None, extra_meta: bytes = b"",
               extra_props: bytes = b"", iref: bytes | None = None, gap: bytes = b"",
               iloc_patch=None, tail: bytes = b"", infe_extra: bytes = b"",
               encodings: dict[int, bytes] | None = None) -> bytes:
    """A small HEIF: items are (id, type, content_type, data, construction_method).
    Method-0 data goes to mdat (after `gap`), method-1 data to idat."""
    if items is None:
        items = [(1, b"hvc1", b"", IMAGE, 0), (2, b"Exif", b"", b"\0\0\0\0" + _exif(), 0),
                 (3, b"mime", b"application/rdf+xml", XMP, 0)]
    ftyp = box(b"ftyp", b"heic\0\0\0\0mif1heic")

    def meta_for(mdat_payload_at: int) -> bytes:
        infes = b""
        for iid, typ, ctype, _, _ in items:
            body = struct.pack(">HH", iid, 0) + typ + b"\0"
            if typ == b"mime":
                body += ctype + b"\0"
                if encodings and iid in encodings:
                    body += encodings[iid] + b"\0"
            infes += full(b"infe", 2, 0, body)
        iinf = full(b"iinf", 0, 0, struct.pack(">H", len(items)) + infes + infe_extra)
        entries = b""
        mdat_pos = mdat_payload_at + len(gap)
        idat_pos = 0
        for iid, _, _, data, method in items:
            if method == 0:
                off, mdat_pos = mdat_pos, mdat_pos + len(data)
            else:
                off, idat_pos = idat_pos, idat_pos + len(data)
            entries += struct.pack(">HHHHII", iid, method, 0, 1, off, len(data))
        iloc = full(b"iloc", 1, 0, bytes([0x44, 0x00]) + struct.pack(">H", len(items)) + entries)
        if iloc_patch:
            iloc = iloc_patch(iloc)
        hdlr = full(b"hdlr", 0, 0, b"\0\0\0\0pict" + bytes(12) + b"Handler\0")
        pitm = full(b"pitm", 0, 0, struct.pack(">H", 1))
        ipco = box(b"ipco", box(b"ispe", bytes(4) + struct.pack(">II", 8, 8)) + extra_props)
        ipma = full(b"ipma", 0, 0, struct.pack(">IHBB", 1, 1, 1, 0x81))
        iprp = box(b"iprp", ipco + ipma)
        refs = iref if iref is not None else full(b"iref", 0, 0, box(b"cdsc", struct.pack(">HHH", 2, 1, 1)))
        idat_data = b"".join(d for _, _, _, d, m in items if m == 1)
        idat = box(b"idat", idat_data) if idat_data else b""
        return full(b"meta", 0, 0, hdlr + pitm + iinf + iloc + iprp + refs + idat + extra_meta)

    probe = meta_for(0)
    at = len(ftyp) + len(probe) + 8
    meta = meta_for(at)
    assert len(meta) == len(probe)
    mdat = box(b"mdat", gap + b"".join(d for _, _, _, d, m in items if m == 0))
    return ftyp + meta + mdat + tail


def test_synthetic_baseline_is_cleaned_and_verified() -> None:
    data = build_heif(gap=b"LEFTOVER" + MARKER, tail=MARKER)
    result = scrub(data)
    assert canary.find(result.data, MARKER) == []
    assert IMAGE in result.data  # image item untouched
    carriers = [r.carrier for r in result.removed]
    assert "HEIF unreferenced mdat data" in carriers and "data after last box" in carriers
    assert b"Handler" not in result.data  # handler name blanked
    assert scrub(result.data).removed == ()


def test_synthetic_idat_exif_mime_other_and_meta_xml_box() -> None:
    items = [(1, b"hvc1", b"", IMAGE, 0), (2, b"Exif", b"", b"\0\0\0\0" + _exif(), 1),
             (3, b"mime", b"application/rdf+xml", XMP, 1), (4, b"mime", b"text/plain", MARKER, 0),
             (5, b"uri ", b"", MARKER, 0)]
    udes = full(b"udes", 0, 0, b"en\0" + MARKER + b"\0\0\0")
    data = build_heif(items=items, extra_meta=box(b"xml ", XMP), extra_props=udes)
    result = scrub(data)
    assert canary.find(result.data, MARKER) == []
    carriers = {r.carrier for r in result.removed}
    assert {"HEIF Exif item", "HEIF XMP item", "HEIF mime item", "HEIF uri  item", "HEIF box xml ",
            "HEIF box udes"} <= carriers


def test_tiny_exif_and_xmp_items_use_documented_fallback() -> None:
    items = [(1, b"hvc1", b"", IMAGE, 0), (2, b"Exif", b"", b"\0\0\0\0MM\0*", 0),
             (3, b"mime", b"application/rdf+xml", b"<x:xmp>", 0)]
    out = scrub(build_heif(items=items)).data
    assert b"MM\0*" not in out and b"<x:xmp>" not in out


def test_compressed_xmp_encoding_is_blanked() -> None:
    items = [(1, b"hvc1", b"", IMAGE, 0), (3, b"mime", b"application/rdf+xml", XMP, 0)]
    data = build_heif(items=items, iref=b"", encodings={3: b"deflate"})
    assert b"application/rdf+xml\0deflate\0" in data
    result = scrub(data)
    assert b"deflate" not in result.data
    assert canary.find(result.data, MARKER) == []
    assert any(r.carrier == "HEIF XMP item" for r in result.removed)


# --------------------------------------------------------------------------- hostile


def _expect_error(data: bytes) -> None:
    with pytest.raises(ScrubError):
        scrub(data)


def test_top_level_box_past_end() -> None:
    data = bytearray(build_heif())
    mdat_at = data.rfind(b"mdat") - 4
    data[mdat_at:mdat_at + 4] = struct.pack(">I", len(data))  # larger than what is left
    _expect_error(bytes(data))


def test_nested_box_past_end_and_nested_size_zero() -> None:
    data = build_heif(extra_meta=box(b"zzzz", b"abc"))
    at = data.find(b"zzzz") - 4
    bad = data[:at] + struct.pack(">I", 4096) + data[at + 4:]
    _expect_error(bad)
    zero = data[:at] + struct.pack(">I", 0) + data[at + 4:]
    _expect_error(zero)


def test_largesize_hostile_or_shifted_is_refused() -> None:
    data = build_heif()
    at = data.rfind(b"mdat") - 4
    mdat_payload = data[at + 8:]
    good = data[:at] + struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", 16 + len(mdat_payload)) + mdat_payload
    # offsets in iloc now point 8 bytes early: the Exif extent lands partly in the header -> refused
    _expect_error(good)
    huge = data[:at] + struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", 2 ** 63) + mdat_payload
    _expect_error(huge)
    tiny = data[:at] + struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", 3) + mdat_payload
    _expect_error(tiny)


def test_largesize_mdat_is_cleaned() -> None:
    # A well-formed 64-bit mdat: build with an 8-byte shift accounted for by a leading gap.
    data = build_heif(gap=bytes(8))
    at = data.rfind(b"mdat") - 4
    payload = data[at + 16:]  # drop the 8 gap bytes; iloc offsets now match a 16-byte header
    good = data[:at] + struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", 16 + len(payload)) + payload
    result = scrub(good)
    assert any(r.carrier == "HEIF Exif item" for r in result.removed)
    assert canary.find(result.data, MARKER) == []


def _patch_extent(index: int, offset: int | None = None, length: int | None = None):
    def patch(iloc: bytes) -> bytes:
        b = bytearray(iloc)
        entry = 16 + 16 * index  # header(8)+fullbox(4)+sizes(2)+count(2), then 16-byte entries
        if offset is not None:
            b[entry + 8:entry + 12] = struct.pack(">I", offset)
        if length is not None:
            b[entry + 12:entry + 16] = struct.pack(">I", length)
        return bytes(b)
    return patch


def test_iloc_extent_out_of_range() -> None:
    _expect_error(build_heif(iloc_patch=_patch_extent(1, offset=10_000_000)))
    _expect_error(build_heif(iloc_patch=_patch_extent(1, length=10_000_000)))


def test_iloc_extent_overlapping_image() -> None:
    data = build_heif()
    image_at = data.find(IMAGE)
    _expect_error(build_heif(iloc_patch=_patch_extent(1, offset=image_at)))


def test_iloc_extent_inside_meta_is_refused() -> None:
    _expect_error(build_heif(iloc_patch=_patch_extent(1, offset=40, length=20)))


def test_construction_method_2_cannot_be_cleaned() -> None:
    def method2(iloc: bytes) -> bytes:
        b = bytearray(iloc)
        entry = 16 + 16  # the Exif item's entry: id(2) method(2) dref(2) count(2) offset(4) length(4)
        b[entry + 2:entry + 4] = struct.pack(">H", 2)
        return bytes(b)
    with pytest.raises(ScrubError, match="cannot clean"):
        scrub(build_heif(iloc_patch=method2))


def test_iref_loops_are_refused_quickly() -> None:
    loop = full(b"iref", 0, 0, box(b"dimg", struct.pack(">HHH", 1, 1, 4)) + box(b"dimg", struct.pack(">HHH", 4, 1, 1)))
    _expect_error(build_heif(iref=loop))
    self_ref = full(b"iref", 0, 0, box(b"thmb", struct.pack(">HHH", 1, 1, 1)))
    _expect_error(build_heif(iref=self_ref))


def test_huge_counts_fail_fast() -> None:
    def huge_iloc(iloc: bytes) -> bytes:
        b = bytearray(iloc)
        b[14:16] = b"\xff\xff"
        return bytes(b)
    _expect_error(build_heif(iloc_patch=huge_iloc))
    data = bytearray(build_heif())
    at = data.find(b"iinf") + 8
    data[at:at + 2] = b"\xff\xff"
    _expect_error(bytes(data))
    data = bytearray(build_heif())
    at = data.find(b"ipma") + 8
    data[at:at + 4] = b"\xff\xff\xff\xff"
    _expect_error(bytes(data))


def test_too_many_boxes_hit_the_budget() -> None:
    many = box(b"free", b"") * 5000
    data = build_heif(extra_meta=many)
    with pytest.raises(ScrubError, match="too many"):
        scrub(data, options=ScrubOptions(max_structures=1000))


def test_moov_and_missing_meta_are_refused() -> None:
    data = build_heif()
    _expect_error(data + box(b"moov", box(b"mvhd", bytes(100))))
    ftyp = box(b"ftyp", b"heic\0\0\0\0mif1heic")
    _expect_error(ftyp + box(b"mdat", b"x" * 32))


def test_truncated_file() -> None:
    data = build_heif()
    for cut in (20, 60, len(data) // 2, len(data) - 3):
        try:
            out = scrub(data[:cut]).data
        except ScrubError:
            continue
        assert MARKER not in out


def test_random_mutations_never_crash() -> None:
    import random
    rng = random.Random(1234)
    base = build_heif()
    for _ in range(300):
        b = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(12, len(b))] = rng.randrange(256)
        try:
            out = scrub(bytes(b)).data
        except ScrubError:
            continue
        assert len(out) == len(b)
        assert canary.find(out, MARKER) == []


# --------------------------------------------------------------------------- verifier


def test_verifier_rejects_what_the_writer_must_remove() -> None:
    from exifguard.engine.verify import heif as vheif
    opts = ScrubOptions()
    dirty = build_heif(gap=MARKER)
    with pytest.raises(ScrubError):
        vheif.verify(dirty, opts)  # Exif/XMP items untouched
    clean = scrub(dirty).data
    vheif.verify(clean, opts)
    exif_at = clean.find(b"MM\0*\0\0\0\x08")
    for at, what in ((exif_at + 20, "Exif tail"), (exif_at + 4, "Exif TIFF"), (len(clean) - 1, "XMP tail"),
                     (clean.rfind(b"mdat") + 4, "mdat gap")):
        bad = bytearray(clean)
        bad[at] = 0x41 if bad[at] != 0x41 else 0x42
        with pytest.raises(ScrubError):
            vheif.verify(bytes(bad), opts)
    with pytest.raises(ScrubError):
        vheif.verify(clean + box(b"sefd", b"x"), opts)
    with pytest.raises(ScrubError):
        vheif.verify(clean + box(b"free", b"x"), opts)
    with pytest.raises(ScrubError):
        vheif.verify(clean + b"x", opts)


def test_verifier_does_not_import_the_writer() -> None:
    import ast
    import pathlib

    import exifguard.engine.verify as vpkg
    for name in ("heif.py", "jxl.py", "_boxes.py"):
        tree = ast.parse((pathlib.Path(vpkg.__file__).parent / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert "formats" not in (node.module or ""), name
            elif isinstance(node, ast.Import):
                assert not any("formats" in a.name for a in node.names), name
