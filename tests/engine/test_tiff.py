"""TIFF cleaning: corpus files judged by ExifTool and Pillow, canaries, hostile input.

Every check here can fail: ExifTool reads the output against allowlists/TIFF.txt,
Pillow decodes every kept page and compares pixels with the original, canary markers
are searched for in all their encodings, and hostile files must raise ScrubError.
"""

from __future__ import annotations

import io
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageOps, TiffImagePlugin

from exifguard import ScrubError, scrub
from exifguard.engine.report import ScrubOptions
from exifguard.engine.verify import tiff as verify_tiff
from support import canary, corpus, oracle

MARK = "EGMARK7Q2Z"
MARKB = MARK.encode()


# --------------------------------------------------------------------------- helpers
def pages(data: bytes) -> list[tuple[str, tuple[int, int], bytes]]:
    """(mode, size, pixels) of every full-resolution page, as displayed (orientation applied).

    Reduced-resolution pages after the first are previews; the cleaner unlinks them."""
    out = []
    with Image.open(io.BytesIO(data)) as im:
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            if i and (int(im.tag_v2.get(254, 0)) & 1 or not ({273, 324} & set(im.tag_v2))):
                continue  # a preview or an EXIF-style thumbnail: not a page
            shown = ImageOps.exif_transpose(im.copy())
            out.append((shown.mode, shown.size, shown.tobytes()))
    return out


def assert_clean(data: bytes, out: bytes) -> None:
    assert len(out) == len(data)
    assert pages(out) == pages(data)
    again = scrub(out)
    assert again.data == out, "not idempotent"
    assert again.removed == ()


def exiftool_leaks(out: bytes) -> list[str]:
    return oracle.leaks("TIFF", oracle.exiftool_bytes(out, ".tif"))


class Builder:
    """A tiny TIFF writer for structures Pillow cannot make (SubIFDs, old thumbnails,
    hostile layouts).  Values: bytes (raw) or a list of ints packed for the type."""

    CODES = {1: "B", 2: "B", 3: "H", 4: "I", 7: "B", 13: "I", 16: "Q", 18: "Q"}

    def __init__(self, bo: str = "<", big: bool = False) -> None:
        self.bo, self.big = bo, big
        head = struct.pack(bo + "HHHQ", 43, 8, 0, 0) if big else struct.pack(bo + "HI", 42, 0)
        self.buf = bytearray((b"II" if bo == "<" else b"MM") + head)
        self.osz = 8 if big else 4

    def blob(self, data: bytes) -> int:
        if len(self.buf) % 2:
            self.buf += b"\0"
        off = len(self.buf)
        self.buf += data
        return off

    def pack(self, typ: int, values) -> bytes:
        if isinstance(values, (bytes, bytearray)):
            return bytes(values)
        return struct.pack(f"{self.bo}{len(values)}{self.CODES[typ]}", *values)

    def ifd(self, entries: list[tuple[int, int, object]], nxt: int = 0) -> int:
        rows = []
        for tag, typ, values in entries:
            raw = self.pack(typ, values)
            unit = struct.calcsize("<" + self.CODES[typ])
            cnt = len(raw) // unit
            if len(raw) <= self.osz:
                field = raw + bytes(self.osz - len(raw))
            else:
                field = struct.pack(self.bo + ("Q" if self.big else "I"), self.blob(raw))
            rows.append(struct.pack(self.bo + ("HHQ" if self.big else "HHI"), tag, typ, cnt) + field)
        off = self.blob(b"")
        self.buf += struct.pack(self.bo + ("Q" if self.big else "H"), len(rows)) + b"".join(rows)
        self.buf += struct.pack(self.bo + ("Q" if self.big else "I"), nxt)
        return off

    def done(self, first: int) -> bytes:
        if self.big:
            self.buf[8:16] = struct.pack(self.bo + "Q", first)
        else:
            self.buf[4:8] = struct.pack(self.bo + "I", first)
        return bytes(self.buf)


