"""WebP walker and verifier: corpus invariants, canaries in synthesised files, fuzzing.

Each test can fail: lengths, ExifTool's view of the output, decoded pixels of every
frame, displayed orientation and canary searches are all compared for real.
"""

from __future__ import annotations

import io
import struct

import piexif
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps, ImageSequence

from exifguard import ScrubError, scrub
from exifguard.engine import ScrubOptions
from exifguard.engine.verify import webp as webp_verify
from support import canary, corpus, fuzz, oracle

from . import icc_builders as ib

MARK = b"EGCANARY-webp-5c1e"
COMPACT = ScrubOptions(preserve_length=False)


# -- builders ---------------------------------------------------------------------------------

def _image(size: tuple[int, int] = (40, 24), mode: str = "RGB", seed: int = 0) -> Image.Image:
    w, h = size
    img = Image.new(mode, size)
    px = [((x * 9 + seed) % 256, (y * 11 + seed) % 256, (x * y + seed) % 256) for y in range(h)
          for x in range(w)]
    if mode == "RGBA":
        px = [p + ((p[0] + p[1]) % 256,) for p in px]
    img.putdata(px)
    return img


def _exif_bytes(orientation: int | None = None) -> bytes:
    """EXIF with Artist, Make, serial, GPS (all carrying the canary) and maybe Orientation."""
    zeroth = {piexif.ImageIFD.Artist: MARK + b" artist", piexif.ImageIFD.Make: MARK + b" make"}
    if orientation is not None:
        zeroth[piexif.ImageIFD.Orientation] = orientation
    exif = {piexif.ExifIFD.BodySerialNumber: MARK + b" serial"}
    gps = {piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((52, 1), (31, 1), (7, 1)),
           piexif.GPSIFD.GPSProcessingMethod: b"ASCII\0\0\0" + MARK}
    return piexif.dump({"0th": zeroth, "Exif": exif, "GPS": gps})


def _xmp(orientation: int | None = None) -> bytes:
    extra = f' tiff:Orientation="{orientation}"' if orientation else ""
    return (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
            b'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
            b'xmlns:exif="http://ns.adobe.com/exif/1.0/" dc:creator="' + MARK + b'" '
            b'exif:GPSLatitude="52,31.1N"' + extra.encode() + b'/></rdf:RDF></x:xmpmeta>'
            b'<?xpacket end="w"?>')


def _save(img: Image.Image | list[Image.Image], **kw) -> bytes:
    buf = io.BytesIO()
    if isinstance(img, list):
        img[0].save(buf, "WEBP", save_all=True, append_images=img[1:], duration=80, loop=3, **kw)
    else:
        img.save(buf, "WEBP", **kw)
    return buf.getvalue()


def _chunk(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) % 2 else b"")


def _append_chunks(webp: bytes, chunks: list[bytes], trailing: bytes = b"") -> bytes:
    """Add chunks inside the RIFF container and bytes past its declared size."""
    riff_end = 8 + struct.unpack_from("<I", webp, 4)[0]
    body = webp[:riff_end] + b"".join(chunks)
    return body[:4] + struct.pack("<I", len(body) - 8) + body[8:] + trailing


def _chunk_list(webp: bytes) -> list[bytes]:
    out, p = [], 12
    end = 8 + struct.unpack_from("<I", webp, 4)[0]
    while p + 8 <= end:
        size = struct.unpack_from("<I", webp, p + 4)[0]
        out.append(webp[p:p + 4])
        p += 8 + size + (size & 1)
    return out


def _frames(data: bytes) -> list[bytes]:
    with Image.open(io.BytesIO(data)) as im:
        return [f.convert("RGBA").tobytes() for f in ImageSequence.Iterator(im)]


