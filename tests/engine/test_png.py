"""PNG / APNG scrubbing: real corpus files, synthesised canaries, orientation, fuzzing.

Every check is against something independent of the walker: ExifTool (oracle), Pillow
(pixels, frames, displayed orientation), the canary search (raw, hex, zlib, base64,
UTF-16) and the separately written verifier.
"""

from __future__ import annotations

import io
import struct
import zlib

import piexif
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo
from support import canary, corpus, oracle

from exifguard import ScrubError, scrub
from exifguard.engine.formats import png as png_walker
from exifguard.engine.report import Findings, ScrubOptions
from exifguard.engine.verify import png as png_verify

from . import icc_builders as ib

SIG = b"\x89PNG\r\n\x1a\n"


# --- helpers ------------------------------------------------------------------------------

def chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def chunks_of(data: bytes) -> list[tuple[bytes, int, bytes]]:
    """(type, offset, payload) up to IEND; a deliberately naive reader for assertions."""
    out, pos = [], 8
    while pos + 12 <= len(data):
        n, t = struct.unpack_from(">I4s", data, pos)
        out.append((t, pos, data[pos + 8:pos + 8 + n]))
        pos += 12 + n
        if t == b"IEND":
            break
    return out


def types_of(data: bytes) -> list[bytes]:
    return [t for t, _, _ in chunks_of(data)]


def splice(png: bytes, extra: bytes, where: str) -> bytes:
    """Insert raw chunk bytes before the first IDAT, after the last IDAT/fdAT, or after IEND."""
    cs = chunks_of(png)
    if where == "after_iend":
        return png + extra
    if where == "before_idat":
        pos = next(off for t, off, _ in cs if t == b"IDAT")
    elif where == "after_ihdr":
        pos = 8 + 25
    else:  # after_idat: just before IEND
        pos = next(off for t, off, _ in cs if t == b"IEND")
    return png[:pos] + extra + png[pos:]


def base_png(mode: str = "RGB", size: tuple[int, int] = (9, 6), **save) -> bytes:
    im = Image.new(mode, size)
    if mode == "P":
        im.putpalette([i % 256 for i in range(768)])
    im.putdata([(x * 37 + y * 11) % 256 if mode in ("P", "L") else
                ((x * 37) % 256, (y * 53) % 256, (x * y * 7) % 256)
                for y in range(size[1]) for x in range(size[0])])
    buf = io.BytesIO()
    im.save(buf, "PNG", **save)
    return buf.getvalue()


def frames(data: bytes) -> list[tuple[tuple[int, int], bytes]]:
    """Every frame as RGBA (palette + tRNS applied), so transparency loss shows."""
    with Image.open(io.BytesIO(data)) as im:
        return [(f.size, f.convert("RGBA").tobytes()) for f in ImageSequence.Iterator(im)]


