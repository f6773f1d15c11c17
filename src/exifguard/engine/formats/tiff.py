"""TIFF walker (classic and BigTIFF, both byte orders, page chains and SubIFDs).

Approach: *keep what renders, zero the rest.*

1. Walk every image directory: the IFD chain (pages) and the SubIFDs (tag 330) of every
   kept directory.  A directory other than IFD0 that is a reduced-resolution copy
   (NewSubfileType bit 0, SubfileType 2) or has no image data of its own (an EXIF-style
   JPEG thumbnail) is a preview of the image, possibly uncropped: it is unlinked.  IFD0
   is always kept because it is what every viewer displays.
2. In each kept directory only the allowlisted rendering tags (`KEEP_TAGS`) stay.  The
   directory is rewritten *in place* with fewer entries: entry count reduced, entries
   compacted (ascending), next-IFD link right after the last entry, then zeros up to the
   old end.  The file length and every data offset stay valid.
3. The bytes that are still referenced (header, kept directories, out-of-line values of
   kept entries, strips/tiles, old-style JPEG streams and tables) form the *keep map*.
   Every other byte is zeroed: the Exif/GPS/Interop directories and their values, maker
   notes, XMP/IPTC/Photoshop blocks, unlinked previews and their pixels, stale data left
   by editors, and anything appended after the image.  Because the keep map wins, bytes
   shared between a kept and a removed entry are never damaged.
4. JPEG streams inside the image (JPEGTables, JPEG-compressed strips/tiles, old-style
   JPEG) may carry their own APPn/COM segments before the scan: those are renamed to an
   APP15 and zero-filled, like the JPEG walker does (APP14 "Adobe" is kept), and so are
   a DAC outside an arithmetic frame and extension markers; tables and frame headers
   must fill exactly their declared length.

`preserve_length=False` returns the same bytes: dropping space from a TIFF means
rewriting every offset, and the in-place result is never larger than the input.
The output is idempotent: a second pass finds only zeros and compact directories.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field

from .. import icc
from ..errors import ScrubError
from ..exif import tag_name
from ..xmp import xmp_property_names
from ..report import Findings, ScrubOptions
from ._splice import Splice
from .jpeg import segment_is_what_it_claims
from .._bytes import all_zero

#: Tags that image rendering needs (TIFF 6.0 baseline + extensions); everything else goes.
KEEP_TAGS = frozenset({
    254, 255,            # NewSubfileType, SubfileType
    256, 257, 258, 259,  # ImageWidth, ImageLength, BitsPerSample, Compression
    262, 263, 264, 265, 266,  # Photometric, Threshholding, CellWidth, CellLength, FillOrder
    273, 277, 278, 279,  # StripOffsets, SamplesPerPixel, RowsPerStrip, StripByteCounts
    280, 281, 282, 283, 284,  # Min/MaxSampleValue, X/YResolution, PlanarConfiguration
    290, 291, 296, 301,  # GrayResponseUnit/Curve, ResolutionUnit, TransferFunction
    317, 318, 319, 320, 321,  # Predictor, WhitePoint, PrimaryChromaticities, ColorMap, HalftoneHints
    322, 323, 324, 325,  # TileWidth, TileLength, TileOffsets, TileByteCounts
    330,                 # SubIFDs (rewritten to point at kept image directories only)
    332, 334, 336, 338, 339, 340, 341,  # InkSet, NumberOfInks, DotRange, ExtraSamples,
                                        # SampleFormat, SMin/SMaxSampleValue
    347,                 # JPEGTables
    529, 530, 531, 532,  # YCbCrCoefficients, YCbCrSubSampling, YCbCrPositioning, ReferenceBlackWhite
})
ORIENTATION = 274
_CURVES = frozenset({291, 301, 320})  # GrayResponseCurve, TransferFunction, ColorMap
ICC = 34675
OLD_JPEG_TAGS = frozenset(range(512, 522))  # kept only when Compression = 6 (old-style JPEG)
SUBIFDS = 330

# Carriers with their own names in the report.
_NAMED = {700: "TIFF XMP", 33723: "TIFF IPTC", 34377: "TIFF Photoshop", 34665: "TIFF Exif IFD",
          34853: "TIFF GPS IFD", 40965: "TIFF Interop IFD", 37500: "TIFF MakerNote",
          ICC: "TIFF ICC profile"}
_SUB_KIND = {34665: "ExifIFD", 34853: "GPS", 40965: "InteropIFD"}

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
               16: 8, 17: 8, 18: 8}
_UINT_TYPES = {1: "B", 3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q"}
_INT_TAGS = frozenset({254, 255, 256, 257, 258, 259, 262, 273, 277, 278, 279, 322, 323, 324, 325,
                       330, 513, 514})
_BLOB_TAGS = frozenset({347, ICC})
MAX_DATA_BLOCKS = 4_000_000
"""Upper bound on strips + tiles over the whole file (hostile counts fail closed)."""
MAX_JPEG_MARKERS = 4096
"""Upper bound on marker segments read before the scan of one embedded JPEG stream."""
MAX_SUBIFD_DEPTH = 8
"""SubIFDs inside SubIFDs: real files nest one level (DNG); more is hostile."""


@dataclass(slots=True)
class _Entry:
    pos: int
    tag: int
    type: int
    count: int
    field_at: int           # where the value/offset field starts
    size: int | None        # value size in bytes (None: unknown type)
    value_at: int | None    # where the value bytes are (inline or out of line); None if unknown

    @property
    def out_of_line(self) -> bool:
        return self.value_at is not None and self.value_at != self.field_at


@dataclass(slots=True)
class _Ifd:
    offset: int
    entries: list[_Entry]
    next_at: int
    next: int
    kind: str               # "IFD0", "IFD3", "SubIFD" ...
    kept: list[_Entry] = field(default_factory=list)
    subifds: list[int] = field(default_factory=list)


class _Reader:
    """Bounds-checked access to one TIFF's header, directories and values."""

    def __init__(self, data: bytes, options: ScrubOptions) -> None:
        self.data = data
        self.n = len(data)
        self.options = options
        if self.n < 8:
            raise ScrubError("TIFF: file is shorter than a TIFF header")
        if data[:2] == b"II":
            self.bo = "<"
        elif data[:2] == b"MM":
            self.bo = ">"
        else:
            raise ScrubError("TIFF: unknown byte order mark")
        magic = self.u(2, 2)
        if magic == 42:
            self.big = False
            self.cnt_size, self.ent_size, self.off_size = 2, 12, 4
            self.header_len = 8
            self.first = self.u(4, 4)
        elif magic == 43:
            if self.n < 16 or self.u(4, 2) != 8 or self.u(6, 2) != 0:
                raise ScrubError("TIFF: BigTIFF header is malformed")
            self.big = True
            self.cnt_size, self.ent_size, self.off_size = 8, 20, 8
            self.header_len = 16
            self.first = self.u(8, 8)
        else:
            raise ScrubError("TIFF: unknown TIFF version number")
        self.structures = 0

    def u(self, at: int, size: int) -> int:
        if at < 0 or at + size > self.n:
            raise ScrubError("TIFF: a field points past the end of the file")
        return int.from_bytes(self.data[at:at + size], "little" if self.bo == "<" else "big")

    def count(self, k: int = 1) -> None:
        self.structures += k
        if self.structures > self.options.max_structures:
            raise ScrubError("TIFF: too many directories or entries (limit "
                             f"{self.options.max_structures}); refusing to walk it")

    def ifd(self, off: int, kind: str) -> _Ifd:
        if off < self.header_len or off + self.cnt_size > self.n:
            raise ScrubError(f"TIFF: {kind} directory offset is outside the file")
        num = self.u(off, self.cnt_size)
        if num > 65535:
            raise ScrubError(f"TIFF: {kind} declares an absurd number of entries")
        table_end = off + self.cnt_size + num * self.ent_size
        if table_end + self.off_size > self.n:
            raise ScrubError(f"TIFF: {kind} directory runs past the end of the file")
        self.count(1 + num)
        entries = []
        for i in range(num):
            p = off + self.cnt_size + i * self.ent_size
            tag, typ = self.u(p, 2), self.u(p + 2, 2)
            cnt = self.u(p + 4, self.off_size)
            fat = p + 4 + self.off_size
            unit = _TYPE_SIZES.get(typ)
            size = value_at = None
            if unit is not None and not (typ >= 16 and not self.big):
                size = unit * cnt
                if size <= self.off_size:
                    value_at = fat
                else:
                    value_at = self.u(fat, self.off_size)
                    if value_at + size > self.n:
                        value_at = None  # judged later: fatal only for a kept entry
            entries.append(_Entry(p, tag, typ, cnt, fat, size, value_at))
        nxt = self.u(table_end, self.off_size)
        return _Ifd(off, entries, table_end, nxt, kind)

    def uints(self, e: _Entry, what: str, limit: int = MAX_DATA_BLOCKS) -> list[int]:
        """Unsigned integer values of a kept entry (offsets, counts, SubIFD pointers)."""
        code = _UINT_TYPES.get(e.type)
        if code is None or e.value_at is None:
            raise ScrubError(f"TIFF: {what} has an unusable type or points outside the file")
        if e.count > limit:
            raise ScrubError(f"TIFF: {what} declares too many values")
        return list(struct.unpack_from(f"{self.bo}{e.count}{code}", self.data, e.value_at))

    def text(self, e: _Entry, limit: int = 200) -> str:
        if e.value_at is None or e.size is None:
            return ""
        raw = self.data[e.value_at:e.value_at + min(e.size, limit)]
        if e.type != 2:
            return f"<{e.size} bytes>"
        s = raw.split(b"\0", 1)[0].decode("latin-1", "replace")
        return "".join(c if c.isprintable() else "?" for c in s)