def gray_page(b: Builder, w: int = 8, h: int = 8, seed: int = 1,
              extra: list[tuple[int, int, object]] = ()) -> list[tuple[int, int, object]]:
    rnd = random.Random(seed)
    pix = bytes(rnd.randrange(256) for _ in range(w * h))
    strip = b.blob(pix)
    long_t = 16 if b.big else 4
    entries = [(256, 3, [w]), (257, 3, [h]), (258, 3, [8]), (259, 3, [1]), (262, 3, [1]),
               (273, long_t, [strip]), (277, 3, [1]), (278, 3, [h]), (279, long_t, [w * h]), *extra]
    return sorted(entries, key=lambda e: e[0])


def text(s: str) -> bytes:
    return s.encode() + b"\0"


# --------------------------------------------------------------------------- corpus
@oracle.requires_exiftool
@pytest.mark.parametrize("cf", corpus.params("TIFF"))
def test_corpus_tiff(cf: corpus.CorpusFile) -> None:
    data = cf.data
    res = scrub(data)
    assert res.format == "TIFF"
    assert res.removed, "a corpus TIFF with private metadata reported nothing removed"
    assert exiftool_leaks(res.data) == []
    assert_clean(data, res.data)
    if cf.entry.get("orientation"):
        with Image.open(io.BytesIO(res.data)) as im:
            assert int(im.tag_v2.get(274, 1)) == cf.entry["orientation"]
    for group in ("gps", "serials", "people", "device"):
        for key, value in cf.entry["privacy"].get(group, {}).items():
            if isinstance(value, str) and len(value) >= 6 and value.strip("0 "):
                assert canary.find(res.data, value.encode()) == [], f"{key} survived"


@pytest.mark.parametrize("cf", corpus.params("TIFF"))
def test_corpus_compact_mode_equals_in_place(cf: corpus.CorpusFile) -> None:
    data = cf.data
    assert scrub(data, preserve_length=False).data == scrub(data).data


# --------------------------------------------------------------------------- canaries
def pillow_tiff(bo: str = "<", big: bool = False, **save) -> bytes:
    """A dirty TIFF.  Pillow writes Motorola order ("MM") only for 16-bit big-endian
    greyscale, so that is what the big-endian variant holds."""
    mode = "I;16B" if bo == ">" else "RGB"
    im = Image.new(mode, (40, 30))
    im.putdata([((x * 7) % 256, (y * 9) % 256, (x * y) % 256) if mode == "RGB" else x * y * 50
                for y in range(30) for x in range(40)])
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    for tag in (269, 270, 271, 272, 285, 305, 315, 316, 33432):
        ifd[tag] = f"{MARK}-{tag}"
    ifd[306] = "2024:01:02 03:04:05"
    ifd[34665] = {0xA431: MARK + "-serial", 0xA430: MARK + "-owner", 0x9003: "2024:01:02 03:04:05"}
    ifd[34853] = {0x1D: "2024:01:02", 0x12: MARK + "-datum"}
    ifd[50000] = MARK + "-private"
    ifd[65000] = MARK + "-private2"
    ifd[700] = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
                '02/22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/">'
                f'<dc:creator>{MARK}</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>').encode()
    ifd.tagtype[700] = 1
    buf = io.BytesIO()
    TiffImagePlugin.WRITE_LIBTIFF = False
    im.save(buf, "TIFF", tiffinfo=ifd, big_tiff=big, **save)
    data = buf.getvalue()
    assert data[:2] == (b"MM" if bo == ">" else b"II")
    return data


