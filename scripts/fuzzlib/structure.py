"""Cheap, forgiving container parsers that tell the mutators *where* structure sits.

Why our own and not the engine's walkers: a fuzzer must not trust the code it tests, and it
must keep going on inputs the engine refuses (a half-broken seed still has segments worth
mutating).  Each parser returns `Region`s: one per segment/chunk/box/IFD entry/GIF block,
with where its type bytes and its length field are, so a mutation can change exactly a
length, a type, or cut/duplicate/move a whole structure.  Parsers stop quietly at the
first thing they cannot follow; they never raise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAX_REGIONS = 4000


@dataclass
class Region:
    """One structure in the buffer: bytes [start, end) including its header."""

    start: int
    end: int
    kind: str
    type_at: int | None = None
    type_len: int = 0
    len_at: int | None = None
    len_size: int = 0
    big_endian: bool = True
    len_adjust: int = 0
    """value of the length field = (end - start) - len_adjust."""
    level: int = 0
    extra: dict = field(default_factory=dict)
    """Format-specific mutation points, e.g. TIFF entry count/offset fields: name -> (at, size)."""


def sniff_kind(data: bytes) -> str | None:
    """Which parser fits (magic bytes only; mirrors the engine's table loosely on purpose)."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if data[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "JXL"
    if data[:2] == b"\xff\x0a":
        return "JXLCS"
    if data[4:8] == b"ftyp":
        return "ISOBMFF"
    if data[:2] == b"BM":
        return "BMP"
    return None


def parse(data: bytes) -> list[Region]:
    kind = sniff_kind(data)
    try:
        if kind == "JPEG":
            return jpeg(data)
        if kind == "PNG":
            return png(data)
        if kind == "GIF":
            return gif(data)
        if kind == "WEBP":
            return riff(data)
        if kind == "TIFF":
            return tiff(data, 0)
        if kind in ("JXL", "ISOBMFF"):
            return boxes(data, 0, len(data), 0)
        if kind == "BMP":
            return bmp(data)
        if kind == "JXLCS":  # a bare codestream is all image data (the engine keeps it whole)
            return [Region(0, len(data), "jxlc")]
    except (IndexError, struct.error, ValueError, RecursionError):
        pass
    return []


# -- JPEG -----------------------------------------------------------------------------------

_STANDALONE = set(range(0xD0, 0xD8)) | {0x01, 0xD8, 0xD9}


def jpeg(data: bytes) -> list[Region]:
    out: list[Region] = [Region(0, 2, "SOI", 1, 1)]
    i, n = 2, len(data)
    while i + 4 <= n and len(out) < MAX_REGIONS:
        if data[i] != 0xFF:
            break
        m = data[i + 1]
        if m == 0xFF:
            i += 1
            continue
        if m in _STANDALONE:
            out.append(Region(i, i + 2, f"FF{m:02X}", i + 1, 1))
            i += 2
            if m == 0xD9:
                if i < n:
                    out.append(Region(i, n, "trailer"))
                break
            continue
        seg_len = struct.unpack_from(">H", data, i + 2)[0]
        end = min(n, i + 2 + seg_len)
        r = Region(i, end, f"FF{m:02X}", i + 1, 1, i + 2, 2, True, 2)
        out.append(r)
        payload = i + 4
        if m == 0xE1 and data[payload:payload + 6] == b"Exif\0\0":
            for c in tiff(data, payload + 6, limit=end):
                c.level += 1
                out.append(c)
        i = end
        if m == 0xDA:  # entropy-coded data up to the next non-RST marker
            j = i
            while True:
                j = data.find(b"\xff", j)
                if j < 0 or j + 1 >= n:
                    j = n
                    break
                if data[j + 1] == 0 or 0xD0 <= data[j + 1] <= 0xD7 or data[j + 1] == 0xFF:
                    j += 1
                    continue
                break
            out.append(Region(i, j, "scan"))
            i = j
    return out


# -- PNG ------------------------------------------------------------------------------------

def png(data: bytes) -> list[Region]:
    out: list[Region] = []
    i, n = 8, len(data)
    while i + 12 <= n and len(out) < MAX_REGIONS:
        ln = struct.unpack_from(">I", data, i)[0]
        end = min(n, i + 12 + ln)
        ctype = data[i + 4:i + 8]
        out.append(Region(i, end, ctype.decode("latin-1"), i + 4, 4, i, 4, True, 12))
        i = end
        if ctype == b"IEND":
            if i < n:
                out.append(Region(i, n, "trailer"))
            break
    return out


# -- RIFF / WebP ----------------------------------------------------------------------------

def riff(data: bytes) -> list[Region]:
    out: list[Region] = [Region(0, len(data), "RIFF", 0, 4, 4, 4, False, 8)]
    _riff_chunks(data, 12, min(len(data), 8 + struct.unpack_from("<I", data, 4)[0]), 1, out)
    return out


def _riff_chunks(data: bytes, i: int, stop: int, level: int, out: list[Region]) -> None:
    while i + 8 <= stop and len(out) < MAX_REGIONS:
        ln = struct.unpack_from("<I", data, i + 4)[0]
        pad = ln & 1
        end = min(stop, i + 8 + ln + pad)
        fourcc = data[i:i + 4]
        out.append(Region(i, end, fourcc.decode("latin-1"), i, 4, i + 4, 4, False, 8 + pad, level))
        if fourcc == b"ANMF" and level < 3:
            _riff_chunks(data, i + 8 + 16, end, level + 1, out)
        i = end


# -- ISOBMFF (HEIF/AVIF/JXL container) ------------------------------------------------------

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"iprp", b"ipco", b"edts",
               b"udta", b"jumb", b"grpl", b"mvex", b"moof", b"traf", b"meco", b"strk"}