def displayed(data: bytes) -> tuple[tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        t = ImageOps.exif_transpose(im)
        return t.size, t.convert("RGBA").tobytes()


def pil_orientation(data: bytes) -> int | None:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.getexif().get(0x0112)


def exif_tiff(ifd0: dict | None = None, exif: dict | None = None, gps: dict | None = None) -> bytes:
    blob = piexif.dump({"0th": ifd0 or {}, "Exif": exif or {}, "GPS": gps or {}, "1st": {},
                        "thumbnail": None})
    assert blob.startswith(b"Exif\0\0")
    return blob[6:]


def xmp_packet(body: str) -> bytes:
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
            'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
            f'{body}</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode()


def itxt(keyword: bytes, text: bytes, compressed: bool = False) -> bytes:
    body = zlib.compress(text) if compressed else text
    return chunk(b"iTXt", keyword + b"\0" + bytes([int(compressed), 0]) + b"en\0" + b"\0" + body)


def raw_profile(kind: str, payload: bytes) -> bytes:
    h = payload.hex()
    lines = "\n".join(h[i:i + 72] for i in range(0, len(h), 72))
    return f"\n{kind}\n{len(payload):8d}\n{lines}\n".encode()


def marker(name: str) -> bytes:
    return f"EGCANARY{name}Z9Q".encode()


def check_clean(inp: bytes, out: bytes, mark: bytes | None = None, *, exiftool: bool = True,
                reference: bytes | None = None) -> None:
    """The invariants every scrubbed PNG must satisfy.  `reference` is what the pixels must
    match when Pillow cannot open the input itself."""
    ref = inp if reference is None else reference
    assert len(out) == len(inp)
    assert frames(out) == frames(ref)
    assert displayed(out) == displayed(ref)
    assert scrub(out).data == out, "not idempotent"
    png_verify.verify(out, ScrubOptions())
    if mark is not None:
        assert canary.find(inp, mark), "test input lacks its canary"
        assert canary.find(out, mark) == []
    if exiftool and oracle.exiftool_available():
        assert oracle.leaks("PNG", oracle.exiftool_bytes(out, ".png")) == []


def report_text(result) -> str:
    return repr([r.to_dict() for r in result.removed]) + repr([k.to_dict() for k in result.kept])


# --- corpus -------------------------------------------------------------------------------

@pytest.mark.parametrize("cf", corpus.params("PNG"))
def test_corpus_png_clean_same_pixels_idempotent(cf):
    data = cf.data
    res = scrub(data)
    out = res.data
    assert res.format == "PNG"
    assert len(out) == len(data)
    assert frames(out) == frames(data)
    assert displayed(out) == displayed(data)
    assert scrub(out).data == out
    assert scrub(out).removed == ()  # second pass finds nothing of substance
    # orientation the manifest knows of (IFD0 or XMP-tiff) survives as a minimal eXIf
    want = cf.entry.get("orientation")
    if want is not None and 2 <= want <= 8:
        assert pil_orientation(out) == want
        assert types_of(out).count(b"eXIf") == 1
    else:
        assert b"eXIf" not in types_of(out)
    # every privacy-relevant thing the manifest lists was there and is gone from the chunks
    kept = {t for t in types_of(out)} - {b"skIp", b"eXIf"}
    assert kept <= png_walker.RENDER_CHUNKS | {b"iCCP"}


@oracle.requires_exiftool
@pytest.mark.parametrize("cf", corpus.params("PNG"))
def test_corpus_png_exiftool_no_leaks(cf):
    out = scrub(cf.data).data
    tags = oracle.exiftool_bytes(out, ".png")
    assert oracle.leaks("PNG", tags) == []
    before = corpus.before_state()
    # sanity: the oracle would have caught the original's metadata
    if before:
        orig = next((v for k, v in before.items() if k.endswith(cf.name)), None)
        if orig is not None and any(cf.entry["privacy"][k] for k in ("gps", "datetime", "device", "people")):
            assert oracle.leaks("PNG", orig) != []


@pytest.mark.parametrize("cf", corpus.params("PNG"))
def test_corpus_png_compact(cf):
    data = cf.data
    out = scrub(data, preserve_length=False).data
    assert len(out) <= len(data)
    assert frames(out) == frames(data)
    assert displayed(out) == displayed(data)
    assert b"skIp" not in types_of(out)
    assert scrub(out, preserve_length=False).data == out
    if oracle.exiftool_available():
        assert oracle.leaks("PNG", oracle.exiftool_bytes(out, ".png")) == []


@pytest.mark.parametrize("cf", corpus.params("PNG", broken=True))
def test_corpus_png_broken_fails_closed(cf):
    data = cf.data
    try:
        res = scrub(data)
    except ScrubError as exc:
        assert str(exc)
        return
    assert len(res.data) == len(data)
    png_verify.verify(res.data, ScrubOptions())
    if oracle.exiftool_available():
        assert oracle.leaks("PNG", oracle.exiftool_bytes(res.data, ".png")) == []


def test_corpus_truncated_png_is_refused():
    fs = [f for f in corpus.files("PNG", broken=True) if "truncated" in f.name]
    if not fs:
        pytest.skip(corpus.missing("the truncated PNG"))
    with pytest.raises(ScrubError, match="truncated"):
        scrub(fs[0].data)


# --- canaries in synthesised PNGs ---------------------------------------------------------

def _case(name: str) -> tuple[bytes, bytes, set[str]]:
    """(input PNG, marker, tag names the report must list)."""
    m = marker(name)
    ms = m.decode()
    png = base_png()
    if name == "tEXt":
        info = PngInfo()
        info.add_text("Author", ms)
        return base_png(pnginfo=info), m, {"Author"}
    if name == "zTXt":
        info = PngInfo()
        info.add_text("Comment", ms * 3, zip=True)
        return base_png(pnginfo=info), m, {"Comment"}
    if name == "iTXt":
        return splice(png, itxt(b"Description", m), "before_idat"), m, {"Description"}
    if name == "iTXt-compressed":
        return splice(png, itxt(b"parameters", m * 4, compressed=True), "after_idat"), m, {"parameters"}
    if name == "iTXt-xmp":
        x = xmp_packet(f'><dc:creator><rdf:Seq><rdf:li>{ms}</rdf:li></rdf:Seq></dc:creator>'
                       f'<exif:GPSLatitude>12,34.5N</exif:GPSLatitude>')
        return splice(png, itxt(b"XML:com.adobe.xmp", x, compressed=True), "before_idat"), m, \
            {"XML:com.adobe.xmp", "Creator", "GPSLatitude"}
    if name == "eXIf":
        tiff = exif_tiff({piexif.ImageIFD.Make: m, piexif.ImageIFD.Artist: m},
                         {piexif.ExifIFD.UserComment: b"ASCII\0\0\0" + m},
                         {piexif.GPSIFD.GPSLatitudeRef: b"N",
                          piexif.GPSIFD.GPSLatitude: ((12, 1), (34, 1), (56, 1))})
        return base_png(exif=tiff), m, {"Make", "Artist", "UserComment", "GPSLatitude"}
    if name == "eXIf-after-IDAT":
        tiff = exif_tiff({piexif.ImageIFD.Model: m})
        return splice(png, chunk(b"eXIf", tiff), "after_idat"), m, {"Model"}
    if name == "raw-profile-exif":
        tiff = exif_tiff({piexif.ImageIFD.Make: m, piexif.ImageIFD.Orientation: 1})
        body = raw_profile("exif", b"Exif\0\0" + tiff)
        return splice(png, chunk(b"tEXt", b"Raw profile type exif\0" + body), "before_idat"), m, \
            {"Raw profile type exif", "Make"}
    if name == "raw-profile-exif-zTXt":
        tiff = exif_tiff({piexif.ImageIFD.Software: m})
        body = zlib.compress(raw_profile("exif", b"Exif\0\0" + tiff))
        return splice(png, chunk(b"zTXt", b"Raw profile type exif\0\0" + body), "before_idat"), m, \
            {"Raw profile type exif", "Software"}
    if name == "raw-profile-iptc":
        iim = b"\x1c\x02\x50" + struct.pack(">H", len(m)) + m
        return splice(png, chunk(b"tEXt", b"Raw profile type iptc\0" + raw_profile("iptc", iim)),
                      "before_idat"), m, {"Raw profile type iptc", "By-line"}
    if name == "tIME-private":
        extra = chunk(b"tIME", struct.pack(">HBBBBB", 2024, 1, 2, 3, 4, 5)) + chunk(b"prVt", m)
        return splice(png, extra, "before_idat"), m, {"ModifyDate"}
    if name == "caBX":
        return splice(png, chunk(b"caBX", b"jumb" + m * 2), "after_idat"), m, {"C2PA"}
    if name == "unknown-private":
        return splice(png, chunk(b"xyZw", m), "after_ihdr"), m, set()
    if name == "sPLT":
        return splice(png, chunk(b"sPLT", m + b"\0\x08" + bytes(6)), "before_idat"), m, set()
    if name == "after-IEND":
        return png + m + b"\0tail", m, set()
    if name == "IEND-data":
        body = png[:-12]
        return body + chunk(b"IEND", m), m, set()
    if name == "bad-CRC-gAMA":  # kept type, but its CRC is wrong: readers drop it, so do we
        g = bytearray(chunk(b"gAMA", m[:4]))
        g[-1] ^= 0xFF
        return splice(png, bytes(g), "before_idat"), m[:4], set()
    if name == "oversized-pHYs":  # a kept type with text smuggled after its 9 bytes
        return splice(png, chunk(b"pHYs", bytes(9) + m), "before_idat"), m, set()
    raise AssertionError(name)


CANARY_CASES = ["tEXt", "zTXt", "iTXt", "iTXt-compressed", "iTXt-xmp", "eXIf", "eXIf-after-IDAT",
                "raw-profile-exif", "raw-profile-exif-zTXt", "raw-profile-iptc", "tIME-private",
                "caBX", "unknown-private", "sPLT", "after-IEND", "IEND-data", "bad-CRC-gAMA",
                "oversized-pHYs"]


@pytest.mark.parametrize("name", CANARY_CASES)
def test_canary_removed(name):
    inp, m, want_tags = _case(name)
    res = scrub(inp)
    out = res.data
    # Pillow refuses the bad-CRC input outright; its pixels must equal the plain base image
    ref = base_png() if name == "bad-CRC-gAMA" else None
    check_clean(inp, out, m, reference=ref)
    if name == "bad-CRC-gAMA":
        assert b"gAMA" not in types_of(out)
    assert res.removed, "nothing reported as removed"
    assert want_tags <= set(res.tags), res.tags
    # values never reach the report unless asked for
    assert m.decode() not in report_text(res)
    # compact mode: smaller, same pixels, still clean
    small = scrub(inp, preserve_length=False).data
    assert len(small) < len(inp)
    assert frames(small) == frames(ref or inp)
    assert canary.find(small, m) == []


def test_collect_values_reports_text_and_exif_values():
    info = PngInfo()
    info.add_text("Author", marker("val").decode())
    inp = base_png(pnginfo=info, exif=exif_tiff({piexif.ImageIFD.Make: marker("mk")}))
    res = scrub(inp, options=ScrubOptions(collect_values=True))
    values = dict(v for r in res.removed for v in r.values)
    assert values["Author"] == marker("val").decode()
    assert values["Make"] == marker("mk").decode()
    assert marker("val").decode() not in repr([r.to_dict() for r in res.removed])


def test_walker_refuses_non_png():
    with pytest.raises(ScrubError, match="signature"):
        png_walker.scrub(b"GIF89a" + bytes(20), ScrubOptions(), Findings())


def test_tRNS_palette_transparency_preserved():
    info = PngInfo()
    info.add_text("Comment", marker("trns").decode())
    inp = base_png("P", transparency=0, pnginfo=info)
    assert b"tRNS" in types_of(inp)
    res = scrub(inp)
    out = res.data
    assert b"tRNS" in types_of(out)
    check_clean(inp, out, marker("trns"))
    with Image.open(io.BytesIO(out)) as im:
        assert im.convert("RGBA").getpixel((0, 0))[3] == 0  # index 0 is transparent
    assert any(k.what == "transparency" for k in res.kept)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # piexif's input GPS IFD lacks a link
def test_exif_orientation_6_kept_as_minimal_exif():
    m = marker("orient6")
    tiff = exif_tiff({piexif.ImageIFD.Orientation: 6, piexif.ImageIFD.Make: m},
                     gps={piexif.GPSIFD.GPSLatitudeRef: b"S"})
    inp = base_png(exif=tiff)
    res = scrub(inp)
    out = res.data
    check_clean(inp, out, m)
    assert pil_orientation(out) == 6
    assert displayed(out)[0] == (6, 9)  # really rotated, so the comparison means something
    exif_payloads = [p for t, _, p in chunks_of(out) if t == b"eXIf"]
    assert len(exif_payloads) == 1 and len(exif_payloads[0]) == len(tiff)
    with Image.open(io.BytesIO(out)) as im:
        im.load()
        assert dict(im.getexif()) == {0x0112: 6}
    if oracle.exiftool_available():
        tags = oracle.exiftool_bytes(out, ".png")
        assert tags.get("IFD0:Orientation") == "Rotate 90 CW"
    assert any(k.what == "orientation" for k in res.kept)
    # not kept when asked not to: then Pillow shows the stored pixels
    plain = scrub(inp, keep_orientation=False).data
    assert b"eXIf" not in types_of(plain)
    assert displayed(plain) == frames(inp)[0]


def test_xmp_only_orientation_becomes_exif():
    m = marker("xmporient")
    x = xmp_packet(f'tiff:Orientation="6" dc:format="{m.decode()}"/>')
    x = x.replace(b"/></rdf:Description>", b"></rdf:Description>")
    inp = splice(base_png(), itxt(b"XML:com.adobe.xmp", x), "before_idat")
    assert pil_orientation(inp) == 6  # Pillow reads XMP orientation: the display we must keep
    res = scrub(inp)
    out = res.data
    check_clean(inp, out, m)
    assert types_of(out).count(b"eXIf") == 1
    assert types_of(out).index(b"eXIf") < types_of(out).index(b"IDAT")
    assert b"iTXt" not in types_of(out)
    assert pil_orientation(out) == 6
    assert displayed(out) == displayed(inp) and displayed(out)[0] == (6, 9)
    if oracle.exiftool_available():
        assert oracle.exiftool_bytes(out, ".png").get("IFD0:Orientation") == "Rotate 90 CW"
    small = scrub(inp, preserve_length=False).data
    assert displayed(small) == displayed(inp)


def test_exif_orientation_tag_wins_over_xmp():
    """eXIf says 1, XMP says 6: Pillow shows 1, so the output must not rotate."""
    x = xmp_packet('tiff:Orientation="6">')
    inp = splice(base_png(exif=exif_tiff({piexif.ImageIFD.Orientation: 1})),
                 itxt(b"XML:com.adobe.xmp", x), "before_idat")
    out = scrub(inp).data
    assert displayed(out) == displayed(inp)
    assert b"eXIf" not in types_of(out)


def test_only_one_exif_in_output():
    t6 = exif_tiff({piexif.ImageIFD.Orientation: 6, piexif.ImageIFD.Make: marker("one")})
    t8 = exif_tiff({piexif.ImageIFD.Orientation: 8, piexif.ImageIFD.Model: marker("two")})
    inp = splice(base_png(exif=t6), chunk(b"eXIf", t8), "after_idat")
    out = scrub(inp).data
    assert types_of(out).count(b"eXIf") == 1
    assert canary.find(out, marker("one")) == [] and canary.find(out, marker("two")) == []
    png_verify.verify(out, ScrubOptions())


def test_icc_kept_or_neutralised_by_policy():
    m = marker("icc")
    profile = ib.srgb()  # a real profile: anything else is not kept (test_kept_structures)
    iccp = chunk(b"iCCP", m + b"\0\0" + zlib.compress(profile))
    inp = splice(base_png(), iccp, "before_idat")
    kept = scrub(inp).data
    assert b"iCCP" in types_of(kept)
    gone = scrub(inp, keep_icc=False)
    assert b"iCCP" not in types_of(gone.data)
    assert canary.find(gone.data, m) == []
    assert any(r.carrier == "ICC profile" for r in gone.removed)
    png_verify.verify(gone.data, ScrubOptions(keep_icc=False))
    with pytest.raises(ScrubError):
        png_verify.verify(kept, ScrubOptions(keep_icc=False))


def _apng_with_metadata(m: bytes) -> bytes:
    ims = []
    for k in range(3):
        im = Image.new("RGBA", (8, 5), (40 * k, 255 - 60 * k, 9 * k, 255 - 50 * k))
        im.putpixel((k, k), (1, 2, 3, 4))
        ims.append(im)
    info = PngInfo()
    info.add_text("Software", m.decode())
    info.add_itxt("prompt", m.decode() * 2, zip=True)
    buf = io.BytesIO()
    ims[0].save(buf, "PNG", save_all=True, append_images=ims[1:], duration=[50, 60, 70], loop=0,
                pnginfo=info)
    data = buf.getvalue()
    # a private chunk between animation frames, and a tEXt at the end
    cs = chunks_of(data)
    fdat2 = [off for t, off, _ in cs if t == b"fcTL"][-1]
    data = data[:fdat2] + chunk(b"tEXt", b"Comment\0" + m) + data[fdat2:]
    return splice(data, chunk(b"tEXt", b"Title\0" + m), "after_idat")


def test_apng_with_metadata_still_animates():
    m = marker("apng")
    inp = _apng_with_metadata(m)
    with Image.open(io.BytesIO(inp)) as im:
        assert im.n_frames == 3
    res = scrub(inp)
    out = res.data
    check_clean(inp, out, m)
    with Image.open(io.BytesIO(out)) as im:
        assert im.n_frames == 3 and im.is_animated
        durations = []
        for f in ImageSequence.Iterator(im):
            durations.append(f.info.get("duration"))
        assert durations == [50, 60, 70]
    assert [t for t in types_of(out) if t in (b"acTL", b"fcTL", b"fdAT")] == \
        [t for t in types_of(inp) if t in (b"acTL", b"fcTL", b"fdAT")]
    small = scrub(inp, preserve_length=False).data
    assert frames(small) == frames(inp)


def test_own_padding_is_recognised():
    info = PngInfo()
    info.add_text("Author", "x" * 40)
    once = scrub(base_png(pnginfo=info)).data
    assert b"skIp" in types_of(once)
    again = scrub(once)
    assert again.data == once and again.removed == ()
    # someone else's skIp with content is not padding: neutralised and reported
    foreign = splice(base_png(), chunk(b"skIp", marker("skip")), "before_idat")
    res = scrub(foreign)
    assert canary.find(res.data, marker("skip")) == [] and res.removed


@pytest.mark.parametrize("bad, match", [
    (SIG, "truncated"),
    (SIG + chunk(b"IHDR", bytes(13))[:-5], "truncated"),
    (SIG + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
     + chunk(b"IDAT", zlib.compress(b"\0\0")), "IEND"),
    (SIG + chunk(b"tEXt", b"a\0b") + chunk(b"IEND", b""), "IHDR"),
])
def test_malformed_inputs_raise_scrub_error(bad, match):
    with pytest.raises(ScrubError, match=match):
        scrub(bad)


def test_unknown_critical_chunk_and_bad_critical_crc_refused():
    png = base_png()
    with pytest.raises(ScrubError, match="critical"):
        scrub(splice(png, chunk(b"ABCD", b"xx"), "before_idat"))
    b = bytearray(png)
    idat = next(off for t, off, _ in chunks_of(png) if t == b"IDAT")
    b[idat + 9] ^= 1
    with pytest.raises(ScrubError, match="checksum"):
        scrub(bytes(b))


def test_chunk_count_is_bounded():
    many = splice(base_png(), chunk(b"tEXt", b"k\0v") * 50, "before_idat")
    with pytest.raises(ScrubError, match="chunks"):
        scrub(many, options=ScrubOptions(max_structures=20))


def test_verifier_rejects_what_the_walker_must_remove():
    png = base_png()
    opts = ScrubOptions()
    png_verify.verify(png, opts)
    bad_cases = [
        splice(png, chunk(b"tEXt", b"a\0b"), "before_idat"),
        splice(png, chunk(b"skIp", b"\0\0\1"), "before_idat"),
        splice(png, chunk(b"eXIf", exif_tiff({piexif.ImageIFD.Make: b"x"})), "before_idat"),
        png + b"\0\0x",
    ]
    two = png_walker.minimal_tiff(6)
    bad_cases.append(splice(png, chunk(b"eXIf", two) + chunk(b"eXIf", two), "before_idat"))
    crc = bytearray(splice(png, chunk(b"skIp", bytes(4)), "before_idat"))
    crc[8 + 25 + 12] ^= 1
    bad_cases.append(bytes(crc))
    for bad in bad_cases:
        with pytest.raises(ScrubError):
            png_verify.verify(bad, opts)
    png_verify.verify(splice(png, chunk(b"eXIf", two + bytes(10)), "before_idat"), opts)


# --- fuzzing ------------------------------------------------------------------------------

_FUZZ_MARK = marker("fuzz")


def _fuzz_seed() -> bytes:
    info = PngInfo()
    info.add_text("Author", _FUZZ_MARK.decode())
    info.add_text("Comment", _FUZZ_MARK.decode(), zip=True)
    png = base_png("P", (6, 4), transparency=1, pnginfo=info,
                   exif=exif_tiff({piexif.ImageIFD.Orientation: 3, piexif.ImageIFD.Make: _FUZZ_MARK}))
    return splice(png, itxt(b"XML:com.adobe.xmp", xmp_packet('tiff:Orientation="6">')), "after_idat") \
        + b"\0\0tail"


FUZZ_SEED = _fuzz_seed()


def _scrub_or_refuse(data: bytes) -> bytes | None:
    """Only ScrubError may escape the walker itself (not just the public wrapper)."""
    try:
        png_walker.scrub(data, ScrubOptions(), Findings())
    except ScrubError:
        pass
    try:
        res = scrub(data)
    except ScrubError:
        return None
    assert len(res.data) == len(data)
    png_verify.verify(res.data, ScrubOptions())
    return res.data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(FUZZ_SEED) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(8, len(FUZZ_SEED)))
