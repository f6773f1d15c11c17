"""Wrappers that hold images we clean in place, and the ones we cannot see into.

Why: an image cleaned inside a *stored* zip entry changes the bytes that entry's CRC-32
covers, so the CRC (in the local header, the data descriptor and the central directory)
must be recomputed or the archive is corrupt.  An image inside a *compressed* zip entry
or a FlateDecode PDF stream is invisible to a magic-byte search and cannot be rewritten
in place at all: those are reported so the policy blocks them (fail closed), never
forwarded with their metadata.

Only the structures needed for that are parsed; everything else about the wrapper is
left exactly as it was.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from ..engine.detect import sniff
from .embedded import WINDOW, check_deadline, find, first_candidate, raw_signature

_LOCAL = b"PK\x03\x04"
_CENTRAL = b"PK\x01\x02"
_DESCRIPTOR = b"PK\x07\x08"
_LOCAL_FMT = struct.Struct("<4sHHHHHIIIHH")      # 30 bytes
_CENTRAL_FMT = struct.Struct("<4sHHHHHHIIIHHHHHII")  # 46 bytes
_IMAGE_NAME = re.compile(rb"(?i)\.(jpe?g|jfif|png|apng|gif|webp|hei[cf]|avif|tiff?|dng|bmp|jxl|cr[23]|nef|arw)$")


@dataclass(frozen=True)
class ZipEntry:
    header: int                 # offset of the local file header
    data_start: int
    data_end: int | None        # None: size not declared in the local header
    method: int
    flags: int
    crc: int
    name: bytes


@dataclass(frozen=True)
class CentralRecord:
    at: int
    crc: int
    csize: int
    name: bytes


def _find_all(data: bytes, lit: bytes, lo: int, hi: int, deadline: float | None) -> Iterator[int]:
    a = lo
    while a < hi:
        check_deadline(deadline)
        b = min(hi, a + WINDOW)
        i = data.find(lit, a, min(hi, b + len(lit) - 1))
        while i >= 0:
            yield i
            i = data.find(lit, i + 1, min(hi, b + len(lit) - 1))
        a = b


def zip_entries(data: bytes, lo: int, hi: int, deadline: float | None = None) -> list[ZipEntry]:
    out = []
    for p in _find_all(data, _LOCAL, lo, hi, deadline):
        if p + 30 > hi:
            continue
        _sig, _ver, flags, method, _t, _d, crc, csize, _usize, nlen, xlen = _LOCAL_FMT.unpack_from(data, p)
        start = p + 30 + nlen + xlen
        if start > hi or method > 99:
            continue
        end: int | None = start + csize
        if (flags & 8 and csize == 0) or csize == 0xFFFFFFFF:
            end = None
        elif end > hi:
            end = None
        out.append(ZipEntry(p, start, end, method, flags, crc, data[p + 30:p + 30 + nlen]))
    return out


def central_records(data: bytes, lo: int, hi: int, deadline: float | None = None) -> list[CentralRecord]:
    out = []
    for p in _find_all(data, _CENTRAL, lo, hi, deadline):
        if p + 46 > hi:
            continue
        f = _CENTRAL_FMT.unpack_from(data, p)
        crc, csize, nlen = f[7], f[8], f[10]
        out.append(CentralRecord(p, crc, csize, data[p + 46:p + 46 + nlen]))
    return out


#: Inflated bytes inspected at most per compressed stream (the inspection limit of a
#: body): beyond it the stream is reported as not inspectable (a bomb, or too large).
INFLATE_CAP = 256 * 1024 * 1024
_IN_STEP = 256 * 1024
_OUT_STEP = 1 << 20


def inflated_image(data: bytes, start: int, end: int, wbits: int, deadline: float | None = None,
                   cap: int = INFLATE_CAP) -> tuple[str | None, str | None]:
    """Stream-inflate ``data[start:end]`` and look for an image anywhere in it.

    Returns (format, why): the format of an image found (why None), or (None, why) when
    the stream inflates past `cap` (it cannot be inspected), or (None, None) when it
    holds no image or is not a valid stream.  Memory stays at a few MiB whatever the
    ratio; zlib releases the GIL while it inflates.
    """
    d = zlib.decompressobj(wbits)
    src = memoryview(data)[start:end]
    pos = 0
    produced = 0
    tail = b""
    try:
        while True:
            check_deadline(deadline)
            if d.unconsumed_tail:
                piece = d.decompress(d.unconsumed_tail, _OUT_STEP)
            elif pos < len(src) and not d.eof:
                piece = d.decompress(src[pos:pos + _IN_STEP], _OUT_STEP)
                pos += _IN_STEP
            else:
                return None, None
            if piece:
                if produced == 0:
                    fmt = sniff(piece)
                    if fmt is not None:
                        return fmt, None
                produced += len(piece)
                window = tail + piece
                fmt = raw_signature(window)
                if fmt is None:
                    cand = first_candidate(window)
                    fmt = cand.format if cand is not None else None
                if fmt is not None:
                    return fmt, None
                tail = window[-64:]
                if produced > cap:
                    return None, f"it inflates to more than {cap} bytes and cannot be inspected"
            elif d.eof or (pos >= len(src) and not d.unconsumed_tail):
                return None, None
    except zlib.error:
        return None, None
    finally:
        src.release()


_GZIP = re.compile(rb"\x1f\x8b\x08[\x00-\x1f]")


@dataclass(frozen=True)
class Hidden:
    """An image we can see exists but cannot rewrite in place."""

    where: str
    format: str | None
    span: tuple[int, int]
    why: str


def hidden_images(data: bytes, lo: int, hi: int, deadline: float | None = None) -> list[Hidden]:
    """Images inside compressed zip entries and FlateDecode PDF streams in ``data[lo:hi]``."""
    out: list[Hidden] = []
    if find(data, _LOCAL, lo, hi, deadline) >= 0:
        centrals = {c.name: c for c in central_records(data, lo, hi, deadline)}
        for e in zip_entries(data, lo, hi, deadline):
            if e.method == 0 or e.flags & 1:  # stored (searched directly) or encrypted (unreadable)
                continue
            end = e.data_end
            if end is None and e.name in centrals:
                end = min(hi, e.data_start + centrals[e.name].csize)
            end = hi if end is None else end
            fmt, why = inflated_image(data, e.data_start, end, -15, deadline) if e.method == 8 else (None, None)
            if fmt is not None or why is not None or (e.method != 8 and _IMAGE_NAME.search(e.name)):
                out.append(Hidden("compressed zip entry", fmt, (e.header, end),
                                  f"an image inside a compressed zip entry cannot be cleaned in place"
                                  if why is None else f"a compressed zip entry: {why}"))
    if find(data, b"%PDF-", lo, hi, deadline) >= 0:
        for m in _find_all(data, b"stream", lo, hi, deadline):
            s = m + 6
            if data[s:s + 2] == b"\r\n":
                s += 2
            elif data[s:s + 1] in (b"\n", b"\r"):
                s += 1
            else:
                continue
            head = data[max(lo, m - 512):m]
            if b"/FlateDecode" not in head[head.rfind(b"<<"):] if b"<<" in head else True:
                continue
            fmt, why = inflated_image(data, s, hi, 15, deadline)
            if fmt is not None or why is not None:
                out.append(Hidden("FlateDecode PDF stream", fmt, (m, hi),
                                  "an image inside a compressed PDF stream cannot be cleaned in place"
                                  if why is None else f"a compressed PDF stream: {why}"))
    # gzip members anywhere (a .tar.gz or .gz upload, a gzip file in a multipart part)
    a = lo
    while a < hi:
        check_deadline(deadline)
        b = min(hi, a + WINDOW)
        for m in _GZIP.finditer(data, a, min(hi, b + 3)):
            if m.start() >= b:
                break
            head = _gzip_header_end(data, m.start(), hi)
            if head is None:
                continue
            fmt, why = inflated_image(data, head, hi, -15, deadline)
            if fmt is not None or why is not None:
                out.append(Hidden("gzip stream", fmt, (m.start(), hi),
                                  "an image inside a gzip stream cannot be cleaned in place"
                                  if why is None else f"a gzip stream: {why}"))
                return out
        a = b
    return out


def _gzip_header_end(data: bytes, at: int, hi: int) -> int | None:
    """Where the deflate data of a gzip member at `at` starts (RFC 1952), or None."""
    if at + 10 > hi:
        return None
    flags = data[at + 3]
    if data[at + 8] not in (0, 2, 4) or (data[at + 9] > 13 and data[at + 9] != 255):
        return None
    i = at + 10
    if flags & 4:  # FEXTRA
        if i + 2 > hi:
            return None
        i += 2 + (data[i] | data[i + 1] << 8)
    for bit in (8, 16):  # FNAME, FCOMMENT: zero-terminated
        if flags & bit:
            z = data.find(b"\x00", i, min(hi, i + 65536))
            if z < 0:
                return None
            i = z + 1
    if flags & 2:  # FHCRC
        i += 2
    return i if i < hi else None


def fix_zip_crcs(data: bytearray, changed: list[tuple[int, int]], lo: int, hi: int,
                 deadline: float | None = None) -> list[str]:
    """Recompute the CRC-32 of every stored zip entry whose data holds a changed span.

    `data` is the rewritten buffer (patched in place).  Returns reasons for spans that sit
    in an entry whose extent is unknown (nothing can be recomputed safely: block).
    """
    if not changed or find(data, _LOCAL, lo, hi, deadline) < 0:
        return []
    view = bytes(data)
    entries = [e for e in zip_entries(view, lo, hi, deadline) if e.method == 0]
    if not entries:
        return []
    centrals = central_records(view, lo, hi, deadline)
    by_name: dict[bytes, list[CentralRecord]] = {}
    for c in centrals:
        by_name.setdefault(c.name, []).append(c)
    entries = [_with_end(ent, by_name, hi) for ent in entries]
    problems: list[str] = []
    done: set[int] = set()
    for s, e in changed:
        owner = None
        for ent in entries:
            if ent.data_start <= s and (ent.data_end is None or e <= ent.data_end):
                if owner is None or ent.data_start > owner.data_start:
                    owner = ent
        if owner is None or owner.header in done:
            continue
        if owner.data_end is None:
            problems.append("an image was cleaned inside a zip entry whose size is not declared; "
                            "its CRC-32 cannot be recomputed")
            continue
        done.add(owner.header)
        crc = zlib.crc32(view[owner.data_start:owner.data_end]) & 0xFFFFFFFF
        packed = struct.pack("<I", crc)
        if not owner.flags & 8 or owner.crc != 0:
            data[owner.header + 14:owner.header + 18] = packed
        if owner.flags & 8:  # data descriptor after the data, with or without its signature
            d = owner.data_end + (4 if view[owner.data_end:owner.data_end + 4] == _DESCRIPTOR else 0)
            if d + 4 <= len(data):
                data[d:d + 4] = packed
        same = by_name.get(owner.name, [])
        if len(same) > 1:  # several entries of that name: the one whose old CRC matches
            old = owner.crc if not owner.flags & 8 else None
            same = [c for c in same if old is None or c.crc == old][:1]
        for c in same:
            data[c.at + 16:c.at + 20] = packed
    return problems


def _with_end(ent: ZipEntry, by_name: dict[bytes, list[CentralRecord]], hi: int) -> ZipEntry:
    """The entry with its data end taken from the central directory when the local header
    does not declare it (data descriptor)."""
    if ent.data_end is not None or len(by_name.get(ent.name, ())) != 1:
        return ent
    csize = by_name[ent.name][0].csize
    if csize == 0xFFFFFFFF or ent.data_start + csize > hi:
        return ent
    return ZipEntry(ent.header, ent.data_start, ent.data_start + csize, ent.method, ent.flags,
                    ent.crc, ent.name)


#: What a phone or an editor appends after an image's end (Samsung's SEFH..SEFT block with
#: capture times and the mobile country, Photoshop's AXS! tail with IPTC, a PNG's
#: aCropalypse tail ending in a second IEND), and raw Exif or XMP left behind the image's
#: declared end.  Searched right after an embedded image.
_TRAILER_MARKS = (b"SEFH", b"SEFT", b"Image_UTC_Data", b"MCC_Data", b"AXS!", b"IEND\xaeB`\x82",
                  b"MotionPhoto_Data", b"Exif\x00\x00", b"<x:xmpmeta", b"http://ns.adobe.com/xap/1.0/")
_TRAILER_REACH = 1 << 20
#: Brands of a video appended after a photo (Google/Samsung motion photos).
_VIDEO_FTYP = re.compile(rb"ftyp(?:mp4|isom|iso[2-9]|qt  |avc1|M4V )")


def stored_extents(data: bytes, lo: int, hi: int, deadline: float | None = None) -> dict[int, int]:
    """data start -> data end of every stored zip entry in ``data[lo:hi]`` whose size is known.

    Why: a file in a stored entry is delimited by the archive, trailer included, so the
    engine can clean the whole file (and zero its trailer) rather than stop at its EOI.
    """
    if find(data, _LOCAL, lo, hi, deadline) < 0:
        return {}
    by_name: dict[bytes, list[CentralRecord]] = {}
    for c in central_records(data, lo, hi, deadline):
        by_name.setdefault(c.name, []).append(c)
    out = {}
    for e in zip_entries(data, lo, hi, deadline):
        e = _with_end(e, by_name, hi)
        if e.method == 0 and e.data_end is not None and not e.flags & 1:
            out[e.data_start] = e.data_end
    return out


def trailer_after(data: bytes, end: int, hi: int) -> str | None:
    """Why the bytes right after an image that ends at `end` look like its trailer, or None.

    The engine zero-fills everything after an image's end when the image is a whole file;
    inside a wrapper we cannot tell where the image's own tail stops and the wrapper
    resumes, so a tail that looks like a known metadata trailer must block.
    """
    if _VIDEO_FTYP.match(data, end + 4, min(hi, end + 16)):
        return "a video (motion photo) follows the image"
    stop = min(hi, end + _TRAILER_REACH)
    following = first_candidate(data, end, stop)  # the next image is not this one's tail
    if following is not None:
        stop = following.start
    for mark in _TRAILER_MARKS:
        if data.find(mark, end, stop) >= 0:
            return "a metadata trailer follows the image"
    return None