_FULL_CONTAINERS = {b"meta": 4, b"iinf": 6, b"iref": 4, b"dref": 8, b"stsd": 8}


def boxes(data: bytes, i: int, stop: int, level: int, out: list[Region] | None = None) -> list[Region]:
    out = [] if out is None else out
    while i + 8 <= stop and len(out) < MAX_REGIONS and level < 12:
        size = struct.unpack_from(">I", data, i)[0]
        btype = data[i + 4:i + 8]
        hdr = 8
        if size == 1 and i + 16 <= stop:
            size = struct.unpack_from(">Q", data, i + 8)[0]
            hdr = 16
            r = Region(i, min(stop, i + size), btype.decode("latin-1"), i + 4, 4, i + 8, 8, True, 0, level)
        elif size == 0:
            size = stop - i
            r = Region(i, stop, btype.decode("latin-1"), i + 4, 4, i, 4, True, 0, level)
        else:
            r = Region(i, min(stop, i + size), btype.decode("latin-1"), i + 4, 4, i, 4, True, 0, level)
        if size < hdr:
            break
        out.append(r)
        end = r.end
        if btype in _CONTAINERS:
            boxes(data, i + hdr, end, level + 1, out)
        elif btype in _FULL_CONTAINERS:
            skip = _FULL_CONTAINERS[btype]
            if btype == b"iinf" and i + hdr < end and data[i + hdr] != 0:
                skip = 8
            boxes(data, i + hdr + skip, end, level + 1, out)
        elif btype == b"infe" and i + hdr + 4 <= end:
            r.extra["item_type"] = (i + hdr + 8, 4) if data[i + hdr] >= 2 else (i + hdr + 4, 2)
        elif btype == b"iloc" and i + hdr + 8 <= end:
            r.extra["iloc_fields"] = (i + hdr + 4, min(64, end - i - hdr - 4))
        i = end
    return out


# -- TIFF -----------------------------------------------------------------------------------

_SUB_IFDS = {0x8769, 0x8825, 0xA005, 0x014A}