def _displayed(data: bytes) -> tuple[tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as im:
        t = ImageOps.exif_transpose(im.convert("RGBA"))
        return t.size, t.tobytes()


def _orientation(data: bytes) -> int | None:
    with Image.open(io.BytesIO(data)) as im:
        return im.getexif().get(0x0112)


def _check_clean(data: bytes, out: bytes, *, compact: bytes | None = None) -> None:
    assert len(out) == len(data)
    assert _frames(out) == _frames(data)
    assert _displayed(out) == _displayed(data)
    assert scrub(out).data == out, "not idempotent"
    if compact is not None:
        assert len(compact) <= len(data)
        assert _frames(compact) == _frames(data)
        assert _displayed(compact) == _displayed(data)


# -- corpus -----------------------------------------------------------------------------------

@pytest.mark.parametrize("f", corpus.params("WEBP"))
def test_corpus_webp_invariants(f) -> None:
    data = f.data
    res = scrub(data)
    compact = scrub(data, options=COMPACT)
    _check_clean(data, res.data, compact=compact.data)
    assert scrub(compact.data, options=COMPACT).data == compact.data


@oracle.requires_exiftool
@pytest.mark.parametrize("f", corpus.params("WEBP"))
def test_corpus_webp_exiftool_sees_nothing_private(f) -> None:
    res = scrub(f.data)
    tags = oracle.exiftool_bytes(res.data, ".webp")
    assert oracle.leaks("WEBP", tags) == []
    assert oracle.leaks("WEBP", oracle.exiftool_bytes(scrub(f.data, options=COMPACT).data, ".webp")) == []
    # the orientation seen before is still there (1 is simply omitted)
    before = f.entry.get("orientation")
    if before and before != 1:
        assert "IFD0:Orientation" in tags
        assert _orientation(res.data) == before


@pytest.mark.parametrize("f", corpus.params("WEBP"))
def test_corpus_webp_reports_metadata(f) -> None:
    res = scrub(f.data)
    priv = f.entry.get("privacy", {})
    if priv.get("gps"):
        assert any(r.carrier == "WebP EXIF" and any("GPS" in t for t in r.tags) for r in res.removed)
    if priv.get("xmp"):
        assert any(r.carrier == "WebP XMP" for r in res.removed)


@pytest.mark.parametrize("f", corpus.params("WEBP", broken=True))
def test_broken_webp_refused_or_verified(f) -> None:
    try:
        res = scrub(f.data)
    except ScrubError as exc:
        assert "WebP" in str(exc) or "WEBP" in str(exc)
        return
    assert len(res.data) == len(f.data)
    webp_verify.verify(res.data, ScrubOptions())


# -- synthesised files with canaries ----------------------------------------------------------

def test_lossy_exif_xmp_orientation6() -> None:
    data = _save(_image(), exif=_exif_bytes(6), xmp=_xmp(), quality=80)
    assert canary.find(data, MARK)
    assert _orientation(data) == 6
    res = scrub(data)
    assert canary.find(res.data, MARK) == []
    assert _orientation(res.data) == 6
    assert {"GPSLatitude", "Artist", "BodySerialNumber"} <= set(res.tags)
    assert any(k.what == "orientation" for k in res.kept)
    _check_clean(data, res.data, compact=scrub(data, options=COMPACT).data)
    # no orientation wanted: EXIF goes entirely, flag cleared
    bare = scrub(data, keep_orientation=False).data
    assert b"EXIF" not in bare[12:] and _orientation(bare) is None
    assert bare[20] & 0x08 == 0


def test_lossless_vp8l_with_xmp_and_gps() -> None:
    data = _save(_image((33, 17), "RGBA"), lossless=True, exif=_exif_bytes(), xmp=_xmp())
    assert b"VP8L" in data and canary.find(data, MARK)
    res = scrub(data)
    assert canary.find(res.data, MARK) == []
    assert "GPSLatitude" in res.tags
    assert _chunk_list(res.data) == [b"VP8X", b"VP8L", b"JUNK", b"JUNK"]
    assert res.data[20] & 0x0C == 0  # EXIF and XMP flags cleared
    _check_clean(data, res.data, compact=scrub(data, options=COMPACT).data)
    assert _chunk_list(scrub(data, options=COMPACT).data) == [b"VP8X", b"VP8L"]


def test_animated_webp_with_exif_xmp_unknown_chunk_and_trailer() -> None:
    frames = [_image(seed=s) for s in (0, 60, 120)]
    data = _save(frames, exif=_exif_bytes(6), xmp=_xmp(), lossless=True)
    data = _append_chunks(data, [_chunk(b"ZZZZ", MARK + b" unknown"), _chunk(b"XMP\0", _xmp())],
                          trailing=MARK + b" after riff")
    res = scrub(data)
    assert canary.find(res.data, MARK) == []
    carriers = {r.carrier for r in res.removed}
    assert {"WebP EXIF", "WebP XMP", "WebP ZZZZ", "data past RIFF size"} <= carriers
    with Image.open(io.BytesIO(res.data)) as im:
        assert im.n_frames == 3 and im.info.get("loop") == 3
    assert _orientation(res.data) == 6
    _check_clean(data, res.data, compact=scrub(data, options=COMPACT).data)
    compact = scrub(data, options=COMPACT).data
    assert canary.find(compact, MARK) == [] and len(compact) < len(data)


def test_unknown_chunk_inside_anmf_is_neutralised() -> None:
    frames = [_image(seed=s) for s in (0, 90)]
    data = bytearray(_save(frames, lossless=True))
    # put an unknown sub-chunk at the end of the first ANMF frame
    p = 12
    while data[p:p + 4] != b"ANMF":
        p += 8 + struct.unpack_from("<I", data, p + 4)[0]
    size = struct.unpack_from("<I", data, p + 4)[0]
    extra = _chunk(b"ZZZZ", MARK)
    data[p + 8 + size:p + 8 + size] = extra
    struct.pack_into("<I", data, p + 4, size + len(extra))
    struct.pack_into("<I", data, 4, len(data) - 8)
    data = bytes(data)
    assert _frames(data)  # still decodes
    res = scrub(data)
    assert canary.find(res.data, MARK) == []
    _check_clean(data, res.data, compact=scrub(data, options=COMPACT).data)


def test_simple_webp_with_chunks_after_image() -> None:
    data = _save(_image(), quality=70)
    assert _chunk_list(data) == [b"VP8 "]
    data = _append_chunks(data, [_chunk(b"EXIF", _exif_bytes(6)[6:]), _chunk(b"ZZZZ", MARK)])
    res = scrub(data)
    assert canary.find(res.data, MARK) == []
    assert _chunk_list(res.data) == [b"VP8 ", b"JUNK", b"JUNK"]
    assert _frames(res.data) == _frames(data)


def test_xmp_only_orientation_becomes_minimal_exif() -> None:
    data = _save(_image(), xmp=_xmp(orientation=8), quality=80)
    assert _orientation(data) == 8
    res = scrub(data)
    assert canary.find(res.data, MARK) == []
    assert _orientation(res.data) == 8
    assert b"EXIF" in _chunk_list(res.data) and res.data[20] & 0x08
    _check_clean(data, res.data)


def test_icc_dropped_when_not_kept() -> None:
    data = _save(_image(), icc_profile=ib.srgb(), quality=80)
    assert scrub(data).data[20] & 0x20
    res = scrub(data, keep_icc=False)
    assert b"ICCP" not in res.data and res.data[20] & 0x20 == 0
    assert "ICC profile" in [r.carrier for r in res.removed]
    # a "profile" that is not one never survives, whatever the policy (test_kept_structures)
    fake = _save(_image(), icc_profile=b"\0\0\x02\x0c" + MARK + bytes(600), quality=80)
    res = scrub(fake)
    assert canary.find(res.data, MARK) == [] and res.data[20] & 0x20 == 0


@oracle.requires_exiftool
def test_synthesised_webp_exiftool_clean() -> None:
    frames = [_image(seed=s) for s in (0, 60)]
    samples = [
        _save(_image(), exif=_exif_bytes(6), xmp=_xmp(), quality=80),
        _save(_image((33, 17), "RGBA"), lossless=True, exif=_exif_bytes(), xmp=_xmp()),
        _append_chunks(_save(frames, exif=_exif_bytes(3), xmp=_xmp()), [_chunk(b"ZZZZ", MARK)], MARK),
    ]
    for data in samples:
        before = oracle.exiftool_bytes(data, ".webp")
        assert oracle.leaks("WEBP", before), "sample should carry metadata to begin with"
        after = oracle.exiftool_bytes(scrub(data).data, ".webp")
        assert oracle.leaks("WEBP", after) == []


# -- malformed input --------------------------------------------------------------------------

@pytest.mark.parametrize("mangle, needle", [
    (lambda d: d[:4] + struct.pack("<I", len(d)) + d[8:], "RIFF size"),
    (lambda d: d[:16] + struct.pack("<I", 1 << 30) + d[20:], "past the end"),
    (lambda d: d[:12] + b"JUNK" + d[16:], "first chunk"),
])
def test_malformed_webp_refused(mangle, needle) -> None:
    data = _save(_image(), exif=_exif_bytes(), quality=80)
    with pytest.raises(ScrubError, match=needle):
        scrub(mangle(data))


def test_vp8x_without_image_refused() -> None:
    vp8x = _chunk(b"VP8X", bytes(10))
    body = b"WEBP" + vp8x + _chunk(b"EXIF", _exif_bytes()[6:])
    with pytest.raises(ScrubError, match="no image"):
        scrub(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_verifier_rejects_leftovers() -> None:
    data = _save(_image(), exif=_exif_bytes(6), xmp=_xmp(), quality=80)
    with pytest.raises(ScrubError):
        webp_verify.verify(data, ScrubOptions())
    clean = bytearray(scrub(data).data)
    webp_verify.verify(bytes(clean), ScrubOptions())
    clean[-1] = 1  # a byte inside the JUNK that replaced XMP
    with pytest.raises(ScrubError):
        webp_verify.verify(bytes(clean), ScrubOptions())


_FUZZ_BASE = _append_chunks(_save(_image((16, 8)), exif=_exif_bytes(6), xmp=_xmp(), quality=60),
                            [_chunk(b"ZZZZ", MARK)], b"tail")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_FUZZ_BASE) - 1), st.integers(0, 255)), max_size=6),
       st.integers(12, len(_FUZZ_BASE)))