def run_exiftool(data: bytes, args: list[str]) -> bytes:
    if not shutil.which("exiftool"):
        pytest.skip("exiftool missing")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "x.tif"
        p.write_bytes(data)
        proc = subprocess.run(["exiftool", "-q", "-overwrite_original", *args, str(p)],
                              capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return p.read_bytes()


EXIFTOOL_MARKERS = [f"-XMP-dc:Creator={MARK}x", f"-IPTC:By-line={MARK}i", f"-IPTC:City={MARK}c",
                    f"-ExifIFD:UserComment={MARK}u", f"-ExifIFD:BodySerialNumber={MARK}s",
                    "-GPSLatitude=48.8583", "-GPSLatitudeRef=N", "-GPSLongitude=2.2944",
                    "-GPSLongitudeRef=E", f"-GPSAreaInformation={MARK}g",
                    f"-IFD0:DocumentName={MARK}d", f"-IFD0:PageName={MARK}p",
                    f"-XPComment={MARK}w", f"-IFD0:HostComputer={MARK}h",
                    f"-Photoshop:URL=http://{MARK}.example", "-IFD0:Orientation#=6"]


@oracle.requires_exiftool
@pytest.mark.parametrize("bo", ["<", ">"])
def test_canary_classic_tiff(bo: str) -> None:
    data = run_exiftool(pillow_tiff(bo), EXIFTOOL_MARKERS)
    assert data[:2] == (b"MM" if bo == ">" else b"II")
    assert canary.find(data, MARKB), "canary setup failed"
    before = oracle.exiftool_bytes(data, ".tif")
    assert any(k.startswith("GPS:") for k in before) and any(k.startswith("IPTC:") for k in before)
    res = scrub(data)
    assert canary.find(res.data, MARKB) == []
    assert exiftool_leaks(res.data) == []
    assert_clean(data, res.data)
    carriers = {r.carrier for r in res.removed}
    assert {"TIFF GPS IFD", "TIFF Exif IFD", "TIFF XMP", "TIFF IPTC", "TIFF Artist"} <= carriers
    gps = next(r for r in res.removed if r.carrier == "TIFF GPS IFD")
    assert "GPSLatitude" in gps.tags and "location" in {c.value for c in gps.categories}
    with Image.open(io.BytesIO(res.data)) as im:
        assert im.tag_v2.get(274) == 6
    assert any(k.what == "orientation" for k in res.kept)


@oracle.requires_exiftool
def test_canary_bigtiff() -> None:
    data = pillow_tiff(big=True)
    assert data[2:4] == b"+\0" and canary.find(data, MARKB)
    res = scrub(data)
    assert canary.find(res.data, MARKB) == []
    assert exiftool_leaks(res.data) == []
    assert_clean(data, res.data)


def test_canary_compressed_pages_with_preview() -> None:
    """Four pages: full, reduced-resolution preview, full, JPEG-compressed full (with
    JPEGTables).  The preview is unlinked and zeroed; the real pages keep their pixels."""
    full = Image.new("RGB", (50, 40))
    full.putdata([(x * 5 % 256, y * 6 % 256, 77) for y in range(40) for x in range(50)])
    second = full.rotate(90, expand=True)
    preview = full.resize((10, 8))
    preview.encoderinfo = {"tiffinfo": {254: 1, 315: MARK + "-preview"}, "compression": "tiff_lzw"}
    second.encoderinfo = {"tiffinfo": {315: MARK + "-page2", 305: MARK + "-sw"},
                          "compression": "tiff_adobe_deflate"}
    buf = io.BytesIO()
    third = full.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    third.encoderinfo = {"tiffinfo": {270: MARK + "-desc"}, "compression": "jpeg"}
    full.save(buf, "TIFF", save_all=True, append_images=[preview, second, third],
              tiffinfo={315: MARK + "-page1"}, compression="packbits")
    data = buf.getvalue()
    res = scrub(data)
    assert canary.find(res.data, MARKB) == []
    assert_clean(data, res.data)
    if oracle.exiftool_available():
        assert exiftool_leaks(res.data) == []
    with Image.open(io.BytesIO(res.data)) as im:
        assert im.n_frames == 3
        im.seek(2)
        assert 347 in im.tag_v2  # JPEGTables kept
    assert any(r.carrier.startswith("TIFF thumbnail image") for r in res.removed)


def test_subifds_preview_dropped_fullres_kept() -> None:
    b = Builder(">")
    preview = b.ifd(gray_page(b, 4, 4, seed=2, extra=[(254, 4, [1]), (305, 2, text(MARK + "p"))]))
    child = b.ifd(gray_page(b, 8, 8, seed=3, extra=[(315, 2, text(MARK + "c"))]))
    main = b.ifd(gray_page(b, 8, 8, seed=4, extra=[(330, 4, [preview, child]),
                                                  (271, 2, text(MARK + "m"))]))
    data = b.done(main)
    res = scrub(data)
    assert canary.find(res.data, MARKB) == []
    assert_clean(data, res.data)
    if oracle.exiftool_available():
        assert exiftool_leaks(res.data) == []
    # the child is still reachable, the preview is not
    v = verify_tiff._View(res.data)
    tags, _, _ = verify_tiff._directory(v, main)
    assert verify_tiff._ints(v, tags[330]) == (child,)
    assert res.data[preview:preview + 20] == bytes(20)


def test_exif_style_jpeg_thumbnail_in_ifd1_is_zeroed() -> None:
    thumb = io.BytesIO()
    Image.new("RGB", (16, 16), (250, 0, 0)).save(thumb, "JPEG", comment=MARKB)
    b = Builder("<")
    jpg = b.blob(thumb.getvalue())
    ifd1 = b.ifd([(256, 3, [16]), (257, 3, [16]), (258, 3, [8, 8, 8]), (259, 3, [6]),
                   (262, 3, [6]), (277, 3, [3]), (513, 4, [jpg]), (514, 4, [len(thumb.getvalue())])])
    ifd0 = b.ifd(gray_page(b, extra=[(34665, 4, [0])]), nxt=ifd1)
    data = b.done(ifd0)
    res = scrub(data)
    assert canary.find(res.data, MARKB) == []
    assert res.data[jpg:jpg + len(thumb.getvalue())] == bytes(len(thumb.getvalue()))
    assert any(r.categories and "thumbnail" in {c.value for c in r.categories} for r in res.removed)
    assert_clean(data, res.data)


def test_jpeg_strips_lose_their_app_segments() -> None:
    """A JPEG-compressed TIFF whose strip is a whole JPEG with Exif and a comment."""
    src = Image.new("RGB", (16, 16))
    src.putdata([(x * 16, y * 16, 128) for y in range(16) for x in range(16)])
    exif = Image.Exif()
    exif[0x010F] = MARK + "-jpegexif"
    jb = io.BytesIO()
    src.save(jb, "JPEG", comment=MARKB, exif=exif, quality=90)
    jpeg = jb.getvalue()
    b = Builder("<")
    strip = b.blob(jpeg)
    entries = [(256, 3, [16]), (257, 3, [16]), (258, 3, [8, 8, 8]), (259, 3, [7]), (262, 3, [6]),
               (273, 4, [strip]), (277, 3, [3]), (278, 3, [16]), (279, 4, [len(jpeg)]),
               (284, 3, [1])]
    data = b.done(b.ifd(entries))
    try:
        before = pages(data)
    except Exception:  # Pillow built without libtiff JPEG support
        pytest.skip("Pillow cannot decode JPEG-in-TIFF here")
    res = scrub(data)
    assert canary.find(res.data, MARKB) == []
    assert pages(res.data) == before
    assert {"TIFF embedded JPEG APP1", "TIFF embedded JPEG COM"} <= {r.carrier for r in res.removed}
    assert scrub(res.data).removed == ()


# --------------------------------------------------------------------------- options
def oriented(value: int) -> bytes:
    b = Builder("<")
    return b.done(b.ifd(gray_page(b, 8, 4, extra=[(274, 3, [value]), (315, 2, text(MARK))])))


def test_orientation_kept_and_applied() -> None:
    data = oriented(6)
    res = scrub(data)
    assert pages(res.data) == pages(data)
    with Image.open(io.BytesIO(res.data)) as im:
        assert im.tag_v2.get(274) == 6
    off = scrub(data, keep_orientation=False)
    with Image.open(io.BytesIO(off.data)) as im:
        assert 274 not in im.tag_v2
    assert "Orientation" in off.tags


def test_invalid_orientation_dropped() -> None:
    res = scrub(oriented(9))
    with Image.open(io.BytesIO(res.data)) as im:
        assert 274 not in im.tag_v2


@pytest.mark.parametrize("cf", [p for p in corpus.params("TIFF") if p.values[0] is None
                                or p.values[0].entry["privacy"].get("icc")])
def test_keep_icc_false_removes_profile(cf: corpus.CorpusFile) -> None:
    if cf is None:
        pytest.skip(corpus.missing())
    res = scrub(cf.data, keep_icc=False)
    with Image.open(io.BytesIO(res.data)) as im:
        assert "icc_profile" not in im.info
    assert any(r.carrier == "TIFF ICC profile" for r in res.removed)
    with Image.open(io.BytesIO(scrub(cf.data).data)) as im:
        assert im.info.get("icc_profile")


def test_collect_values_only_on_request() -> None:
    data = oriented(1)
    assert all(r.values == () for r in scrub(data).removed)
    res = scrub(data, options=ScrubOptions(collect_values=True))
    assert ("Artist", MARK) in [v for r in res.removed for v in r.values]


def test_appended_and_stale_data_is_zeroed() -> None:
    b = Builder("<")
    b.blob(b"old IFD copy " + MARKB)  # stale bytes nothing references
    data = b.done(b.ifd(gray_page(b))) + b"trailer " + MARKB
    res = scrub(data)
    assert canary.find(res.data, MARKB) == []
    assert any(r.carrier == "TIFF unreferenced data" for r in res.removed)
    assert_clean(data, res.data)


# --------------------------------------------------------------------------- verifier
def test_verifier_rejects_dirty_and_stray_bytes() -> None:
    opts = ScrubOptions()
    with pytest.raises(ScrubError):
        verify_tiff.verify(oriented(1), opts)  # still has Artist
    clean = bytearray(scrub(oriented(1)).data)
    verify_tiff.verify(bytes(clean), opts)
    clean[-1 if clean[-1] == 0 else 9] = 0x41  # a stray byte somewhere nothing references
    b = Builder("<")
    dirty = b.done(b.ifd(gray_page(b))) + b"x"
    with pytest.raises(ScrubError):
        verify_tiff.verify(dirty, opts)


def test_verifier_rejects_linked_preview_and_unsorted_tags() -> None:
    b = Builder("<")
    prev = b.ifd(gray_page(b, 4, 4, extra=[(254, 4, [1])]))
    data = b.done(b.ifd(gray_page(b), nxt=prev))
    with pytest.raises(ScrubError):
        verify_tiff.verify(data, ScrubOptions())
    b = Builder("<")
    entries = gray_page(b)
    entries[0], entries[1] = entries[1], entries[0]
    data = b.done(b.ifd(entries))
    with pytest.raises(ScrubError):
        verify_tiff.verify(data, ScrubOptions())
    # the walker sorts them and passes its own verifier
    assert scrub(data).data != data


# --------------------------------------------------------------------------- hostile
def hostile_cases() -> list[tuple[str, bytes]]:
    cases = []
    cases.append(("short", b"II*\0\x08\0"))
    cases.append(("no ifd", b"II*\0\0\0\0\0" + bytes(8)))
    cases.append(("ifd past end", b"II*\0" + struct.pack("<I", 10_000) + bytes(16)))
    cases.append(("bad version", b"II\x2b\0\x04\0\0\0" + bytes(16)))
    b = Builder("<")
    first = b.ifd(gray_page(b))
    data = bytearray(b.done(first))
    next_at = first + 2 + 9 * 12
    data[next_at:next_at + 4] = struct.pack("<I", first)
    cases.append(("chain loop", bytes(data)))
    b = Builder("<")
    sub_self = b.ifd(gray_page(b, extra=[(330, 4, [0])]))
    data = bytearray(b.done(sub_self))
    # point SubIFDs at its own directory
    for k in range(10):
        p = sub_self + 2 + 12 * k
        if struct.unpack_from("<H", data, p)[0] == 330:
            data[p + 8:p + 12] = struct.pack("<I", sub_self)
    cases.append(("subifd loop", bytes(data)))
    b = Builder("<")
    cases.append(("strip past end", b.done(b.ifd([(256, 3, [8]), (257, 3, [8]), (258, 3, [8]),
                                                  (262, 3, [1]), (273, 4, [5000]), (277, 3, [1]),
                                                  (279, 4, [64])]))))
    b = Builder("<")
    cases.append(("huge count", b.done(b.ifd([(256, 3, [8]), (273, 4, [10, 10]), (279, 4, [1, 1])]))[:-8]
                  + struct.pack("<HHII", 273, 4, 0xFFFFFFF0, 8)))
    data = bytearray(b"II*\0\x08\0\0\0" + struct.pack("<H", 0xFFFF) + bytes(30))
    cases.append(("entry table past end", bytes(data)))
    b = Builder("<", big=True)
    data = bytearray(b.done(b.ifd(gray_page(b))))
    data[8:16] = struct.pack("<Q", 1 << 40)
    cases.append(("bigtiff offset beyond file", bytes(data)))
    b = Builder(">", big=True)
    big = b.done(b.ifd(gray_page(b)))
    cases.append(("bigtiff bad bytesize", big[:4] + b"\0\x04" + big[6:]))
    b = Builder("<")
    cases.append(("no image data", b.done(b.ifd([(256, 3, [8]), (257, 3, [8]), (315, 2, text("x"))]))))
    b = Builder("<")
    b.blob(b"")
    artist_at = len(b.buf)  # ifd() writes the only out-of-line value (Artist) here
    cases.append(("strip overlaps removed value", b.done(b.ifd([
        (256, 3, [4]), (257, 3, [4]), (258, 3, [8]), (262, 3, [1]), (273, 4, [artist_at]),
        (277, 3, [1]), (279, 4, [16]), (315, 2, (MARK + "-artist").encode()[:15] + b"\0")]))))
    b = Builder("<")
    deepest = b.ifd(gray_page(b, 2, 2))
    for _ in range(12):
        deepest = b.ifd(gray_page(b, 2, 2, extra=[(330, 4, [deepest])]))
    cases.append(("subifds nested too deep", b.done(deepest)))
    return cases


@pytest.mark.parametrize("name,data", hostile_cases(), ids=[c[0] for c in hostile_cases()])
def test_hostile_raises_scrub_error(name: str, data: bytes) -> None:
    with pytest.raises(ScrubError):
        scrub(data)


@pytest.mark.parametrize("bo,big", [("<", False), (">", True)])
def test_random_corruption_never_crashes_or_leaks(bo: str, big: bool) -> None:
    """Flip a few bytes of a small dirty TIFF many times: each result is either a
    ScrubError or a same-length output that passes the verifier and holds no marker."""
    rnd = random.Random(1234)
    b = Builder(bo, big)
    sub = b.ifd(gray_page(b, 4, 4, seed=5))
    exif = b.ifd([(0xA431, 2, text(MARK))])
    base = b.done(b.ifd(gray_page(b, extra=[(315, 2, text(MARK)), (330, 16 if big else 4, [sub]),
                                            (34665, 4, [exif])])))
    cleaned = 0
    for _ in range(400):
        data = bytearray(base)
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        try:
            res = scrub(bytes(data))
        except ScrubError:
            continue
        cleaned += 1
        assert len(res.data) == len(data)
        assert canary.find(res.data, MARKB) == []
        verify_tiff.verify(res.data, ScrubOptions())
    assert cleaned > 50  # most single-byte damage is still cleanable


def test_tiled_image() -> None:
    b = Builder("<")
    rnd = random.Random(9)
    tiles = [b.blob(bytes(rnd.randrange(256) for _ in range(256))) for _ in range(4)]
    entries = [(256, 3, [32]), (257, 3, [32]), (258, 3, [8]), (259, 3, [1]), (262, 3, [1]),
               (277, 3, [1]), (305, 2, text(MARK)), (322, 3, [16]), (323, 3, [16]),
               (324, 4, tiles), (325, 4, [256] * 4)]
    data = b.done(b.ifd(entries))
    res = scrub(data)
    assert canary.find(res.data, MARKB) == []
    assert_clean(data, res.data)