def tiff(data: bytes, base: int, limit: int | None = None) -> list[Region]:
    """IFDs and entries of a classic or Big TIFF whose header sits at `base`."""
    stop = len(data) if limit is None else min(limit, len(data))
    if base + 8 > stop:
        return []
    bo = data[base:base + 2]
    if bo == b"II":
        e = "<"
    elif bo == b"MM":
        e = ">"
    else:
        return []
    magic = struct.unpack_from(e + "H", data, base + 2)[0]
    big = magic == 43
    out: list[Region] = [Region(base, base + (16 if big else 8), "TIFF header", level=0,
                                extra={"first_ifd": (base + (8 if big else 4), 8 if big else 4)})]
    first = (struct.unpack_from(e + "Q", data, base + 8)[0] if big
             else struct.unpack_from(e + "I", data, base + 4)[0])
    todo = [first]
    seen: set[int] = set()
    esize, csize, osize = (20, 8, 8) if big else (12, 4, 4)
    while todo and len(out) < MAX_REGIONS and len(seen) < 64:
        off = todo.pop()
        at = base + off
        if off == 0 or off in seen or at + 2 > stop:
            continue
        seen.add(off)
        count = struct.unpack_from(e + ("Q" if big else "H"), data, at)[0]
        cnt_size = 8 if big else 2
        count = min(count, (stop - at - cnt_size) // esize, 500)
        end = at + cnt_size + count * esize + osize
        out.append(Region(at, min(end, stop), "IFD", level=1, extra={
            "count": (at, cnt_size), "next": (at + cnt_size + count * esize, osize)}))
        vals: dict[int, list[int]] = {}
        for k in range(count):
            p = at + cnt_size + k * esize
            tag, typ = struct.unpack_from(e + "HH", data, p)
            if tag in (0x0111, 0x0117, 0x0144, 0x0145) and typ in (3, 4, 16):
                vals[tag] = _tiff_ints(data, base, p + 4, e, typ, big, stop)
            out.append(Region(p, p + esize, f"tag{tag:04X}", level=2, big_endian=e == ">", extra={
                "tag": (p, 2), "type": (p + 2, 2), "count": (p + 4, csize), "value": (p + 4 + csize, osize)}))
            if tag in _SUB_IFDS:
                v = struct.unpack_from(e + ("Q" if big else "I"), data, p + 4 + csize)[0]
                todo.append(v)
        for offs_tag, cnt_tag in ((0x0111, 0x0117), (0x0144, 0x0145)):
            for o, c in list(zip(vals.get(offs_tag, []), vals.get(cnt_tag, [])))[:64]:
                if 0 < c and base + o < stop:
                    out.append(Region(base + o, min(stop, base + o + c), "pixels", level=3))
        if end + 0 <= stop:
            nxt = struct.unpack_from(e + ("Q" if big else "I"), data, end - osize)[0]
            todo.append(nxt)
    return out


def _tiff_ints(data: bytes, base: int, p: int, e: str, typ: int, big: bool, stop: int) -> list[int]:
    """Values of a SHORT/LONG/LONG8 entry whose count field sits at `p` (at most 64)."""
    count = struct.unpack_from(e + ("Q" if big else "I"), data, p)[0]
    unit = {3: 2, 4: 4, 16: 8}[typ]
    fmt = {3: "H", 4: "I", 16: "Q"}[typ]
    n = min(count, 64)
    field_at = p + (8 if big else 4)
    inline = count * unit <= (8 if big else 4)
    at = field_at if inline else base + struct.unpack_from(e + ("Q" if big else "I"), data, field_at)[0]
    if at + n * unit > stop:
        return []
    return list(struct.unpack_from(f"{e}{n}{fmt}", data, at))


# -- GIF ------------------------------------------------------------------------------------

def gif(data: bytes) -> list[Region]:
    n = len(data)
    out: list[Region] = [Region(0, 13, "header")]
    flags = data[10]
    i = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
    if i > 13:
        out.append(Region(13, min(i, n), "palette"))
    while i < n and len(out) < MAX_REGIONS:
        b = data[i]
        start = i
        if b == 0x3B:
            out.append(Region(i, i + 1, "trailer", i, 1))
            if i + 1 < n:
                out.append(Region(i + 1, n, "after-trailer"))
            break
        if b == 0x21:
            kind = f"ext{data[i + 1]:02X}"
            i += 2
        elif b == 0x2C:
            kind = "image"
            lf = data[i + 9]
            i += 10 + (3 * (2 << (lf & 7)) if lf & 0x80 else 0) + 1
        else:
            break
        subs = []
        while i < n and len(subs) < 10000:
            ln = data[i]
            subs.append(i)
            i += 1 + ln
            if ln == 0:
                break
        r = Region(start, min(i, n), kind, start, 2 if b == 0x21 else 1, level=0)
        r.extra["subblocks"] = subs
        out.append(r)
    return out


# -- BMP ------------------------------------------------------------------------------------

def bmp(data: bytes) -> list[Region]:
    if len(data) < 54:
        return []
    hsize = struct.unpack_from("<I", data, 14)[0]
    out = [Region(0, 14, "file header", None, 0, 2, 4, False, 0, extra={"pixels": (10, 4)}),
           Region(14, min(len(data), 14 + hsize), "info header", None, 0, 14, 4, False, 0)]
    pix = struct.unpack_from("<I", data, 10)[0]
    if 14 + hsize <= pix < len(data):
        out.append(Region(pix, len(data), "pixels"))
    if hsize >= 124 and len(data) >= 14 + 124:
        out[1].extra["profile"] = (14 + 112, 8)
        out[1].extra["cstype"] = (14 + 56, 4)
    return out