# How many values a kept tag may hold: a sane image never needs more, and a bound stops a
# kept tag from being stretched over other bytes.  None: bounded elsewhere (data blocks,
# SubIFDs) or a blob (ICC, JPEGTables).
_PER_SAMPLE = frozenset({258, 280, 281, 338, 339, 340, 341, 519, 520, 521})
_FIXED = {318: 2, 319: 6, 321: 2, 529: 3, 530: 2, 532: 6, 336: 512}
_TABLES = {291: 1 << 16, 301: 3 << 16, 320: 3 << 16}
_UNBOUNDED = frozenset({273, 279, 324, 325, 330, 347, 34675})


def _max_count(tag: int, spp: int) -> int:
    if tag in _UNBOUNDED:
        return 1 << 62
    if tag in _PER_SAMPLE:
        return max(spp, 1)
    return _FIXED.get(tag) or _TABLES.get(tag) or 1


def _first(r: _Reader, ifd: _Ifd, tag: int) -> int | None:
    for e in ifd.entries:
        if e.tag == tag and e.count >= 1 and e.type in _UINT_TYPES and e.value_at is not None:
            return r.uints(e, tag_name("IFD0", tag), limit=1 << 20)[0]
    return None


def _is_preview(r: _Reader, ifd: _Ifd) -> bool:
    """Reduced-resolution copies and EXIF-style thumbnails (no strips/tiles of their own)."""
    nst = _first(r, ifd, 254)
    if nst is not None and nst & 1:
        return True
    if _first(r, ifd, 255) == 2:
        return True
    tags = {e.tag for e in ifd.entries}
    return not ({273, 279} <= tags or {324, 325} <= tags)


