"""Images embedded anywhere in a body: found by *plausible* magic bytes, then delimited.

Why: the carrier parsers only look where a known upload shape puts an image (the whole
body, a whole multipart part, a whole JSON string).  A phone photo two junk bytes into a
raw body, inside a protobuf bytes field or a gRPC-web frame, after some text, in a stored
zip entry or as a PDF's DCTDecode stream would otherwise leave with every byte of its
metadata.  This module finds such images wherever they sit.

"Plausible" means more than the first magic bytes: the first segment, chunk, block or box
must parse (a JPEG's first segment length lands on the next marker, a PNG starts with an
IHDR of 13 bytes, a TIFF's first IFD has sane entries...), so a video or an archive that
happens to contain ``FF D8 FF`` is not mistaken for a photo.  Each candidate is then
*delimited* (JPEG SOI..EOI, PNG ..IEND, GIF ..trailer, RIFF size, ISOBMFF/JXL boxes, TIFF
offsets, BMP file size) so it can be cleaned in place by the length-preserving engine and
the wrapper's own lengths (varints, frame lengths, ``/Length``, xref offsets) stay valid.
A candidate whose extent cannot be delimited has ``end=None``: the caller fails closed.

All searches run window by window over the buffer (C-level ``bytes.find`` on a few MiB
at a time), so one huge body never holds the GIL for long, and the optional deadline is
checked between windows.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ..engine.detect import _isobmff_kind

#: Bytes searched per C-level call: small enough that other threads get the GIL often.
WINDOW = 4 << 20


class InspectionTimeout(Exception):
    """The inspection deadline passed; the caller must fail closed."""


def check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise InspectionTimeout("inspection deadline passed")


def find(data: bytes, lit: bytes, lo: int = 0, hi: int | None = None, deadline: float | None = None) -> int:
    """``data.find(lit, lo, hi)`` done window by window.

    Why: one ``bytes.find`` over a 250 MiB body holds the GIL for a few hundred
    milliseconds, and every other upload's thread (and mitmproxy's event loop) waits that
    long.  Searching `WINDOW` bytes per call (overlapping by ``len(lit) - 1``) gives them
    a turn between calls, and lets the deadline be checked.
    """
    hi = len(data) if hi is None else min(hi, len(data))
    step = max(WINDOW, len(lit))
    a = lo
    while a < hi:
        b = min(hi, a + step + len(lit) - 1)
        i = data.find(lit, a, b)
        if i >= 0:
            return i
        a += step
        check_deadline(deadline)
    return -1


@dataclass(frozen=True)
class Candidate:
    """A plausible image at ``start``; ``end`` exclusive, None when it cannot be delimited."""

    start: int
    format: str
    end: int | None
    why: str | None = None  # why the extent is unknown


# ---- per-format probes: (data, pos, hi) -> Candidate | None (None: not plausible) ---------

_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])
_JPEG_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
#: Any marker with a length field may follow SOI as far as the engine is concerned (it
#: walks, keeps or neutralises each); the plausibility test is that its length lands on
#: the next marker, not which marker it is.
_JPEG_FIRST = frozenset(m for m in range(0xC0, 0xFF) if not 0xD0 <= m <= 0xD9)
_MAX_SEGMENTS = 100_000


def _probe_jpeg(data: bytes, pos: int, hi: int) -> Candidate | None:
    if pos + 4 > hi or data[pos + 3] not in _JPEG_FIRST:
        return None
    i = pos + 2
    segments = 0
    while True:
        if i + 2 > hi:
            return _unknown(pos, "JPEG", segments, "the image is cut off before its end marker")
        if data[i] != 0xFF:
            return _unknown(pos, "JPEG", segments, "a JPEG segment does not start with a marker")
        m = data[i + 1]
        if m == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if m == 0xD9:
            return Candidate(pos, "JPEG", i + 2) if segments else None
        if m in _JPEG_STANDALONE:
            i += 2
            continue
        if i + 4 > hi:
            return _unknown(pos, "JPEG", segments, "the image is cut off before its end marker")
        length = (data[i + 2] << 8) | data[i + 3]
        nxt = i + 2 + length
        if length < 2 or nxt > hi:
            return _unknown(pos, "JPEG", segments, "a JPEG segment runs past the data")
        if segments == 0 and (nxt >= hi or data[nxt] != 0xFF):
            return None  # the first segment does not land on a marker: not a JPEG
        segments += 1
        if segments > _MAX_SEGMENTS:
            return _unknown(pos, "JPEG", segments, "too many JPEG segments")
        i = nxt
        if m == 0xDA:  # entropy-coded data follows: skip to the next real marker
            while True:
                stop = min(hi, i + WINDOW)
                found = _JPEG_MARKER_AFTER_SCAN.search(data, i, stop)
                if found is not None:
                    i = found.start()
                    break
                if stop >= hi:
                    return _unknown(pos, "JPEG", segments, "the image is cut off before its end marker")
                i = stop - 1  # the marker's first byte may end this window


def _unknown(pos: int, fmt: str, parsed: int, why: str) -> Candidate | None:
    """A candidate whose start parsed but whose end cannot be found; None if nothing parsed."""
    return Candidate(pos, fmt, None, why) if parsed else None


def _probe_png(data: bytes, pos: int, hi: int) -> Candidate | None:
    i = pos + 8
    if i + 8 > hi or data[i:i + 8] != b"\x00\x00\x00\x0dIHDR":
        return None
    chunks = 0
    while True:
        if i + 12 > hi:
            return Candidate(pos, "PNG", None, "the PNG is cut off before IEND")
        (length,) = struct.unpack_from(">I", data, i)
        ctype = data[i + 4:i + 8]
        if not ctype.isalpha() or length > 0x7FFFFFFF:
            return Candidate(pos, "PNG", None, "a PNG chunk header is corrupt")
        i += 12 + length
        if i > hi:
            return Candidate(pos, "PNG", None, "the PNG is cut off before IEND")
        if ctype == b"IEND":
            return Candidate(pos, "PNG", i)
        chunks += 1
        if chunks > _MAX_SEGMENTS:
            return Candidate(pos, "PNG", None, "too many PNG chunks")


def _gif_sub_blocks(data: bytes, i: int, hi: int) -> int:
    """Position after a GIF sub-block sequence starting at `i`, or -1 if it runs past `hi`."""
    while i < hi:
        n = data[i]
        i += 1 + n
        if n == 0:
            return i if i <= hi else -1
    return -1


def _probe_gif(data: bytes, pos: int, hi: int) -> Candidate | None:
    i = pos + 13
    if i > hi:
        return None
    flags = data[pos + 10]
    if flags & 0x80:
        i += 3 << ((flags & 7) + 1)
    if i >= hi or data[i] not in (0x21, 0x2C, 0x3B):
        return None
    blocks = 0
    while True:
        if i >= hi:
            return Candidate(pos, "GIF", None, "the GIF is cut off before its trailer")
        b = data[i]
        if b == 0x3B:
            return Candidate(pos, "GIF", i + 1)
        if b == 0x21:
            i = _gif_sub_blocks(data, i + 2, hi)
        elif b == 0x2C:
            if i + 10 > hi:
                return Candidate(pos, "GIF", None, "the GIF is cut off before its trailer")
            lflags = data[i + 9]
            i += 10
            if lflags & 0x80:
                i += 3 << ((lflags & 7) + 1)
            i = _gif_sub_blocks(data, i + 1, hi)  # LZW minimum code size, then the data
        else:
            return Candidate(pos, "GIF", None, "a GIF block is corrupt")
        if i < 0:
            return Candidate(pos, "GIF", None, "the GIF is cut off before its trailer")
        blocks += 1
        if blocks > _MAX_SEGMENTS:
            return Candidate(pos, "GIF", None, "too many GIF blocks")


def _probe_webp(data: bytes, pos: int, hi: int) -> Candidate | None:
    if pos + 16 > hi or data[pos + 8:pos + 12] != b"WEBP" or data[pos + 12:pos + 16] not in (
            b"VP8 ", b"VP8L", b"VP8X"):
        return None
    (size,) = struct.unpack_from("<I", data, pos + 4)
    end = pos + 8 + size + (size & 1)
    if size < 12:
        return None
    if end > hi:
        if pos + 8 + size == hi:  # odd size without its pad byte at the very end
            return Candidate(pos, "WEBP", hi)
        return Candidate(pos, "WEBP", None, "the WebP file is cut off (RIFF size past the data)")
    return Candidate(pos, "WEBP", end)


#: Top-level boxes of HEIF/AVIF/JXL files and their usual neighbours; a box of another type
#: counts as part of the file too when it is well formed (see `_walk_boxes`).
_TOP_BOXES = frozenset([b"ftyp", b"meta", b"mdat", b"free", b"skip", b"moov", b"uuid", b"wide",
                        b"pdin", b"moof", b"mfra", b"styp", b"sidx", b"ssix", b"prft", b"idat",
                        b"jxlc", b"jxlp", b"jxll", b"jxli", b"jbrd", b"Exif", b"xml ", b"jumb",
                        b"brob", b"JXL ", b"mmpu", b"etyp", b"otyp"])


def _walk_boxes(data: bytes, pos: int, hi: int, fmt: str) -> Candidate:
    i = pos
    boxes = 0
    while i + 8 <= hi:
        size, btype = struct.unpack_from(">I4s", data, i)
        if btype not in _TOP_BOXES and not (all(0x20 <= c <= 0x7E for c in btype) and 8 <= size <= hi - i):
            # not a box at all: the wrapper resumes here.  Any well-formed box (printable
            # type, size inside the data) still belongs to the file, as the engine sees it:
            # a vendor box after mdat (Samsung 'sefd') is metadata the engine removes.
            break
        if size == 1:
            if i + 16 > hi:
                return Candidate(pos, fmt, None, "a box is cut off")
            (size,) = struct.unpack_from(">Q", data, i + 8)
            if size < 16:
                return Candidate(pos, fmt, None, "a box size is corrupt")
        elif size == 0:  # "to the end of the file": only delimitable at the end of the data
            return Candidate(pos, fmt, hi) if boxes else Candidate(pos, fmt, None, "a box runs to the end")
        elif size < 8:
            return Candidate(pos, fmt, None, "a box size is corrupt")
        if i + size > hi:
            return Candidate(pos, fmt, None, "a box runs past the data")
        i += size
        boxes += 1
        if boxes > _MAX_SEGMENTS:
            return Candidate(pos, fmt, None, "too many boxes")
    return Candidate(pos, fmt, i)


def _probe_isobmff(data: bytes, at_ftyp: int, hi: int) -> Candidate | None:
    pos = at_ftyp - 4
    if pos < 0:
        return None
    (size,) = struct.unpack_from(">I", data, pos)
    if size < 16 or size > 4096 or pos + size > hi:
        return None
    kind = _isobmff_kind(data[pos:pos + size])
    if kind not in ("HEIC", "HEIF", "AVIF", "JXL", "CR3"):
        return None
    return _walk_boxes(data, pos, hi, kind)


def _probe_bmp(data: bytes, pos: int, hi: int) -> Candidate | None:
    if pos + 26 > hi:
        return None
    size, _reserved, offset, dib = struct.unpack_from("<IIII", data, pos + 2)
    if dib not in (12, 40, 52, 56, 64, 108, 124) or offset < 14 + dib:
        return None
    if size == 0:  # readers ignore bfSize: work the end out from the headers
        return _bmp_by_headers(data, pos, hi, offset, dib)
    if size < 14 + dib or offset > size:
        return None
    if pos + size > hi:
        return Candidate(pos, "BMP", None, "the BMP is cut off (file size past the data)")
    return Candidate(pos, "BMP", pos + size)


def _bmp_by_headers(data: bytes, pos: int, hi: int, offset: int, dib: int) -> Candidate | None:
    """The extent of a BMP whose file-size field is 0: pixel data, and a V5 profile."""
    if dib == 12 or pos + 14 + 40 > hi:
        return None
    width, height, planes, bpp, compression, image_size = struct.unpack_from("<iiHHII", data, pos + 18)
    if planes != 1 or bpp not in (1, 4, 8, 16, 24, 32) or width <= 0 or height == 0:
        return None
    if image_size == 0:
        if compression not in (0, 3, 6):  # only uncompressed rows have a size we can compute
            return Candidate(pos, "BMP", None, "a compressed BMP does not say where it ends")
        image_size = ((width * bpp + 31) // 32) * 4 * abs(height)
    end = offset + image_size
    if dib == 124 and pos + 14 + 124 <= hi:
        profile_at, profile_size = struct.unpack_from("<II", data, pos + 14 + 112)
        if profile_size:
            end = max(end, 14 + profile_at + profile_size)
    if pos + end > hi:
        return Candidate(pos, "BMP", None, "the BMP is cut off (its pixel data runs past the data)")
    return Candidate(pos, "BMP", pos + end)


# TIFF: the extent is the furthest byte any IFD, value or strip/tile points at.
_TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
               16: 8, 17: 8, 18: 8}
_TIFF_SUB_IFDS = frozenset([330, 34665, 34853, 40965])   # SubIFDs, Exif, GPS, Interop
_TIFF_BLOCKS = ((273, 279), (324, 325), (513, 514))        # strips, tiles, JPEG thumbnail
_MAX_IFDS = 256


def _probe_tiff(data: bytes, pos: int, hi: int) -> Candidate | None:
    head = data[pos:pos + 4]
    big = head[2:4] in (b"+\x00", b"\x00+")
    e = "<" if head[:2] == b"II" else ">"
    try:
        if big:
            if pos + 16 > hi or struct.unpack_from(e + "HH", data, pos + 4) != (8, 0):
                return None
            (first,) = struct.unpack_from(e + "Q", data, pos + 8)
        else:
            (first,) = struct.unpack_from(e + "I", data, pos + 4)
    except struct.error:
        return None
    end = _tiff_extent(data, pos, hi, e, big, first)
    if end is None:
        return None
    if end < 0:
        return Candidate(pos, "TIFF", None, "a TIFF offset points past the data")
    return Candidate(pos, "TIFF", end)


def _tiff_extent(data: bytes, pos: int, hi: int, e: str, big: bool, first: int) -> int | None:
    """End of the TIFF at `pos`; None if its first IFD is implausible, -1 if it runs past `hi`."""
    count_fmt, count_size = (e + "Q", 8) if big else (e + "H", 2)
    entry_size, off_fmt, inline = (20, e + "Q", 8) if big else (12, e + "I", 4)
    limit = hi - pos
    furthest = 16 if big else 8
    todo = [first]
    seen: set[int] = set()
    ifds = 0
    while todo:
        off = todo.pop()
        if off == 0 or off in seen:
            continue
        if off < 8 or off + count_size > limit:
            return None if ifds == 0 else -1
        seen.add(off)
        ifds += 1
        if ifds > _MAX_IFDS:
            return -1
        (n,) = struct.unpack_from(count_fmt, data, pos + off)
        table_end = off + count_size + n * entry_size
        if not 1 <= n <= 4000 or table_end + (8 if big else 4) > limit:
            return None if ifds == 1 else -1
        furthest = max(furthest, table_end + (8 if big else 4))
        values: dict[int, list[int]] = {}
        for k in range(n):
            at = pos + off + count_size + k * entry_size
            if big:
                tag, typ, cnt = struct.unpack_from(e + "HHQ", data, at)
            else:
                tag, typ, cnt = struct.unpack_from(e + "HHI", data, at)
            width = _TIFF_SIZES.get(typ)
            if width is None:  # a type no reader knows: its value cannot be located
                continue
            nbytes = width * cnt
            value_at = at + 4 + (8 if big else 4)
            if nbytes > inline:
                (voff,) = struct.unpack_from(off_fmt, data, value_at)
                if voff + nbytes > limit:
                    return -1
                furthest = max(furthest, voff + nbytes)
                vat = pos + voff
            else:
                vat = value_at
            if tag in _TIFF_SUB_IFDS or any(tag in pair for pair in _TIFF_BLOCKS):
                if typ in (3, 4, 13, 16) and cnt <= 100_000:
                    fmt = {3: "H", 4: "I", 13: "I", 16: "Q"}[typ]
                    values[tag] = list(struct.unpack_from(f"{e}{cnt}{fmt}", data, vat))
        for tag in _TIFF_SUB_IFDS:
            todo.extend(values.get(tag, ()))
        for off_tag, len_tag in _TIFF_BLOCKS:
            for o, n_ in zip(values.get(off_tag, ()), values.get(len_tag, ())):
                if o + n_ > limit:
                    return -1
                furthest = max(furthest, o + n_)
        (nxt,) = struct.unpack_from(off_fmt, data, pos + table_end)
        todo.append(nxt)
    return pos + furthest


def _probe_jxl_at(data: bytes, at_name: int, hi: int) -> Candidate | None:
    pos = at_name - 4  # the JXL signature box: 00 00 00 0C 'JXL ' 0D 0A 87 0A
    if pos < 0 or data[pos:pos + 12] != b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return None
    return _walk_boxes(data, pos, hi, "JXL")


#: One regex over every format's first bytes (about 2.5x faster than one bytes.find per
#: literal); the probe is chosen by the match's first byte.  The JXL literal starts at its
#: box name: a literal beginning with zeros would crawl through zero-filled bodies.
_HIT = re.compile(rb"\xff\xd8\xff|\x89PNG\r\n\x1a\n|GIF8[79]a|RIFF|ftyp|JXL \r\n|II[*+]\x00|MM\x00[*+]|BM")
_BY_FIRST = {0xFF: _probe_jpeg, 0x89: _probe_png, ord("G"): _probe_gif, ord("R"): _probe_webp,
             ord("f"): _probe_isobmff, ord("J"): _probe_jxl_at, ord("I"): _probe_tiff,
             ord("M"): _probe_tiff, ord("B"): _probe_bmp}
_MAX_LIT = 8


def _hits(data: bytes, lo: int, hi: int, deadline: float | None) -> Iterator[int]:
    """Positions of every format's first bytes in [lo, hi), in order, window by window."""
    a = lo
    while a < hi:
        check_deadline(deadline)
        b = min(hi, a + WINDOW)
        for m in _HIT.finditer(data, a, min(hi, b + _MAX_LIT - 1)):
            if m.start() >= b:
                break
            yield m.start()
        a = b