def test_fuzzed_webp_refused_or_verified(edits, cut) -> None:
    fuzz.assert_refused_or_verified(fuzz.damage(_FUZZ_BASE, edits, cut), webp_verify.verify)


def test_values_only_on_request() -> None:
    data = _save(_image(), exif=_exif_bytes(6), quality=80)
    assert all(r.values == () for r in scrub(data).removed)
    res = scrub(data, options=ScrubOptions(collect_values=True))
    values = dict(v for r in res.removed for v in r.values)
    assert MARK.decode() in values.get("Artist", "")


def test_chunk_count_is_bounded() -> None:
    data = _append_chunks(_save(_image(), quality=80), [_chunk(b"ZZZZ", b"")] * 20)
    assert len(scrub(data).data) == len(data)
    with pytest.raises(ScrubError, match="too many"):
        scrub(data, options=ScrubOptions(max_structures=10))


def test_anim_chunk_extra_bytes_are_zeroed_and_verified() -> None:
    """Regression: bytes after ANIM's 6-byte payload (a kept chunk) survived scrubbing."""
    frames = [_image(seed=1), _image(seed=2)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    data = buf.getvalue()
    at = data.find(b"ANIM")
    assert at > 0 and struct.unpack_from("<I", data, at + 4)[0] == 6
    extra = MARK + b"\0" * (len(MARK) & 1)
    grown = data[:at + 4] + struct.pack("<I", 6 + len(extra)) + data[at + 8:at + 14] + extra + data[at + 14:]
    grown = grown[:4] + struct.pack("<I", len(grown) - 8) + grown[8:]
    for opts in (ScrubOptions(), COMPACT):
        out = scrub(grown, options=opts).data
        assert not canary.find(out, MARK)
        with Image.open(io.BytesIO(out)) as im:
            assert im.n_frames == 2
    bad = bytearray(scrub(grown).data)
    bad[at + 14:at + 14 + len(MARK)] = MARK  # the verifier must refuse it on its own
    with pytest.raises(ScrubError):
        webp_verify.verify(bytes(bad), ScrubOptions())