def _sub_scan(r: _Reader, off: int, kind: str, seen: set[int],
              depth: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    """Tag names and byte spans of a removed Exif/GPS/Interop directory, for the report.

    Lenient on purpose: the directory is zeroed whatever it holds."""
    if depth > 3 or off in seen:
        return [], []
    seen.add(off)
    try:
        sub = r.ifd(off, kind)
    except ScrubError:
        return [f"{kind} (unreadable)"], []
    names, spans = [], [(off, off + r_span(r, sub))]
    for e in sub.entries:
        names.append(tag_name(kind, e.tag))
        if e.out_of_line and e.value_at is not None and e.size is not None:
            spans.append((e.value_at, e.value_at + e.size))
        if e.tag == 40965 and kind == "ExifIFD" and e.count == 1:
            n2, s2 = _sub_scan(r, r.u(e.field_at, r.off_size), "InteropIFD", seen, depth + 1)
            names += n2
            spans += s2
    return names, spans


class _Scrubber:
    def __init__(self, data: bytes, options: ScrubOptions, findings: Findings) -> None:
        self.r = _Reader(data, options)
        self.options = options
        self.findings = findings
        self.keep: list[tuple[int, int]] = [(0, self.r.header_len)]
        self.kept_ifds: list[_Ifd] = []
        self.jpeg_spans: list[tuple[int, int]] = []
        self.seen: set[int] = set()
        self.blocks = 0
        self.reported: list[tuple[int, int]] = []
        self.private: list[tuple[int, int]] = []   # value areas of removed entries
        self.pixels: list[tuple[int, int]] = []
        self.layout: tuple[int | None, int] = (None, 1)  # (Photometric, BitsPerSample) of the IFD being taken

    # --- walking -------------------------------------------------------------------
    def walk(self) -> list[_Ifd]:
        """Main chain: returns the kept pages in order (IFD0 first)."""
        r = self.r
        if r.first == 0:
            raise ScrubError("TIFF: the file has no image directory")
        pages: list[_Ifd] = []
        off, index = r.first, 0
        while off:
            if off in self.seen:
                raise ScrubError("TIFF: the directory chain loops")
            self.seen.add(off)
            ifd = r.ifd(off, f"IFD{index}")
            if index == 0 or not _is_preview(r, ifd):
                self.take(ifd)
                pages.append(ifd)
            else:
                self.drop_preview(ifd)
            off, index = ifd.next, index + 1
        return pages

    def take(self, ifd: _Ifd, depth: int = 0) -> None:
        """Keep an image directory: choose its entries, map its data, recurse into SubIFDs."""
        r = self.r
        if depth > MAX_SUBIFD_DEPTH:
            raise ScrubError("TIFF: SubIFDs are nested too deeply")
        compression = _first(r, ifd, 259)
        spp = _first(r, ifd, 277) or 1
        self.layout = (_first(r, ifd, 262), _first(r, ifd, 258) or 1)
        prev_tag = -1
        for e in sorted(ifd.entries, key=lambda x: x.tag):
            if e.tag == prev_tag and self.keeps(e, compression):
                raise ScrubError(f"TIFF: {ifd.kind} repeats tag {e.tag}; rendering is ambiguous")
            prev_tag = e.tag
            if self.keeps(e, compression):
                if e.size is None or e.value_at is None:
                    raise ScrubError(f"TIFF: {ifd.kind} {tag_name('IFD0', e.tag)} has a bad type "
                                     "or points outside the file")
                if e.tag in _INT_TAGS and e.type not in _UINT_TYPES:
                    raise ScrubError(f"TIFF: {ifd.kind} {tag_name('IFD0', e.tag)} is not an integer")
                if e.count > _max_count(e.tag, spp):
                    raise ScrubError(f"TIFF: {ifd.kind} {tag_name('IFD0', e.tag)} holds more "
                                     "values than an image tag can")
                if e.type not in (1, 7) if e.tag in _BLOB_TAGS else e.type in (2, 7):
                    # text never belongs in a rendering tag; byte blobs only in ICC/JPEGTables
                    raise ScrubError(f"TIFF: {ifd.kind} {tag_name('IFD0', e.tag)} has an "
                                     "unexpected type for an image tag")
                ifd.kept.append(e)
                if e.out_of_line and e.tag != SUBIFDS:  # SubIFDs: mapped once rewritten
                    self.keep.append((e.value_at, e.value_at + e.size))
            else:
                self.report(ifd, e)
        self.map_image_data(ifd, compression)
        for e in list(ifd.kept):
            if e.tag == SUBIFDS:
                for off in r.uints(e, "SubIFDs", limit=4096):
                    if off in self.seen:
                        raise ScrubError("TIFF: a SubIFD points back at a directory already seen")
                    self.seen.add(off)
                    sub = r.ifd(off, "SubIFD")
                    if _is_preview(r, sub):
                        self.drop_preview(sub)
                    else:
                        self.take(sub, depth + 1)
                        ifd.subifds.append(off)
                new_size = len(ifd.subifds) * _TYPE_SIZES[e.type]
                if not ifd.subifds:
                    ifd.kept.remove(e)
                elif new_size > r.off_size:
                    assert e.value_at is not None
                    self.keep.append((e.value_at, e.value_at + new_size))
        table = r.cnt_size + len(ifd.kept) * r.ent_size + r.off_size
        self.reported.append((ifd.offset, ifd.offset + r_span(r, ifd)))  # its old table
        self.keep.append((ifd.offset, ifd.offset + table))
        self.kept_ifds.append(ifd)

    def keeps(self, e: _Entry, compression: int | None) -> bool:
        if e.tag in _CURVES:
            return self.curve_applies(e)
        if e.tag in KEEP_TAGS:
            return True
        if e.tag in OLD_JPEG_TAGS:
            return compression == 6
        if e.tag == ORIENTATION:
            if not self.options.keep_orientation or e.count != 1 or e.type not in (3, 4):
                return False
            return 1 <= self.r.u(e.field_at, _TYPE_SIZES[e.type]) <= 8
        if e.tag == ICC:
            # kept only when it is what it claims: one well-formed ICC profile
            if not self.options.keep_icc or e.value_at is None or e.size is None:
                return False
            return icc.problem(self.r.data[e.value_at:e.value_at + e.size]) is None
        return False

    def curve_applies(self, e: _Entry) -> bool:
        """ColorMap, GrayResponseCurve and TransferFunction are tables of 2**BitsPerSample
        entries (per channel), up to hundreds of kilobytes of free values: each is kept
        only where it applies (a palette image's ColorMap, a greyscale image's response
        curve) with exactly the count TIFF 6.0 gives it.  A misfit one is read by no
        decoder and goes; a palette image whose ColorMap does not fit is refused."""
        photometric, bps = self.layout
        entries = 1 << min(bps, 16)
        if e.tag == 320:
            fits = e.count == 3 * entries
            if photometric == 3 and not fits:
                raise ScrubError("TIFF: a palette image's ColorMap does not have 3 x 2^BitsPerSample entries")
            return photometric == 3
        if e.tag == 291:
            return photometric in (0, 1) and e.count == entries
        return e.count in (entries, 3 * entries)  # TransferFunction: one curve or three

    def map_image_data(self, ifd: _Ifd, compression: int | None) -> None:
        r = self.r
        by_tag = {e.tag: e for e in ifd.kept}
        found = False
        for off_tag, len_tag, what in ((273, 279, "strip"), (324, 325, "tile")):
            if off_tag not in by_tag and len_tag not in by_tag:
                continue
            if off_tag not in by_tag or len_tag not in by_tag:
                raise ScrubError(f"TIFF: {ifd.kind} has {what} offsets without byte counts")
            offs = r.uints(by_tag[off_tag], f"{what} offsets")
            lens = r.uints(by_tag[len_tag], f"{what} byte counts")
            if len(offs) != len(lens):
                raise ScrubError(f"TIFF: {ifd.kind} {what} offsets and byte counts disagree")
            self.blocks += len(offs)
            if self.blocks > MAX_DATA_BLOCKS:
                raise ScrubError("TIFF: too many strips or tiles")
            for o, ln in zip(offs, lens):
                if ln == 0:
                    continue
                if o + ln > r.n:
                    raise ScrubError(f"TIFF: a {what} of {ifd.kind} lies outside the file")
                self.keep.append((o, o + ln))
                self.pixels.append((o, o + ln))
                if compression in (6, 7):
                    self.jpeg_spans.append((o, o + ln))
                found = True
        if compression == 6 and 513 in by_tag:
            start = r.uints(by_tag[513], "JPEGInterchangeFormat")[0]
            length = r.uints(by_tag[514], "JPEGInterchangeFormatLength")[0] if 514 in by_tag else 0
            if length == 0 or start + length > r.n:
                raise ScrubError(f"TIFF: {ifd.kind} old-style JPEG stream lies outside the file")
            if r.data[start:start + 3] != b"\xff\xd8\xff":
                # kept as a JPEG stream only when it is one (its segments are then cleaned);
                # anything else there (an XMP packet, say) would travel verbatim
                raise ScrubError(f"TIFF: {ifd.kind} old-style JPEG stream is not a JPEG")
            self.keep.append((start, start + length))
            self.pixels.append((start, start + length))
            self.jpeg_spans.append((start, start + length))
            found = True
        if compression == 6:
            for tag in (519, 520, 521):
                if tag in by_tag:
                    for o in r.uints(by_tag[tag], "old-style JPEG tables", limit=16):
                        size = 64 if tag == 519 else 16 + sum(r.data[o:o + 16])
                        if o + size > r.n:
                            raise ScrubError("TIFF: old-style JPEG table lies outside the file")
                        self.keep.append((o, o + size))
        if 347 in by_tag:
            e = by_tag[347]
            assert e.value_at is not None and e.size is not None
            self.jpeg_spans.append((e.value_at, e.value_at + e.size))
        if not found and ifd.kind == "IFD0":
            raise ScrubError("TIFF: the first image has no image data (no strips or tiles)")

    # --- reporting -----------------------------------------------------------------
    def report(self, ifd: _Ifd, e: _Entry) -> None:
        r = self.r
        carrier = _NAMED.get(e.tag) or f"TIFF {tag_name('IFD0', e.tag)}"
        start = e.value_at if e.out_of_line and e.value_at is not None else e.pos
        length = e.size if e.out_of_line and e.size is not None else r.ent_size
        self.reported.append((start, start + length))
        if e.out_of_line:
            self.private.append((start, start + length))
        tags: list[str] = []
        if e.tag in _SUB_KIND and e.count == 1 and e.type in (4, 13, 16, 18):
            sub_off = r.u(e.field_at, r.off_size)
            tags, spans = _sub_scan(r, sub_off, _SUB_KIND[e.tag], set())
            self.reported += spans
            self.private += spans
            if spans:
                start, length = spans[0][0], spans[0][1] - spans[0][0]
            if "MakerNote" in tags:
                self.report_makernote(sub_off)
        if e.tag == 700 and e.value_at is not None and e.size:
            tags = xmp_property_names(r.data[e.value_at:e.value_at + e.size])
        if not tags and (e.tag not in _NAMED or e.tag == ICC or e.tag in _SUB_KIND):
            tags = [tag_name("IFD0", e.tag)]
        values: list[tuple[str, str]] = []
        if self.options.collect_values and e.tag not in _SUB_KIND:
            values.append((tags[0] if tags else carrier, r.text(e)))
        self.findings.remove(carrier, start, length, tags, values=values)

    def report_makernote(self, exif_off: int) -> None:
        try:
            sub = self.r.ifd(exif_off, "ExifIFD")
        except ScrubError:
            return
        for e in sub.entries:
            if e.tag == 37500 and e.value_at is not None and e.size:
                self.findings.remove("TIFF MakerNote", e.value_at, e.size, ["MakerNote"])

    def drop_preview(self, ifd: _Ifd) -> None:
        """Unlink a preview directory; note its table, values and pixels as reported."""
        r = self.r
        self.reported.append((ifd.offset, ifd.offset + r_span(r, ifd)))
        for e in ifd.entries:
            if e.out_of_line and e.value_at is not None and e.size is not None:
                self.reported.append((e.value_at, e.value_at + e.size))
        by_tag = {e.tag: e for e in ifd.entries}
        for off_tag, len_tag in ((273, 279), (324, 325), (513, 514)):
            if off_tag in by_tag and len_tag in by_tag:
                try:
                    offs = r.uints(by_tag[off_tag], "preview offsets")
                    lens = r.uints(by_tag[len_tag], "preview byte counts")
                except ScrubError:
                    continue
                self.reported += [(o, o + ln) for o, ln in zip(offs, lens)]
        self.findings.remove(f"TIFF thumbnail image ({ifd.kind})", ifd.offset,
                             r_span(r, ifd), ())

    # --- writing -------------------------------------------------------------------
    def write(self, pages: list[_Ifd]) -> bytes:
        r = self.r
        # Written only, until the embedded-JPEG pass below (which needs to read what it
        # edits and so works on a bytearray).  Directory rewrites read r.data.
        out = Splice(r.data)
        spans = _merge(self.keep)
        # every kept directory table must stand alone, or rewriting it would damage data
        tables = sorted((i.offset, i.offset + r.cnt_size + len(i.kept) * r.ent_size + r.off_size)
                        for i in self.kept_ifds)
        others = _merge([k for k in self.keep if k not in tables] + [(0, r.header_len)])
        for a, b in tables:
            for c, d in others:
                if a < d and c < b:
                    raise ScrubError("TIFF: an image directory overlaps image data or values")
        for a, b in zip(tables, tables[1:]):
            if a[1] > b[0]:
                raise ScrubError("TIFF: two image directories overlap")
        # image data that overlaps a removed value would keep it: refuse (corrupt or crafted)
        private = _merge(self.private)
        starts = [a for a, _ in private]
        for a, b in _merge(self.pixels):
            if _subtract((a, b), private, starts) != [(a, b)]:
                raise ScrubError("TIFF: image data overlaps a metadata value; cannot separate them")
        # zero everything nobody references any more
        gaps, pos = [], 0
        for a, b in spans + [(r.n, r.n)]:
            if a > pos:
                gaps.append((pos, a))
            pos = max(pos, b)
        self.report_stray(r.data, gaps)  # before any edit, so the input itself
        for a, b in gaps:
            out[a:b] = bytes(b - a)
        # rewrite kept directories compactly
        next_of = {p.offset: (pages[i + 1].offset if i + 1 < len(pages) else 0)
                   for i, p in enumerate(pages)}
        for ifd in self.kept_ifds:
            self.write_ifd(out, ifd, next_of.get(ifd.offset, 0))
        if self.jpeg_spans:
            buf = out.bytearray()
            for a, b in self.jpeg_spans:
                _neutralise_jpeg(buf, a, b, self.findings)
        return out.build()

    def report_stray(self, out: bytes, gaps: list[tuple[int, int]]) -> None:
        """Non-zero bytes no directory references and no removal accounts for: editors'
        stale copies, appended data.  Reported once, as one carrier."""
        reported = _merge(self.reported)
        first, total = -1, 0
        starts = [c for c, _ in reported]
        for a, b in gaps:
            for c, d in _subtract((a, b), reported, starts):
                chunk = out[c:d]
                nonzero = len(chunk) - chunk.count(0)
                if nonzero:
                    total += nonzero
                    first = c if first < 0 else first
        if total:
            self.findings.remove("TIFF unreferenced data", first, total)

    def write_ifd(self, out: Splice, ifd: _Ifd, nxt: int) -> None:
        r = self.r
        pack_int = (lambda v, size: v.to_bytes(size, "little" if r.bo == "<" else "big"))
        old_len = r.cnt_size + len(ifd.entries) * r.ent_size + r.off_size
        table = bytearray(pack_int(len(ifd.kept), r.cnt_size))
        for e in sorted(ifd.kept, key=lambda x: x.tag):
            raw = bytearray(r.data[e.pos:e.pos + r.ent_size])
            if e.tag == SUBIFDS:
                raw = self.subifd_entry(out, e, ifd.subifds, pack_int)
            table += raw
        table += pack_int(nxt if ifd.kind != "SubIFD" else 0, r.off_size)
        out[ifd.offset:ifd.offset + old_len] = bytes(table) + bytes(old_len - len(table))

    def subifd_entry(self, out: Splice, e: _Entry, kept: list[int], pack_int) -> bytearray:
        """SubIFDs entry listing only the kept image directories (same value area)."""
        r = self.r
        unit = _TYPE_SIZES[e.type]
        values = b"".join(pack_int(o, unit) for o in kept)
        head = pack_int(e.tag, 2) + pack_int(e.type, 2) + pack_int(len(kept), r.off_size)
        if len(values) <= r.off_size:
            return bytearray(head + values + bytes(r.off_size - len(values)))
        assert e.value_at is not None and e.size is not None
        out[e.value_at:e.value_at + len(values)] = values
        return bytearray(head + pack_int(e.value_at, r.off_size))


def r_span(r: _Reader, ifd: _Ifd) -> int:
    return r.cnt_size + len(ifd.entries) * r.ent_size + r.off_size


def _subtract(span: tuple[int, int], merged: list[tuple[int, int]],
              starts: list[int]) -> list[tuple[int, int]]:
    """Parts of `span` not covered by the sorted, merged spans (`starts`: their starts)."""
    a, b = span
    out = []
    for c, d in merged[max(0, bisect.bisect_right(starts, a) - 1):]:
        if d <= a:
            continue
        if c >= b:
            break
        if c > a:
            out.append((a, c))
        a = max(a, d)
        if a >= b:
            break
    if a < b:
        out.append((a, b))
    return out


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_ARITHMETIC = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_TABLES = frozenset({0xC4, 0xDB, 0xDD})


def _neutralise_jpeg(out: bytearray, start: int, end: int, findings: Findings) -> None:
    """Neutralise what an embedded JPEG stream holds before its scan that no decoder
    needs: APPn (but APP14 Adobe) and COM, a DAC outside an arithmetic frame, extension
    and reserved markers (JPGn, DHP, EXP, a DNL before any scan).  Each becomes a zeroed
    APP15 of the same length.  Tables and frame headers must fill exactly their declared
    length (else the file is refused): like the JPEG walker, nothing kept is a hiding place.
    """
    if out[start:start + 2] != b"\xff\xd8":
        return  # not a complete JPEG stream (e.g. a continuation strip): no segments to check
    p = start + 2
    frame = 0
    for _ in range(MAX_JPEG_MARKERS):
        while p < end and out[p] == 0xFF and p + 1 < end and out[p + 1] == 0xFF:
            p += 1  # fill bytes
        if p + 2 > end:
            return
        if out[p] != 0xFF:
            raise ScrubError("TIFF: an embedded JPEG stream has a broken marker structure")
        m = out[p + 1]
        if m in (0xD8, 0x01) or 0xD0 <= m <= 0xD7:
            p += 2
            continue
        if m in (0xD9, 0xDA):
            return
        if p + 4 > end:
            raise ScrubError("TIFF: an embedded JPEG stream is truncated")
        seg_len = int.from_bytes(out[p + 2:p + 4], "big")
        if seg_len < 2 or p + 2 + seg_len > end:
            raise ScrubError("TIFF: an embedded JPEG segment runs past its strip")
        body = slice(p + 4, p + 2 + seg_len)
        if m in _JPEG_FRAMES or m in _JPEG_TABLES:
            if not segment_is_what_it_claims(m, bytes(out[body])):
                raise ScrubError("TIFF: an embedded JPEG table or frame header does not match its length")
            if m in _JPEG_FRAMES:
                frame = m
            p += 2 + seg_len
            continue
        neutral = m == 0xEF and all_zero(out, p + 4, p + 2 + seg_len)
        adobe = m == 0xEE and bytes(out[body][:5]) == b"Adobe"
        dac = m == 0xCC and frame in _JPEG_ARITHMETIC
        if dac and not segment_is_what_it_claims(m, bytes(out[body])):
            raise ScrubError("TIFF: an embedded JPEG DAC segment holds impossible values")
        if not (neutral or adobe or dac):
            if m == 0xFE:
                name = "COM"
            elif 0xE0 <= m <= 0xEF:
                name = f"APP{m - 0xE0}"
            else:
                name = f"marker 0xFF{m:02X}"
            findings.remove(f"TIFF embedded JPEG {name}", p, seg_len + 2)
            out[p + 1] = 0xEF
            out[body] = bytes(seg_len - 2)
        p += 2 + seg_len
    raise ScrubError("TIFF: an embedded JPEG stream has too many segments")


def scrub(data: bytes, options: ScrubOptions, findings: Findings) -> bytes:
    """Neutralise every non-rendering TIFF tag and directory in place (same length)."""
    s = _Scrubber(data, options, findings)
    pages = s.walk()
    for ifd in s.kept_ifds:
        for e in ifd.kept:
            if e.tag == ORIENTATION:
                findings.keep("orientation", f"TIFF Orientation {s.r.u(e.field_at, _TYPE_SIZES[e.type])}")
            elif e.tag == ICC:
                findings.keep("colour profile", "TIFF ICC_Profile tag")
    return s.write(pages)