def test_fuzz_mutation_and_truncation(edits, cut):
    b = bytearray(FUZZ_SEED)
    for pos, val in edits:
        b[pos] = val
    for data in (bytes(b), bytes(b[:cut])):
        out = _scrub_or_refuse(data)
        if out is not None:
            assert canary.find(out, _FUZZ_MARK) == []


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_fuzz_structure_aware(data):
    """Re-type / resize chunks and fix their CRCs, so the walk gets past the checksums."""
    cs = chunks_of(FUZZ_SEED)
    out = bytearray(SIG)
    for t, _, p in cs:
        action = data.draw(st.sampled_from(["keep", "keep", "keep", "retype", "resize", "dup", "drop"]))
        if action == "retype":
            t = data.draw(st.sampled_from([b"IDAT", b"eXIf", b"tEXt", b"skIp", b"gAMA", b"fcTL",
                                           b"iCCP", b"IEND", b"zzZz", b"tRNS", b"PLTE", b"IHDR"]))
        elif action == "resize":
            p = p[:data.draw(st.integers(0, len(p)))]
        elif action == "drop":
            continue
        out += chunk(t, p) * (2 if action == "dup" else 1)
    _scrub_or_refuse(bytes(out))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_after_signature(tail):
    _scrub_or_refuse(SIG + tail)