def candidates(data: bytes, lo: int = 0, hi: int | None = None, *,
               deadline: float | None = None, limit: int = 10_000) -> Iterator[Candidate]:
    """Plausible images in ``data[lo:hi]``, in order, not overlapping.

    After a delimited candidate the search resumes at its end (whatever is inside an
    image is the engine's business); after an undelimited one it stops, because the
    caller fails closed anyway.
    """
    hi = len(data) if hi is None else hi
    resume = lo
    found = 0
    for pos in _hits(data, lo, hi, deadline):
        if pos < resume:
            continue
        cand = _BY_FIRST[data[pos]](data, pos, hi)
        if cand is None:
            continue
        yield cand
        found += 1
        if cand.end is None or found >= limit:
            return
        resume = cand.end


def first_candidate(data: bytes, lo: int = 0, hi: int | None = None, *,
                    deadline: float | None = None) -> Candidate | None:
    return next(candidates(data, lo, hi, deadline=deadline), None)


#: Loose raw magic bytes (for bodies we could not parse or will not inspect, where
#: blocking on a weak sign is right).  WEBPVP8 and the JXL box name are checked for what
#: precedes them; no alternative starts with zeros (the regex would try every position).
_RAW_LOOSE = re.compile(rb"\xff\xd8\xff[\xc0-\xc3\xdb\xe0-\xef\xfe]|\x89PNG\r\n\x1a\n|GIF8[79]a|WEBPVP8"
                        rb"|ftyp(?:heic|heix|hevc|heim|heis|mif1|msf1|avif|avis)|JXL \r\n\x87\n")
_RAW_BEFORE = {ord("W"): (8, b"RIFF"), ord("J"): (4, b"\x00\x00\x00\x0c")}


def raw_signature(data: bytes, a: int = 0, b: int | None = None) -> str | None:
    """The format of the first loose raw image signature starting in ``data[a:b]``, else None."""
    b = len(data) if b is None else b
    for m in _RAW_LOOSE.finditer(data, a, min(len(data), b + 16)):
        i = m.start()
        if i >= b:
            return None
        rule = _RAW_BEFORE.get(data[i])
        if rule is not None and not (i >= rule[0] and data[i - rule[0]:i - rule[0] + len(rule[1])] == rule[1]):
            continue
        return _LOOSE_FORMAT[data[i]]
    return None


_LOOSE_FORMAT = {0xFF: "JPEG", 0x89: "PNG", ord("G"): "GIF", ord("W"): "WEBP", ord("f"): "HEIF",
                 ord("J"): "JXL"}
