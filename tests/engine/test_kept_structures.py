"""Issue 11 §5: a structure the walkers keep must be what it claims to be.

Each reproduction from the issue is a test here, checked twice: the walker must clean
it (no private byte left, pixels and length unchanged) or refuse it with ScrubError,
and the format's verifier, on its own, must refuse the uncleaned input (so a walker
bug that kept it would still be caught).  Carrier names must never quote payload
bytes: a canary placed in an identifier must not reach the report or an error text.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from exifguard import ScrubError, scrub
from exifguard.engine import ScrubOptions
from exifguard.engine.verify import jpeg as jpeg_verify
from support import canary

from . import icc_builders as ib
from . import jpeg_builders as jb

CANARY = b"JaneDoe+15550100"


def pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.mode, im.size, im.tobytes()


def report_text(res) -> str:
    return repr(res.removed) + repr(res.kept)


def assert_clean(data: bytes, *, opts: ScrubOptions | None = None, same_pixels: bool = True,
                 reference: bytes | None = None):
    """Scrub in both modes: no canary left, length kept, idempotent, pixels unchanged
    (against `reference` when the input itself does not decode)."""
    res = scrub(data, options=opts or ScrubOptions())
    assert len(res.data) == len(data)
    assert canary.find(res.data, CANARY) == []
    assert CANARY.decode() not in report_text(res)
    assert scrub(res.data, options=opts or ScrubOptions()).data == res.data
    if same_pixels:
        assert pixels(res.data) == pixels(reference or data)
    compact = scrub(data, options=ScrubOptions(preserve_length=False))
    assert len(compact.data) <= len(data)
    assert canary.find(compact.data, CANARY) == []
    return res


# -- JPEG: markers and tables -----------------------------------------------------------------

def _exif_as(marker: int) -> bytes:
    """The canary Exif APP1 of the issue with its marker byte changed (even payload length)."""
    seg = jb.exif_app1(CANARY, orientation=None)
    if len(seg) % 2:  # the old DAC check only looked at an even length: make it pass that
        seg = jb.segment(0xE1, seg[4:] + b"\0")
    return bytes([0xFF, marker]) + seg[2:]


def test_jpeg_exif_behind_a_dac_marker_in_a_huffman_frame_is_neutralised() -> None:
    data = jb.splice(jb.base_jpeg(), [_exif_as(0xCC)])
    assert canary.find(data, CANARY)
    # libjpeg itself rejects those "conditioning values", so compare with the plain image
    res = assert_clean(data, reference=jb.base_jpeg())
    assert "marker 0xFFCC" in [r.carrier for r in res.removed]
    with pytest.raises(ScrubError, match="DAC"):
        jpeg_verify.verify(data, ScrubOptions())


def _as_arithmetic(data: bytes) -> bytes:
    """Relabel the frame as arithmetic-coded (SOF9); the walker does not decode scans."""
    at = data.index(b"\xff\xc0")
    return data[:at] + b"\xff\xc9" + data[at + 2:]


def test_jpeg_valid_dac_is_kept_in_an_arithmetic_frame_and_bogus_dac_refused() -> None:
    dac = jb.segment(0xCC, bytes([0x00, 0x10, 0x10, 0x05]))  # DC0: L=0,U=1; AC0: K=5
    data = _as_arithmetic(jb.splice(jb.base_jpeg(), [dac]))
    res = scrub(data)
    # the DAC stays; the Huffman tables mean nothing in an arithmetic frame and go
    assert dac in res.data
    assert {r.carrier for r in res.removed} == {"unused DHT"}
    jpeg_verify.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="does not match"):
        scrub(_as_arithmetic(jb.splice(jb.base_jpeg(), [_exif_as(0xCC)])))
    with pytest.raises(ScrubError):
        jpeg_verify.verify(_as_arithmetic(jb.splice(jb.base_jpeg(), [_exif_as(0xCC)])), ScrubOptions())


@pytest.mark.parametrize("marker", [0xC8, 0xDE, 0xDF, 0xF0, 0xF7, 0xFD], ids=lambda m: f"FF{m:02X}")
def test_jpeg_extension_markers_carrying_exif_are_neutralised(marker: int) -> None:
    data = jb.splice(jb.base_jpeg(), [_exif_as(marker)])
    assert_clean(data, reference=jb.base_jpeg())  # libjpeg refuses these markers itself
    with pytest.raises(ScrubError):
        jpeg_verify.verify(data, ScrubOptions())


@pytest.mark.parametrize("payload,what", [
    (b"\x04" + bytes(64), "DQT table id 4"),
    (b"\x20" + bytes(128), "DQT precision 2"),
    (b"\x24" + bytes(16) + b"", "DHT class 2"),
    (b"\x05" + bytes(16), "DHT id 5"),
])
def test_jpeg_tables_naming_tables_no_decoder_has_are_refused(payload: bytes, what: str) -> None:
    marker = 0xDB if what.startswith("DQT") else 0xC4
    data = jb.splice(jb.base_jpeg(), [jb.segment(marker, payload)])
    with pytest.raises(ScrubError, match="does not match"):
        scrub(data)
    with pytest.raises(ScrubError):
        jpeg_verify.verify(data, ScrubOptions())


def test_jpeg_table_with_text_after_its_tables_is_refused() -> None:
    """A DQT/DHT whose declared tables do not exactly fill the segment is a hiding place."""
    base = jb.base_jpeg()
    for marker, table in ((0xDB, b"\x01" + bytes(range(1, 65))), (0xC4, b"\x01" + bytes([1] + [0] * 15) + b"\x00")):
        data = jb.splice(base, [jb.segment(marker, table + CANARY)])
        with pytest.raises(ScrubError, match="does not match"):
            scrub(data)
        with pytest.raises(ScrubError):
            jpeg_verify.verify(data, ScrubOptions())


def test_jpeg_second_frame_header_is_refused() -> None:
    base = jb.base_jpeg()
    at = base.index(b"\xff\xc0")
    sof = base[at:at + 2 + struct.unpack_from(">H", base, at + 2)[0]]
    data = base[:at] + sof + base[at:]
    with pytest.raises(ScrubError, match="more than one frame"):
        scrub(data)
    with pytest.raises(ScrubError, match="more than one frame"):
        jpeg_verify.verify(data, ScrubOptions())


def test_jpeg_second_jfif_and_adobe_segments_are_neutralised() -> None:
    jfif2 = jb.segment(0xE0, b"JFIF\0\x01\x02\x00" + CANARY[:4] + b"\0\0")
    adobe2 = jb.segment(0xEE, b"Adobe" + CANARY[:7])
    data = jb.splice(jb.base_jpeg(), [jb.jfif_app0(), jb.segment(0xEE, b"Adobe\0\x64\0\0\0\0\x01"),
                                      jfif2, adobe2])
    res = scrub(data)
    assert [r.carrier for r in res.removed] == ["APP0 JFIF", "APP14 Adobe"]
    assert CANARY[:7] not in res.data and CANARY[:4] not in res.data
    assert pixels(res.data) == pixels(data)
    with pytest.raises(ScrubError, match="one JFIF|one plain Adobe"):
        jpeg_verify.verify(data, ScrubOptions())


# -- JPEG: ICC profiles ------------------------------------------------------------------------

def _icc_jpeg(chunks: list[bytes]) -> bytes:
    return jb.splice(jb.base_jpeg(), [jb.segment(0xE2, c) for c in chunks])


def test_jpeg_real_icc_profile_in_several_segments_is_kept() -> None:
    data = _icc_jpeg(ib.jpeg_chunks(ib.srgb(), 3))
    res = scrub(data)
    assert res.data == data
    assert ("colour profile", "ICC (3 segments)") in [(k.what, k.detail) for k in res.kept]
    jpeg_verify.verify(data, ScrubOptions())


@pytest.mark.parametrize("chunks", [
    pytest.param(lambda: ib.jpeg_chunks(ib.text_posing_as_profile(CANARY)), id="plain-text"),
    pytest.param(lambda: ib.jpeg_chunks(ib.profile_with_payload(CANARY), 2), id="stretched-profile"),
    pytest.param(lambda: ib.jpeg_chunks(ib.srgb()) + ib.jpeg_chunks(ib.text_posing_as_profile(CANARY)),
                 id="second-profile"),
    pytest.param(lambda: ib.jpeg_chunks(ib.srgb(), 2)[:1] + ib.jpeg_chunks(CANARY * 20, 2)[1:],
                 id="chunk-counts-mixed"),
    pytest.param(lambda: ib.jpeg_chunks(ib.srgb(), 2, count=3), id="chunk-missing"),
    pytest.param(lambda: [c[:12] + b"\x01\x01" + c[14:] for c in ib.jpeg_chunks(ib.srgb() + CANARY, 2)],
                 id="duplicate-sequence-numbers"),
])
def test_jpeg_icc_segments_that_are_not_one_profile_are_neutralised(chunks) -> None:
    pieces = chunks()
    data = _icc_jpeg(pieces)
    res = assert_clean(data)
    removed = [r for r in res.removed if r.carrier == "ICC profile"]
    assert len(removed) == len(pieces)
    assert not any(k.what == "colour profile" for k in res.kept)
    assert b"ICC_PROFILE" not in res.data
    with pytest.raises(ScrubError, match="colour profile|ICC"):
        jpeg_verify.verify(data, ScrubOptions())


# -- JPEG: carrier names never quote payload bytes -------------------------------------------

@pytest.mark.parametrize("marker", range(0xE0, 0xF0), ids=lambda m: f"APP{m - 0xE0}")
def test_jpeg_unknown_appn_is_named_by_marker_only(marker: int) -> None:
    data = jb.splice(jb.base_jpeg(), [jb.segment(marker, CANARY + b"\0" + CANARY)])
    res = scrub(data)
    assert [r.carrier for r in res.removed] == ["IPTC (APP13)" if marker == 0xED else f"APP{marker - 0xE0}"]
    assert CANARY.decode() not in report_text(res)
    assert "Jane" not in report_text(res)


def test_jpeg_known_appn_identifiers_are_named() -> None:
    segs = [jb.segment(0xE5, b"ssuniqueid\0" + CANARY), jb.segment(0xEC, b"Ducky\0" + CANARY),
            jb.segment(0xE2, b"MPF\0" + CANARY), jb.segment(0xEB, b"HDR_RI ver=11" + CANARY)]
    res = scrub(jb.splice(jb.base_jpeg(), segs))
    assert [r.carrier for r in res.removed] == ["APP5 ssuniqueid", "APP12 Ducky", "APP2 MPF", "APP11 HDR_RI"]


# -- PNG ----------------------------------------------------------------------------------------

from exifguard.engine.verify import png as png_verify  # noqa: E402


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def png_parts(data: bytes) -> list[bytes]:
    """The chunks of a PNG (whole, with length and CRC), in order."""
    out, pos = [], 8
    while pos < len(data):
        n = struct.unpack_from(">I", data, pos)[0]
        out.append(data[pos:pos + 12 + n])
        pos += 12 + n
    return out


def png_types(data: bytes) -> list[bytes]:
    return [c[4:8] for c in png_parts(data)]


def base_png(mode: str = "RGB", size: tuple[int, int] = (12, 7)) -> bytes:
    im = Image.new(mode, size)
    if mode == "P":
        im.putpalette(bytes(range(48)))
        im.putdata([(x + y) % 16 for y in range(size[1]) for x in range(size[0])])
    else:
        im.putdata([((x * 20) % 256, (y * 30) % 256, 77) for y in range(size[1]) for x in range(size[0])])
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def png_insert(png: bytes, extra: list[bytes], *, before: bytes = b"IDAT", after_idat: list[bytes] = ()) -> bytes:
    """Put `extra` before the first `before` chunk and `after_idat` right after the IDAT run."""
    parts = png_parts(png)
    at = next(i for i, c in enumerate(parts) if c[4:8] == before)
    parts[at:at] = extra
    end = max(i for i, c in enumerate(parts) if c[4:8] == b"IDAT") + 1
    parts[end:end] = list(after_idat)
    return png[:8] + b"".join(parts)


def iccp(profile: bytes, keyword: bytes = b"ICC Profile", tail: bytes = b"") -> bytes:
    return png_chunk(b"iCCP", keyword + b"\0\0" + zlib.compress(profile) + tail)


XMP_TEXT = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description dc:creator="'
            + CANARY + b'"/></rdf:RDF></x:xmpmeta>')


def test_png_real_iccp_is_kept() -> None:
    data = png_insert(base_png(), [iccp(ib.srgb())])
    res = scrub(data)
    assert res.data == data
    assert ("colour profile", "PNG iCCP") in [(k.what, k.detail) for k in res.kept]
    png_verify.verify(data, ScrubOptions())


@pytest.mark.parametrize("chunk", [
    pytest.param(lambda: iccp(XMP_TEXT), id="zlib-compressed-xmp"),
    pytest.param(lambda: iccp(ib.text_posing_as_profile(CANARY)), id="plain-text"),
    pytest.param(lambda: iccp(ib.profile_with_payload(CANARY)), id="stretched-profile"),
    pytest.param(lambda: iccp(ib.srgb(), tail=zlib.compress(CANARY)), id="data-after-the-stream"),
    pytest.param(lambda: png_chunk(b"iCCP", b"ICC\0\0" + zlib.compress(ib.srgb() + CANARY * 8)[:-9]),
                 id="stream-cut-short"),
])
def test_png_iccp_that_is_not_a_profile_is_neutralised(chunk) -> None:
    data = png_insert(base_png(), [chunk()])
    res = assert_clean(data)
    assert [r.carrier for r in res.removed] == ["ICC profile"]
    assert b"iCCP" not in png_types(res.data)
    with pytest.raises(ScrubError, match="iCCP"):
        png_verify.verify(data, ScrubOptions())


def test_png_iccp_bigger_than_the_inflate_limit_is_neutralised() -> None:
    data = png_insert(base_png(), [iccp(ib.srgb())])
    opts = ScrubOptions(max_inflate_bytes=200)
    res = scrub(data, options=opts)
    assert [r.carrier for r in res.removed] == ["ICC profile"]
    with pytest.raises(ScrubError):
        png_verify.verify(data, opts)


def test_png_second_iccp_is_neutralised() -> None:
    data = png_insert(base_png(), [iccp(ib.srgb()), iccp(XMP_TEXT)])
    res = assert_clean(data)
    assert png_types(res.data).count(b"iCCP") == 1
    assert [r.carrier for r in res.removed] == ["ICC profile"]
    with pytest.raises(ScrubError, match="more than one"):
        png_verify.verify(data, ScrubOptions())


def _fctl(seq: int, w: int = 12, h: int = 7) -> bytes:
    return png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, w, h, 0, 0, 1, 10, 0, 0))


def test_png_fdat_and_fctl_without_actl_are_neutralised() -> None:
    fdat = png_chunk(b"fdAT", struct.pack(">I", 2) + zlib.compress(CANARY * 4))
    data = png_insert(base_png(), [_fctl(0)], after_idat=[_fctl(1), fdat])
    res = assert_clean(data)
    assert not {b"fcTL", b"fdAT"} & set(png_types(res.data))
    assert {r.carrier for r in res.removed} == {"PNG fcTL", "PNG fdAT"}
    with pytest.raises(ScrubError, match="declares no animation"):
        png_verify.verify(data, ScrubOptions())


def test_png_actl_after_the_image_data_does_not_make_it_animated() -> None:
    actl = png_chunk(b"acTL", struct.pack(">II", 2, 0))
    fdat = png_chunk(b"fdAT", struct.pack(">I", 2) + zlib.compress(CANARY * 4))
    data = png_insert(base_png(), [], after_idat=[actl, _fctl(1), fdat])
    res = assert_clean(data, reference=base_png())  # Pillow rejects the input's frame sequence
    assert not {b"acTL", b"fcTL", b"fdAT"} & set(png_types(res.data))
    with pytest.raises(ScrubError):
        png_verify.verify(data, ScrubOptions())


def test_real_apng_is_kept_animated() -> None:
    frames = [Image.new("RGB", (6, 4), (40 * k, 90, 200 - 50 * k)) for k in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:], duration=50)
    data = buf.getvalue()
    res = scrub(data)
    assert res.data == data
    png_verify.verify(data, ScrubOptions())


def test_png_stray_idat_after_a_complete_stream_is_neutralised_pixels_identical() -> None:
    stray = png_chunk(b"IDAT", zlib.compress(CANARY * 30))
    gap = png_chunk(b"skIp", bytes(8))  # even our own padding ends the IDAT run
    data = png_insert(base_png(), [], after_idat=[gap, stray])
    res = assert_clean(data)
    assert png_types(res.data).count(b"IDAT") == 1
    assert "PNG IDAT" in [r.carrier for r in res.removed]
    with pytest.raises(ScrubError, match="not contiguous"):
        png_verify.verify(data, ScrubOptions())


def test_png_image_data_split_by_another_chunk_is_refused() -> None:
    png = base_png("RGB", (64, 40))
    parts = png_parts(png)
    i = next(k for k, c in enumerate(parts) if c[4:8] == b"IDAT")
    body = parts[i][8:-4]
    half = len(body) // 2
    parts[i:i + 1] = [png_chunk(b"IDAT", body[:half]), png_chunk(b"tEXt", b"Comment\0" + CANARY),
                      png_chunk(b"IDAT", body[half:])]
    data = png[:8] + b"".join(parts)
    with pytest.raises(ScrubError, match="split"):
        scrub(data)
    with pytest.raises(ScrubError):
        png_verify.verify(data, ScrubOptions())


@pytest.mark.parametrize("ctype", [b"PLTE", b"tRNS"])
def test_png_duplicate_palette_or_transparency_is_refused(ctype: bytes) -> None:
    png = base_png("P")
    if ctype == b"tRNS":
        png = png_insert(png, [png_chunk(b"tRNS", b"\0\x80")])
    dup = png_chunk(ctype, (CANARY * 3)[:48] if ctype == b"PLTE" else CANARY)
    data = png_insert(png, [dup])
    with pytest.raises(ScrubError, match="more than one"):
        scrub(data)
    with pytest.raises(ScrubError, match="more than one"):
        png_verify.verify(data, ScrubOptions())


def test_png_trns_after_the_image_data_is_neutralised() -> None:
    data = png_insert(base_png("P"), [], after_idat=[png_chunk(b"tRNS", CANARY)])
    res = assert_clean(data)
    assert b"tRNS" not in png_types(res.data)
    with pytest.raises(ScrubError, match="after the image data"):
        png_verify.verify(data, ScrubOptions())


# -- WebP ---------------------------------------------------------------------------------------

from exifguard.engine.verify import webp as webp_verify  # noqa: E402


def riff_chunk(fourcc: bytes, body: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(body)) + body + b"\0" * (len(body) & 1)


def webp_parts(data: bytes) -> list[bytes]:
    out, pos, end = [], 12, 8 + struct.unpack_from("<I", data, 4)[0]
    while pos < end:
        n = struct.unpack_from("<I", data, pos + 4)[0]
        out.append(data[pos:pos + 8 + n + (n & 1)])
        pos += 8 + n + (n & 1)
    return out


def webp_join(parts: list[bytes]) -> bytes:
    body = b"WEBP" + b"".join(parts)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_types(data: bytes) -> list[bytes]:
    return [c[:4] for c in webp_parts(data)]


def webp_image(mode: str = "RGBA", *, lossless: bool = False, **kw) -> bytes:
    im = Image.new(mode, (10, 6))
    px = [((x * 25) % 256, (y * 40) % 256, 90, 255 - 20 * x)[:len(mode)] for y in range(6) for x in range(10)]
    im.putdata(px)
    buf = io.BytesIO()
    im.save(buf, "WEBP", lossless=lossless, quality=80, **kw)
    return buf.getvalue()


def test_webp_lossy_with_alpha_is_kept_as_is() -> None:
    data = webp_image()
    assert webp_types(data) == [b"VP8X", b"ALPH", b"VP8 "]
    assert scrub(data).data == data
    webp_verify.verify(data, ScrubOptions())


def test_webp_extra_alph_before_the_image_is_refused() -> None:
    parts = webp_parts(webp_image())
    data = webp_join(parts[:2] + [riff_chunk(b"ALPH", b"\0" + CANARY)] + parts[2:])
    with pytest.raises(ScrubError, match="two ALPH"):
        scrub(data)
    with pytest.raises(ScrubError, match="exactly one picture"):
        webp_verify.verify(data, ScrubOptions())


def test_webp_alph_after_the_image_is_neutralised() -> None:
    original = webp_image()
    data = webp_join(webp_parts(original) + [riff_chunk(b"ALPH", b"\0" + CANARY)])
    res = assert_clean(data, reference=original)
    assert webp_types(res.data) == [b"VP8X", b"ALPH", b"VP8 ", b"JUNK"]
    with pytest.raises(ScrubError, match="exactly one picture"):
        webp_verify.verify(data, ScrubOptions())


def test_webp_second_vp8l_is_neutralised() -> None:
    original = webp_image(lossless=True, icc_profile=ib.srgb())  # the profile makes it VP8X
    parts = webp_parts(original)
    assert [p[:4] for p in parts] == [b"VP8X", b"ICCP", b"VP8L"]
    data = webp_join(parts + [riff_chunk(b"VP8L", b"\x2f" + CANARY)])
    res = assert_clean(data, reference=original)
    assert webp_types(res.data) == [b"VP8X", b"ICCP", b"VP8L", b"JUNK"]
    assert ("WebP VP8L", ("<second image>",)) in [(r.carrier, r.tags) for r in res.removed]
    with pytest.raises(ScrubError, match="exactly one picture"):
        webp_verify.verify(data, ScrubOptions())


def test_webp_alph_beside_a_lossless_image_is_neutralised() -> None:
    original = webp_image(lossless=True, icc_profile=ib.srgb())
    parts = webp_parts(original)
    data = webp_join(parts[:2] + [riff_chunk(b"ALPH", b"\0" + CANARY)] + parts[2:])
    res = assert_clean(data, reference=original)
    assert webp_types(res.data) == [b"VP8X", b"ICCP", b"JUNK", b"VP8L"]
    with pytest.raises(ScrubError):
        webp_verify.verify(data, ScrubOptions())


def _animated() -> bytes:
    frames = [Image.new("RGBA", (8, 5), (60 * k, 100, 30, 255)) for k in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=40, lossless=True)
    return buf.getvalue()


def test_webp_animation_chunks_in_a_still_file_are_neutralised() -> None:
    original = webp_image()
    anmf = [p for p in webp_parts(_animated()) if p[:4] == b"ANMF"][0]
    data = webp_join(webp_parts(original) + [riff_chunk(b"ANIM", bytes(6)), anmf,
                                             riff_chunk(b"ANIM", CANARY)])
    res = assert_clean(data, reference=original)
    assert webp_types(res.data) == [b"VP8X", b"ALPH", b"VP8 ", b"JUNK", b"JUNK", b"JUNK"]
    with pytest.raises(ScrubError, match="not flagged as animated"):
        webp_verify.verify(data, ScrubOptions())


def test_webp_still_image_chunk_in_an_animation_is_neutralised() -> None:
    original = _animated()
    parts = webp_parts(original)
    data = webp_join(parts + [riff_chunk(b"VP8L", b"\x2f" + CANARY)])
    res = scrub(data)
    assert canary.find(res.data, CANARY) == [] and len(res.data) == len(data)
    assert webp_types(res.data)[-1] == b"JUNK"
    with pytest.raises(ScrubError, match="animated"):
        webp_verify.verify(data, ScrubOptions())
    assert scrub(original).data == original


def test_webp_real_icc_is_kept_and_fake_icc_neutralised() -> None:
    real = webp_image(icc_profile=ib.srgb())
    assert b"ICCP" in webp_types(real)
    assert scrub(real).data == real
    webp_verify.verify(real, ScrubOptions())
    parts = webp_parts(real)
    fake = webp_join([riff_chunk(b"ICCP", ib.text_posing_as_profile(CANARY)) if p[:4] == b"ICCP" else p
                      for p in parts])
    res = assert_clean(fake)
    assert "ICC profile" in [r.carrier for r in res.removed]
    assert res.data[20] & 0x20 == 0
    with pytest.raises(ScrubError, match="ICCP"):
        webp_verify.verify(fake, ScrubOptions())


# -- colour profiles elsewhere: HEIF colr, TIFF InterColorProfile, GIF ICCRGBG1012 --------------

from exifguard.engine.verify import gif as gif_verify  # noqa: E402
from exifguard.engine.verify import heif as heif_verify  # noqa: E402
from exifguard.engine.verify import tiff as tiff_verify  # noqa: E402

from . import test_gif as gifb  # noqa: E402
from . import test_heif as heifb  # noqa: E402


def heif_with_props(props: bytes, positions: list[int]) -> bytes:
    """A synthetic HEIF whose item 1 is associated with ispe (1) and `positions`."""
    data = heifb.build_heif(extra_props=props)
    old_ipma = heifb.full(b"ipma", 0, 0, struct.pack(">IHBB", 1, 1, 1, 0x81))
    links = bytes([0x81] + positions)
    new_ipma = heifb.full(b"ipma", 0, 0, struct.pack(">IHB", 1, 1, len(links)) + links)
    assert old_ipma in data
    return _grow_boxes(data.replace(old_ipma, new_ipma), [b"meta", b"iprp"], len(new_ipma) - len(old_ipma))


@pytest.mark.parametrize("kind", [b"prof", b"rICC"])
def test_heif_colr_profile_must_be_icc(kind: bytes) -> None:
    real = heif_with_props(heifb.box(b"colr", kind + ib.srgb()), [2])
    res = scrub(real)
    assert ib.srgb() in res.data and ("colour profile", "HEIF colr ICC") in [(k.what, k.detail) for k in res.kept]
    heif_verify.verify(res.data, ScrubOptions())
    fake = heif_with_props(heifb.box(b"colr", kind + ib.text_posing_as_profile(CANARY)), [2])
    res = scrub(fake)
    assert canary.find(res.data, CANARY) == [] and len(res.data) == len(fake)
    assert "ICC profile" in [r.carrier for r in res.removed]
    assert scrub(res.data).data == res.data
    # the verifier on its own: a cleaned file whose kept profile is swapped for text
    clean = scrub(real).data
    at = clean.index(ib.srgb())
    swapped = clean[:at] + (ib.text_posing_as_profile(CANARY) * 4)[:len(ib.srgb())] + clean[at + len(ib.srgb()):]
    with pytest.raises(ScrubError, match="colour profile"):
        heif_verify.verify(swapped, ScrubOptions())


def _tiff(profile: bytes) -> bytes:
    im = Image.new("RGB", (8, 6), (10, 120, 200))
    buf = io.BytesIO()
    im.save(buf, "TIFF", icc_profile=profile)
    return buf.getvalue()


def test_tiff_icc_tag_must_be_icc() -> None:
    real = _tiff(ib.srgb())
    res = scrub(real)
    assert ib.srgb() in res.data
    assert ("colour profile", "TIFF ICC_Profile tag") in [(k.what, k.detail) for k in res.kept]
    tiff_verify.verify(res.data, ScrubOptions())
    fake = _tiff(ib.text_posing_as_profile(CANARY))
    res = assert_clean(fake)
    assert "TIFF ICC profile" in [r.carrier for r in res.removed]
    with pytest.raises(ScrubError, match="colour profile"):
        tiff_verify.verify(fake, ScrubOptions())


def test_gif_icc_extension_must_be_icc_and_only_one() -> None:
    real = gifb._app(b"ICCRGBG1012", ib.srgb())
    fake = gifb._app(b"ICCRGBG1012", ib.text_posing_as_profile(CANARY))
    for exts, kept in (([real], True), ([fake], False), ([real, real], True)):
        data = gifb._splice(gifb._gif(1, loop=None), exts)
        res = scrub(data)
        assert canary.find(res.data, CANARY) == [] and len(res.data) == len(data)
        assert res.data.count(b"ICCRGBG1012") == int(kept)
        assert scrub(res.data).data == res.data
        gif_verify.verify(res.data, ScrubOptions())
        if exts != [real]:
            with pytest.raises(ScrubError, match="ICC|colour profile"):
                gif_verify.verify(data, ScrubOptions())


# -- names in reports and errors never quote free payload bytes ----------------------------------

def test_gif_unknown_application_identifier_is_not_quoted() -> None:
    ident = b"JaneDoe+155"  # 8-byte identifier + 3-byte code, both free text
    data = gifb._splice(gifb._gif(1, loop=None), [gifb._app(ident, b"0100 " + CANARY)])
    res = scrub(data)
    assert "GIF application" in [r.carrier for r in res.removed]
    assert "JaneDoe" not in report_text(res) and canary.find(res.data, CANARY) == []


def test_webp_type_codes_outside_letters_and_digits_are_shown_in_hex() -> None:
    base = webp_parts(webp_image(lossless=True, icc_profile=ib.srgb()))
    data = webp_join(base + [riff_chunk(b"J+1\x00", CANARY)])
    res = scrub(data)
    assert "WebP 0x4A2B3100" in [r.carrier for r in res.removed]
    # an overrunning chunk is refused; the message shows the code in hex too
    bad = webp_join(base) + b"J+1\x00" + struct.pack("<I", 999) + CANARY
    bad = bad[:4] + struct.pack("<I", len(bad) - 8) + bad[8:]
    with pytest.raises(ScrubError) as exc:
        scrub(bad)
    assert "J+1" not in str(exc.value) and "0x4A2B3100" in str(exc.value)


def test_heif_box_and_item_types_outside_letters_and_digits_are_shown_in_hex() -> None:
    items = [(1, b"hvc1", b"", heifb.IMAGE, 0), (2, b"J+1!", b"", CANARY, 0)]
    data = heifb.build_heif(items=items, tail=b"")
    data = data + heifb.box(b"Ja$e", CANARY)
    res = scrub(data)
    carriers = [r.carrier for r in res.removed]
    assert "HEIF 0x4A2B3121 item" in carriers and "HEIF box 0x4A612465" in carriers
    assert "J+1!" not in report_text(res) and "Ja$e" not in report_text(res)


# -- JPEG: tables no scan decodes with ---------------------------------------------------------

def _dht_table(cls: int, ident: int, symbols: bytes) -> bytes:
    counts = bytearray(16)
    counts[7] = len(symbols)  # all codes 8 bits long
    return bytes([cls << 4 | ident]) + bytes(counts) + symbols


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_jpeg_unused_tables_carrying_text_are_neutralised(progressive: bool) -> None:
    base = jb.base_jpeg(progressive=progressive)
    unused_dqt = jb.segment(0xDB, b"\x03" + (CANARY * 4)[:64])          # table 3: no component uses it
    unused_dht = jb.segment(0xC4, _dht_table(1, 3, CANARY * 2))           # AC table 3: no scan uses it
    data = jb.splice(base, [unused_dqt, unused_dht])
    # and a mixed segment: a used table followed by an unused one, plus a table redefined after
    # the last scan (nothing decodes with it any more)
    at = data.index(b"\xff\xc4")
    n = struct.unpack_from(">H", data, at + 2)[0]
    mixed = jb.segment(0xC4, data[at + 4:at + 2 + n] + _dht_table(0, 2, bytes(range(12)) + CANARY[:4]))
    data = data[:at] + mixed + data[at + 2 + n:]
    eoi = data.rindex(b"\xff\xd9")
    data = data[:eoi] + jb.segment(0xDB, b"\x00" + (CANARY * 4)[:64]) + data[eoi:]
    res = assert_clean(data)
    assert {r.carrier for r in res.removed} == {"unused DQT", "unused DHT"}
    jpeg_verify.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="used by no scan"):
        jpeg_verify.verify(data, ScrubOptions())


def test_jpeg_corpus_like_tables_all_used_stay_byte_identical() -> None:
    for progressive in (False, True):
        for mode in ("RGB", "L"):
            data = jb.base_jpeg(progressive=progressive, mode=mode)
            res = scrub(data)
            assert not any(r.carrier.startswith("unused") for r in res.removed)


# -- PNG: sizes and chunks the colour type decides (fuzz findings E1, E1b) ------------------------

@pytest.mark.parametrize("mode,extra,gone", [
    ("RGB", png_chunk(b"tRNS", b"Exif\0\0" + CANARY), b"tRNS"),       # type 2 tRNS is 6 bytes
    ("RGB", png_chunk(b"PLTE", (CANARY * 3)[:36]), b"PLTE"),           # suggested palette
    ("L", png_chunk(b"PLTE", (CANARY * 3)[:36]), b"PLTE"),             # forbidden in greyscale
    ("RGB", png_chunk(b"bKGD", CANARY[:2]), b"bKGD"),                  # type 2 bKGD is 6 bytes
    ("RGB", png_chunk(b"sBIT", CANARY[:4]), b"sBIT"),                  # type 2 sBIT is 3 bytes
])
def test_png_chunks_the_colour_type_does_not_allow_are_neutralised(mode: str, extra: bytes, gone: bytes) -> None:
    im = Image.new(mode, (9, 5), 120 if mode == "L" else (10, 200, 30))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    data = png_insert(buf.getvalue(), [extra])
    res = scrub(data)
    assert gone not in png_types(res.data) and len(res.data) == len(data)
    assert canary.find(res.data, CANARY[:2] if gone in (b"bKGD",) else CANARY[:4]) == []
    assert pixels(res.data) == pixels(data)
    png_verify.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="colour type|palette"):
        png_verify.verify(data, ScrubOptions())


def test_png_right_sized_colour_chunks_are_kept() -> None:
    im = Image.new("RGB", (9, 5), (10, 200, 30))
    buf = io.BytesIO()
    im.save(buf, "PNG", transparency=(10, 200, 30))
    data = png_insert(buf.getvalue(), [png_chunk(b"bKGD", bytes(6)), png_chunk(b"sBIT", b"\x08\x08\x08")])
    assert scrub(data).data == data
    png_verify.verify(data, ScrubOptions())


# -- ISOBMFF: one ftyp of brands only; JXL frame index and level (fuzz finding E2) --------------

from pathlib import Path  # noqa: E402

from exifguard.engine.verify import jxl as jxl_verify  # noqa: E402

REGRESSIONS = Path(__file__).parent / "regressions"


@pytest.mark.parametrize("name,verifier", [
    ("E2-jxl-second-ftyp.jxl", jxl_verify), ("E2b-jxl-jxli-box.jxl", jxl_verify),
    ("E2c-avif-ftyp.avif", heif_verify),
])
def test_container_boxes_that_are_not_what_they_claim(name: str, verifier) -> None:
    data = (REGRESSIONS / name).read_bytes()
    with pytest.raises(ScrubError):
        verifier.verify(data, ScrubOptions())
    try:
        res = scrub(data)
    except ScrubError as exc:
        assert "ftyp" in str(exc)
        return
    assert canary.find(res.data, b"EGFUZZCANARY31415") == []
    verifier.verify(res.data, ScrubOptions())


def test_heif_second_ftyp_is_blanked_and_first_must_hold_brands_only() -> None:
    data = heifb.build_heif() + heifb.box(b"ftyp", b"heic\0\0\0\0" + CANARY)
    res = scrub(data)
    assert canary.find(res.data, CANARY) == [] and "HEIF box ftyp" in [r.carrier for r in res.removed]
    bad = heifb.box(b"ftyp", b"heic\0\0\0\0mif1" + CANARY) + heifb.build_heif()[24:]
    with pytest.raises(ScrubError, match="ftyp"):
        scrub(bad)


def test_jpeg_scan_before_any_frame_header_is_refused() -> None:
    """Fuzz note: `FFD8 FFDA ...` kept everything after the SOS header as "scan data"."""
    data = b"\xff\xd8\xff\xda\x00\x08\x01\x01?\x01^\x86EGFUZZCANARY31415"
    with pytest.raises(ScrubError, match="before any frame header"):
        scrub(data)
    with pytest.raises(ScrubError, match="before any frame header"):
        jpeg_verify.verify(data, ScrubOptions())


def test_heif_item_with_two_icc_profiles_is_refused() -> None:
    two = heifb.box(b"colr", b"prof" + ib.srgb()) + heifb.box(b"colr", b"rICC" + ib.srgb())
    data = heif_with_props(two, [2, 3])  # item 1: ispe and both profiles
    with pytest.raises(ScrubError, match="more than one ICC"):
        scrub(data)
    blank_handler = data.replace(b"Handler\0", bytes(8))  # as the walker leaves it
    with pytest.raises(ScrubError, match="more than one ICC"):
        heif_verify.verify(blank_handler, ScrubOptions())


def _grow_boxes(data: bytes, kinds: list[bytes], grown: int) -> bytes:
    out = bytearray(data)
    for kind in kinds:
        at = out.index(kind) - 4
        struct.pack_into(">I", out, at, struct.unpack_from(">I", out, at)[0] + grown)
    # iloc extents (version 1, 4-byte offsets) point into mdat, which moved by `grown`
    at = out.index(b"iloc") + 4 + 4 + 2
    count = struct.unpack_from(">H", out, at)[0]
    p = at + 2
    for _ in range(count):
        p += 2 + 2 + 2 + 2  # id, method, dref, extent count
        struct.pack_into(">I", out, p, struct.unpack_from(">I", out, p)[0] + grown)
        p += 8
    return bytes(out)


# -- JXL bare codestream that carries another image (fuzz finding C2, engine side) ---------------

def test_jxl_bare_codestream_holding_a_jpeg_or_metadata_is_refused() -> None:
    jpeg = jb.splice(jb.base_jpeg((8, 8)), [jb.segment(0xFE, CANARY)])
    for inner in (jpeg, b"Exif\0\0MM\0*" + CANARY, b"<x:xmpmeta " + CANARY, base_png()):
        data = b"\xff\x0a\x1f" + inner
        with pytest.raises(ScrubError, match="bare codestream"):
            scrub(data)
        with pytest.raises(ScrubError, match="bare codestream"):
            jxl_verify.verify(data, ScrubOptions())


def test_jxl_bare_codestream_of_noise_is_still_accepted() -> None:
    import random
    rng = random.Random(11)
    data = b"\xff\x0a" + bytes(rng.getrandbits(8) for _ in range(1 << 20))
    assert scrub(data).data == data
    jxl_verify.verify(data, ScrubOptions())


def test_jpeg_icc_segments_after_the_first_scan_are_neutralised() -> None:
    """Decoders read the profile from the header; an ICC set after a scan is unused."""
    base = jb.base_jpeg(progressive=True)
    second_scan = base.index(b"\xff\xda", base.index(b"\xff\xda") + 2)
    # a DHT usually precedes the second scan; put the profile just before that scan's tables
    at = base.rindex(b"\xff\xc4", 0, second_scan)
    segs = b"".join(jb.segment(0xE2, c) for c in ib.jpeg_chunks(ib.srgb(), 2))
    data = base[:at] + segs + base[at:]
    res = assert_clean(data)
    assert b"ICC_PROFILE" not in res.data
    with pytest.raises(ScrubError, match="after the first scan"):
        jpeg_verify.verify(data, ScrubOptions())


# -- the two ICC checks: written apart, agreeing ----------------------------------------------

import ast  # noqa: E402
import importlib  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from exifguard.engine import icc as walker_icc  # noqa: E402
from exifguard.engine.verify import _icc as verifier_icc  # noqa: E402


def test_verifiers_do_not_use_the_walkers_icc_parser() -> None:
    verify_dir = Path(importlib.import_module("exifguard.engine.verify").__file__).parent
    for path in verify_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = {node.module or ""} | {a.name for a in node.names}
                assert not (node.level == 2 and "icc" in names), f"{path.name} imports engine.icc"


def _agree(blob: bytes) -> None:
    walker_ok = walker_icc.problem(blob) is None
    try:
        verifier_icc.check(blob, "test")
        verifier_ok = True
    except ScrubError:
        verifier_ok = False
    assert walker_ok == verifier_ok


def test_icc_checks_agree_on_real_and_fake_profiles() -> None:
    for blob in (ib.srgb(), ib.text_posing_as_profile(CANARY), ib.profile_with_payload(CANARY),
                 ib.srgb() + b"\0\0\0", ib.srgb() + b"\0\0\0\0", ib.srgb() + b"x", ib.srgb()[:-1]):
        _agree(blob)
    assert walker_icc.problem(ib.srgb() + b"\0\0\0") is None  # container padding tolerated


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 587), st.integers(0, 255)), min_size=1, max_size=4))
def test_icc_checks_agree_on_mutated_profiles(edits) -> None:
    blob = bytearray(ib.srgb())
    for at, value in edits:
        blob[at % len(blob)] = value
    _agree(bytes(blob))


# -- TIFF: JPEG streams inside the image follow the JPEG rules ---------------------------------

from . import test_tiff as tiffb  # noqa: E402


def _jpeg_in_tiff(jpeg: bytes) -> bytes:
    b = tiffb.Builder("<")
    strip = b.blob(jpeg)
    entries = [(256, 3, [48]), (257, 3, [32]), (258, 3, [8, 8, 8]), (259, 3, [7]), (262, 3, [6]),
               (273, 4, [strip]), (277, 3, [3]), (278, 3, [32]), (279, 4, [len(jpeg)]), (284, 3, [1])]
    return b.done(b.ifd(entries))


def test_tiff_jpeg_strip_with_exif_behind_a_dac_marker_is_neutralised() -> None:
    data = _jpeg_in_tiff(jb.splice(jb.base_jpeg(), [_exif_as(0xCC), _exif_as(0xF3)]))
    res = scrub(data)
    assert canary.find(res.data, CANARY) == [] and len(res.data) == len(data)
    assert {"TIFF embedded JPEG marker 0xFFCC", "TIFF embedded JPEG marker 0xFFF3"} <= \
        {r.carrier for r in res.removed}
    assert scrub(res.data).data == res.data
    tiff_verify.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="DAC|marker"):
        tiff_verify.verify(data, ScrubOptions())


def test_tiff_jpeg_strip_with_text_after_its_tables_is_refused() -> None:
    table = jb.segment(0xDB, b"\x01" + bytes(range(1, 65)) + CANARY)
    data = _jpeg_in_tiff(jb.splice(jb.base_jpeg(), [table]))
    with pytest.raises(ScrubError, match="does not match its length"):
        scrub(data)
    with pytest.raises(ScrubError, match="fill its length"):
        tiff_verify.verify(data, ScrubOptions())


def test_jpeg_restart_intervals_no_scan_uses_are_neutralised() -> None:
    base = jb.base_jpeg()
    words = [CANARY[k:k + 2] for k in range(0, len(CANARY), 2)]
    idle = b"".join(jb.segment(0xDD, w) for w in words)        # each redefined before any scan
    sos = base.index(b"\xff\xda")
    data = base[:sos] + idle + jb.segment(0xDD, b"\0\0") + base[sos:]
    eoi = data.rindex(b"\xff\xd9")
    data = data[:eoi] + jb.segment(0xDD, b"Zz") + data[eoi:]  # after the last scan
    res = assert_clean(data)
    assert [r.carrier for r in res.removed].count("unused DRI") == len(words) + 1
    jpeg_verify.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="restart interval"):
        jpeg_verify.verify(data, ScrubOptions())


def test_png_extra_or_misplaced_copies_of_small_kept_chunks_are_neutralised() -> None:
    pieces = [png_chunk(b"gAMA", CANARY[k:k + 4]) for k in range(0, 16, 4)]  # 4 copies: 1 kept
    data = png_insert(base_png(), pieces, after_idat=[png_chunk(b"pHYs", CANARY[:9])])
    res = assert_clean(data)
    assert png_types(res.data).count(b"gAMA") == 1 and b"pHYs" not in png_types(res.data)
    png_verify.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="more than one"):
        png_verify.verify(data, ScrubOptions())
    palette = png_insert(base_png("P"), [png_chunk(b"gAMA", CANARY[:4])])  # after PLTE
    res = scrub(palette)
    assert b"gAMA" not in png_types(res.data) and pixels(res.data) == pixels(palette)
    with pytest.raises(ScrubError, match="after the palette"):
        png_verify.verify(palette, ScrubOptions())


def test_heif_properties_no_item_uses_are_blanked() -> None:
    props = heifb.box(b"colr", b"prof" + ib.srgb()) + heifb.box(b"pasp", CANARY[:8]) \
        + heifb.box(b"ispe", bytes(4) + CANARY[8:16])
    data = heif_with_props(props, [2])  # pasp (3) and the second ispe (4) belong to nothing
    res = scrub(data)
    assert canary.find(res.data, CANARY[:8]) == [] and canary.find(res.data, CANARY[8:16]) == []
    carriers = [r.carrier for r in res.removed]
    assert "HEIF unused property pasp" in carriers and "HEIF unused property ispe" in carriers
    assert ib.srgb() in res.data
    heif_verify.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="belongs to no item"):
        heif_verify.verify(data.replace(b"Handler\0", bytes(8)), ScrubOptions())


# -- GIF: graphic control and looping extensions that apply to nothing ------------------------------

def _gce(delay: int, packed: int = 0, index: int = 0) -> bytes:
    return b"\x21\xf9\x04" + bytes([packed]) + struct.pack("<H", delay) + bytes([index]) + b"\0"


def _gif_frames(data: bytes) -> list[tuple[bytes, int | None]]:
    out = []
    with Image.open(io.BytesIO(data)) as im:
        for k in range(getattr(im, "n_frames", 1)):
            im.seek(k)
            out.append((im.convert("RGBA").tobytes(), im.info.get("duration")))
    return out


def test_gif_graphic_controls_that_apply_to_no_image_are_neutralised() -> None:
    base = gifb._gif(2, loop=0)
    # text in the delay fields of GCEs no image uses: two before the first image's own GCE,
    # one before a plain-text block (which is neutralised) and one before the trailer
    words = [struct.unpack("<H", CANARY[k:k + 2])[0] for k in range(0, 6, 2)]
    first = base.index(b"\x21\xf9\x04")
    data = base[:first] + _gce(words[0]) + _gce(words[1]) + base[first:]
    data = data[:-1] + _gce(words[2]) + gifb._plain_text(b"hello") + _gce(7) + b";"
    res = scrub(data)
    assert CANARY[:6] not in res.data and len(res.data) == len(data)
    for k in range(0, 6, 2):
        assert CANARY[k:k + 2] not in res.data[first:first + 16]
    assert [r.carrier for r in res.removed].count("GIF graphic control (applies to no image)") == 4
    assert _gif_frames(res.data) == _gif_frames(base)
    assert scrub(res.data).data == res.data
    gif_verify.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="applies to no image"):
        gif_verify.verify(data.replace(gifb._plain_text(b"hello"), b""), ScrubOptions())
    compact = scrub(data, options=ScrubOptions(preserve_length=False))
    assert _gif_frames(compact.data) == _gif_frames(base)


def test_gif_repeated_looping_extension() -> None:
    base = gifb._gif(2, loop=3)
    at = base.index(b"NETSCAPE2.0") - 3
    loop = base[at:at + 19]
    same = base[:at + 19] + loop + base[at + 19:]
    res = scrub(same)
    assert res.data.count(b"NETSCAPE2.0") == 1 and _gif_frames(res.data) == _gif_frames(base)
    with pytest.raises(ScrubError, match="second looping"):
        gif_verify.verify(same, ScrubOptions())
    other = loop[:16] + b"\x07" + loop[17:]
    with pytest.raises(ScrubError, match="different loop counts"):
        scrub(base[:at + 19] + other + base[at + 19:])


# -- mutations of files whose kept structures carry the new rules --------------------------------

from support import fuzz  # noqa: E402


def _mutation_seeds() -> dict[str, tuple[bytes, object]]:
    frames = [Image.new("RGB", (6, 4), (40 * i, 90, 20)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    return {
        "jpeg": (jb.splice(jb.base_jpeg(progressive=True),
                           [jb.segment(0xE2, c) for c in ib.jpeg_chunks(ib.srgb(), 2)]
                           + [jb.segment(0xDD, b"\0\4")]), jpeg_verify),
        "png": (png_insert(base_png("P"), [iccp(ib.srgb()), png_chunk(b"tRNS", b"\0\1"),
                                             png_chunk(b"bKGD", b"\1")]), png_verify),
        "apng": (buf.getvalue(), png_verify),
        "webp-animated": (_animated(), webp_verify),
        "webp-icc-alpha": (webp_image(icc_profile=ib.srgb()), webp_verify),
        "gif": (gifb._splice(gifb._gif(3, loop=1), [gifb._app(b"ICCRGBG1012", ib.srgb())]), gif_verify),
        "heif": (heif_with_props(heifb.box(b"colr", b"prof" + ib.srgb()), [2]), heif_verify),
    }


@pytest.mark.parametrize("name", ["jpeg", "png", "apng", "webp-animated", "webp-icc-alpha", "gif", "heif"])
def test_mutated_files_are_refused_or_verifiably_clean(name: str) -> None:
    import random
    seed, verifier = _mutation_seeds()[name]
    rng = random.Random(name)
    for _ in range(150):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            roll = rng.random()
            if roll < 0.7:
                data[at] = rng.randrange(256)
            elif roll < 0.85:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            else:
                del data[at:at + rng.randint(1, 8)]
        fuzz.assert_refused_or_verified(bytes(data), verifier.verify)


def test_png_iccp_profile_name_is_replaced_by_a_neutral_one() -> None:
    data = png_insert(base_png(), [iccp(ib.srgb(), keyword=CANARY)])
    res = assert_clean(data)
    assert b"iCCP" in png_types(res.data)
    assert b"ICC Profile_____\0" in res.data  # same length as the 16-byte name it replaced
    assert ("colour profile", "PNG iCCP") in [(k.what, k.detail) for k in res.kept]
    assert "ICC profile name" in [r.carrier for r in res.removed]
    png_verify.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="profile name"):
        png_verify.verify(data, ScrubOptions())
    for length, name in ((3, b"ICC"), (4, b"ICC_"), (11, b"ICC Profile"), (12, b"ICC Profile_")):
        from exifguard.engine.formats.png import neutral_profile_name
        assert neutral_profile_name(length) == name


def test_jpeg_dnl_is_kept_only_where_a_zero_line_frame_needs_it() -> None:
    base = jb.base_jpeg()
    sos = base.index(b"\xff\xda")
    dnl = jb.segment(0xDC, CANARY[:2])
    data = base[:sos] + dnl + base[sos:]                  # before any scan: tells nothing
    eoi = data.rindex(b"\xff\xd9")
    data = data[:eoi] + jb.segment(0xDC, CANARY[2:4]) + data[eoi:]  # frame has its height
    res = assert_clean(data)
    assert [r.carrier for r in res.removed].count("unused DNL") == 2
    assert CANARY[:2] not in res.data[sos:sos + 6]
    jpeg_verify.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="DNL"):
        jpeg_verify.verify(data, ScrubOptions())
    # a frame that declares 0 lines keeps the first DNL after its scan
    sof = base.index(b"\xff\xc0")
    zero = base[:sof + 5] + b"\0\0" + base[sof + 7:]
    eoi = zero.rindex(b"\xff\xd9")
    needed = zero[:eoi] + jb.segment(0xDC, struct.pack(">H", 32)) + zero[eoi:]
    res = scrub(needed)
    assert res.data == needed
    jpeg_verify.verify(needed, ScrubOptions())


def test_jpeg_stray_restart_markers_become_fill_bytes() -> None:
    base = jb.base_jpeg()
    sos = base.index(b"\xff\xda")
    bits = bytes(0xD0 + (b & 7) for b in CANARY)  # 3 bits of each canary byte
    stray = b"".join(b"\xff" + bytes([m]) for m in bits)
    data = base[:sos] + stray + base[sos:]
    res = assert_clean(data)
    assert res.data[sos:sos + len(stray)] == b"\xff" * len(stray)
    assert [r.carrier for r in res.removed].count("stray restart marker") == len(CANARY)
    jpeg_verify.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="restart marker"):
        jpeg_verify.verify(data, ScrubOptions())


def test_heif_item_names_and_bytes_after_an_item_entry_are_blanked() -> None:
    data = heifb.build_heif(infe_extra=b"")
    # give the image item a name and hide bytes after its fields (same box size: the
    # builder's infe for item 1 is `00 01 00 00 hvc1 00`; grow it by rewriting in place)
    old = heifb.full(b"infe", 2, 0, struct.pack(">HH", 1, 0) + b"hvc1\0")
    new = heifb.full(b"infe", 2, 0, struct.pack(">HH", 1, 0) + b"hvc1" + CANARY + b"\0" + CANARY)
    assert old in data
    grown = len(new) - len(old)
    data = _grow_boxes(data.replace(old, new), [b"meta", b"iinf"], grown)
    res = scrub(data)
    assert canary.find(res.data, CANARY) == [] and len(res.data) == len(data)
    assert {"HEIF item name", "HEIF item entry extra data"} <= {r.carrier for r in res.removed}
    assert scrub(res.data).data == res.data
    heif_verify.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="name|after its fields"):
        heif_verify.verify(data.replace(b"Handler\0", bytes(8)), ScrubOptions())


def test_heif_bytes_after_a_property_s_fields_and_unknown_colr_types_are_blanked() -> None:
    props = heifb.box(b"irot", b"\x01" + CANARY) + heifb.box(b"colr", b"JANE" + CANARY) \
        + heifb.box(b"colr", b"nclx" + bytes(7) + CANARY)
    data = heif_with_props(props, [2, 3, 4])
    res = scrub(data)
    assert canary.find(res.data, CANARY) == [] and len(res.data) == len(data)
    carriers = {r.carrier for r in res.removed}
    assert {"HEIF irot extra data", "HEIF colr of unknown type", "HEIF colr extra data"} <= carriers
    assert b"irot\x01" in res.data  # the rotation itself stays
    assert scrub(res.data).data == res.data
    heif_verify.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="after its fields|unknown type"):
        heif_verify.verify(data.replace(b"Handler\0", bytes(8)), ScrubOptions())


# -- TIFF: curve and colour-map tables only where they apply --------------------------------------

def _words(text: bytes, n: int) -> list[int]:
    raw = (text * (2 * n // len(text) + 2))[:2 * n]
    return list(struct.unpack(f"<{n}H", raw))


def test_tiff_colour_map_and_response_curves_where_they_do_not_apply_are_removed() -> None:
    b = tiffb.Builder("<")
    extra = [(320, 3, _words(CANARY, 768)),           # ColorMap in a greyscale image
             (291, 3, _words(CANARY[::-1], 100)),     # GrayResponseCurve of the wrong size
             (301, 3, _words(CANARY, 300))]           # TransferFunction of the wrong size
    data = b.done(b.ifd(tiffb.gray_page(b, extra=extra)))
    res = assert_clean(data)
    carriers = {r.carrier for r in res.removed}
    assert {"TIFF ColorMap", "TIFF IFD0:Tag0x0123", "TIFF TransferFunction"} <= carriers  # 0x0123: GrayResponseCurve
    tiff_verify.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="not a rendering tag"):
        tiff_verify.verify(data, ScrubOptions())


def test_tiff_palette_image_keeps_its_colour_map_and_a_misfit_one_is_refused() -> None:
    im = Image.new("P", (8, 6))
    im.putpalette(bytes(range(48)) * 16)
    im.putdata([(x + y) % 16 for y in range(6) for x in range(8)])
    buf = io.BytesIO()
    im.save(buf, "TIFF")
    data = buf.getvalue()
    res = scrub(data)
    assert pixels(res.data) == pixels(data)
    tiff_verify.verify(res.data, ScrubOptions())
    assert not any("ColorMap" in r.carrier for r in res.removed)
    b = tiffb.Builder("<")
    page = [e if e[0] != 262 else (262, 3, [3]) for e in tiffb.gray_page(b)]
    bad = b.done(b.ifd(sorted(page + [(320, 3, [0] * 300)], key=lambda e: e[0])))
    with pytest.raises(ScrubError, match="ColorMap"):
        scrub(bad)


def test_tiff_old_style_jpeg_data_must_be_a_jpeg() -> None:
    """Fuzz finding E6: JPEGInterchangeFormat pointing at an XMP packet kept it verbatim."""
    data = (REGRESSIONS / "E6-tiff-ojpeg-not-a-jpeg.tif").read_bytes()
    with pytest.raises(ScrubError, match="not a JPEG"):
        scrub(data)
    with pytest.raises(ScrubError):
        tiff_verify.verify(data, ScrubOptions())


# -- HEIF meta boxes hold their fields and nothing after them (fuzz finding E5) ------------------

def test_heif_meta_boxes_hold_nothing_after_their_fields() -> None:
    url = heifb.full(b"url ", 0, 0, b"file:///home/jane/" + CANARY + b"\0")
    dinf = heifb.box(b"dinf", heifb.full(b"dref", 0, 0, struct.pack(">I", 1) + url))
    grpl = heifb.box(b"grpl", heifb.full(b"altr", 0, 0, struct.pack(">III", 100, 1, 1) + CANARY))
    data = heifb.build_heif(extra_meta=dinf + grpl)
    old_pitm = heifb.full(b"pitm", 0, 0, struct.pack(">H", 1))
    new_pitm = heifb.full(b"pitm", 0, 0, struct.pack(">H", 1) + CANARY)
    assert old_pitm in data
    data = _grow_boxes(data.replace(old_pitm, new_pitm), [b"meta"], len(new_pitm) - len(old_pitm))
    res = scrub(data)
    assert canary.find(res.data, CANARY) == [] and len(res.data) == len(data)
    carriers = {r.carrier for r in res.removed}
    assert {"HEIF pitm extra data", "HEIF data reference url  extra data",
            "HEIF entity group altr extra data"} <= carriers
    assert scrub(res.data).data == res.data
    heif_verify.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="after|location"):
        heif_verify.verify(data.replace(b"Handler\0", bytes(8)), ScrubOptions())


def test_heif_pitm_swallowing_the_rest_of_meta_is_cleaned_or_refused() -> None:
    data = (REGRESSIONS / "E5-avif-pitm-oversized.avif").read_bytes()
    try:
        res = scrub(data)
    except ScrubError:
        return
    assert canary.find(res.data, b"EGFUZZCANARY31415") == []
    heif_verify.verify(res.data, ScrubOptions())


def test_png_split_image_data_that_inflates_past_the_image_size_is_refused_quickly() -> None:
    """The completeness check behind a stray IDAT inflates at most what IHDR allows."""
    bomb = zlib.compress(bytes(64 << 20), 9)  # 64 MiB of zeros for a 12x7 image
    png = base_png()
    parts = png_parts(png)
    i = next(k for k, c in enumerate(parts) if c[4:8] == b"IDAT")
    parts[i] = png_chunk(b"IDAT", bomb)
    parts[i + 1:i + 1] = [png_chunk(b"skIp", bytes(4)), png_chunk(b"IDAT", b"")]
    data = png[:8] + b"".join(parts)
    with pytest.raises(ScrubError, match="split"):
        scrub(data)


# -- a kept Orientation is not reported as removed (request L1) ------------------------------------

def test_kept_orientation_is_not_listed_as_removed() -> None:
    jpeg = jb.splice(jb.base_jpeg(), [jb.exif_app1(CANARY, orientation=6)])
    res = scrub(jpeg)
    exif = next(r for r in res.removed if r.carrier == "APP1 Exif")
    assert "Orientation" not in exif.tags and "Make" in exif.tags
    assert ("orientation", "6") in [(k.what, k.detail) for k in res.kept]
    gone = scrub(jpeg, keep_orientation=False)
    assert "Orientation" in next(r for r in gone.removed if r.carrier == "APP1 Exif").tags
    xmp_only = jb.splice(jb.base_jpeg(), [jb.xmp_app1(CANARY, orientation=8)])
    assert "Orientation" not in next(r for r in scrub(xmp_only).removed if r.carrier == "XMP").tags
    # PNG: eXIf with Orientation 6 (Pillow writes it from an Exif object)
    im = Image.new("RGB", (8, 5))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Maker"
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=exif)
    res = scrub(buf.getvalue())
    removed = next(r for r in res.removed if r.carrier == "PNG eXIf")
    assert "Orientation" not in removed.tags and "Make" in removed.tags
    assert "Orientation" in next(r for r in scrub(buf.getvalue(), keep_orientation=False).removed
                                 if r.carrier == "PNG eXIf").tags