def test_inflate_budget_is_per_file_not_per_chunk():
    """Reporting inflates compressed text; the budget spans the file, so many small
    compressed chunks cannot add up to a decompression bomb."""
    x = xmp_packet('dc:format="image/png" xmlns:photoshop="x">' + " " * 600)
    one = itxt(b"XML:com.adobe.xmp", x, compressed=True)
    inp = splice(base_png(), one * 3, "before_idat")
    res = scrub(inp, options=ScrubOptions(max_inflate_bytes=len(x) + 10))
    names = [r.tags for r in res.removed if r.carrier == "PNG iTXt"]
    assert len(names) == 3
    assert "Format" in names[0]
    assert names[1] == names[2] == ("XML:com.adobe.xmp",)  # budget spent: keyword only
    assert canary.find(res.data, b'dc:format="image/png"') == []


def test_xmp_orientation_after_idat_stays_after_idat():
    x = xmp_packet('tiff:Orientation="8">')
    inp = splice(base_png(), itxt(b"XML:com.adobe.xmp", x), "after_idat")
    assert pil_orientation(inp) == 8
    out = scrub(inp).data
    ts = types_of(out)
    assert ts.count(b"eXIf") == 1 and ts.index(b"eXIf") > ts.index(b"IDAT")
    check_clean(inp, out)
    assert pil_orientation(out) == 8


def test_corrupt_animation_chunk_is_refused_not_dropped():
    """Dropping a bad fcTL would desynchronise the frame sequence: refuse instead."""
    inp = bytearray(_apng_with_metadata(marker("apngbad")))
    fctl = [off for t, off, _ in chunks_of(bytes(inp)) if t == b"fcTL"][1]
    inp[fctl + 8 + 25] ^= 0x01  # last payload byte of the second fcTL
    with pytest.raises(ScrubError, match="fcTL"):
        scrub(bytes(inp))
