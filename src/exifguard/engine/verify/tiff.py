"""Independent check of a cleaned TIFF (classic or BigTIFF).

Written apart from the walker on purpose.  It accepts the output only if:

* every reachable directory (page chain and SubIFDs) holds only rendering tags, in
  strictly ascending order, with no pointer to an Exif, GPS or Interop directory and
  no XMP/IPTC/Photoshop/maker-note/GeoTIFF tag;
* no page after the first is a reduced-resolution preview or thumbnail;
* Orientation appears only when allowed (and with a sane value), ICC only when allowed
  and only as a well-formed ICC profile;
* every byte that no kept structure references is zero (no stale or appended data);
* embedded JPEG streams carry nothing before the scan but exact-fitting tables and frame
  headers, a DAC only in an arithmetic frame, APP14 "Adobe" and all-zero APP15 padding.
"""

from __future__ import annotations

import struct

from ..errors import ScrubError
from ..report import ScrubOptions
from .._bytes import all_zero
from . import _icc

_RENDERING = frozenset([254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 277, 278, 279,
                        280, 281, 282, 283, 284, 290, 291, 296, 301, 317, 318, 319, 320, 321, 322,
                        323, 324, 325, 330, 332, 334, 336, 338, 339, 340, 341, 347,
                        529, 530, 531, 532])
_WIDTHS = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
           16: 8, 17: 8, 18: 8}
_INT_CODES = {1: "B", 3: "H", 4: "L", 13: "L", 16: "Q", 18: "Q"}
# largest value count per kept tag (default 1); sample-wise tags may hold SamplesPerPixel
_BIG = 1 << 62
_LIMITS = {273: _BIG, 279: _BIG, 324: _BIG, 325: _BIG, 330: _BIG, 347: _BIG, 34675: _BIG,
           291: 65536, 301: 3 * 65536, 320: 3 * 65536, 318: 2, 319: 6, 321: 2, 529: 3, 530: 2,
           532: 6, 336: 512}
_SAMPLE_WISE = {258, 280, 281, 338, 339, 340, 341, 519, 520, 521}
_MAX_DIRS = 10_000
_MAX_BLOCKS = 4_000_000


def _fail(why: str) -> None:
    raise ScrubError(why)


class _View:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        if len(buf) < 8 or buf[:2] not in (b"II", b"MM"):
            _fail("not a TIFF header")
        self.e = "<" if buf[:2] == b"II" else ">"
        version = struct.unpack_from(self.e + "H", buf, 2)[0]
        if version == 42:
            self.wide = False
            self.head, self.first = 8, struct.unpack_from(self.e + "L", buf, 4)[0]
            self.cfmt, self.ofmt, self.esize = "H", "L", 12
        elif version == 43 and len(buf) >= 16:
            self.wide = True
            self.head, self.first = 16, struct.unpack_from(self.e + "Q", buf, 8)[0]
            self.cfmt, self.ofmt, self.esize = "Q", "Q", 20
        else:
            _fail("unknown TIFF version")
        self.csize = struct.calcsize("<" + self.cfmt)
        self.osize = struct.calcsize("<" + self.ofmt)

    def get(self, fmt: str, at: int) -> tuple:
        full = self.e + fmt
        if at < 0 or at + struct.calcsize(full) > len(self.buf):
            _fail("a field points outside the file")
        return struct.unpack_from(full, self.buf, at)


def _directory(v: _View, at: int) -> tuple[dict[int, tuple[int, int, int, int]], int, int]:
    """tag -> (type, count, value position, byte size); next link; table length."""
    (n,) = v.get(v.cfmt, at)
    if n > 65535:
        _fail("a directory declares too many entries")
    tags: dict[int, tuple[int, int, int, int]] = {}
    last = -1
    for k in range(n):
        pos = at + v.csize + k * v.esize
        tag, typ = v.get("HH", pos)
        (cnt,) = v.get(v.ofmt, pos + 4)
        if tag <= last:
            _fail("directory tags are not in strictly ascending order")
        last = tag
        w = _WIDTHS.get(typ)
        if w is None:
            _fail(f"tag {tag} has an unknown type")
        nbytes = w * cnt
        where = pos + 4 + v.osize
        if nbytes > v.osize:
            (where,) = v.get(v.ofmt, where)
        if where + nbytes > len(v.buf):
            _fail(f"tag {tag} points outside the file")
        tags[tag] = (typ, cnt, where, nbytes)
    table_len = v.csize + n * v.esize + v.osize
    (nxt,) = v.get(v.ofmt, at + v.csize + n * v.esize)
    return tags, nxt, table_len


def _ints(v: _View, t: tuple[int, int, int, int]) -> tuple[int, ...]:
    typ, cnt, where, _ = t
    if typ not in _INT_CODES or cnt > _MAX_BLOCKS:
        _fail("an offset or count tag has an unusable type or size")
    return v.get(f"{cnt}{_INT_CODES[typ]}", where)


def _exact_fill(m: int, body: bytes) -> bool:
    """DQT/DHT/DRI/SOFn inside an embedded JPEG: their fields account for every byte."""
    n = len(body)
    if m == 0xDD:
        return n == 2
    if m == 0xDB:
        k = 0
        while k < n:
            if body[k] >> 4 > 1 or body[k] & 0x0F > 3:
                return False
            k += 129 if body[k] >> 4 else 65
        return k == n
    if m == 0xC4:
        k = 0
        while k + 17 <= n:
            if body[k] >> 4 > 1 or body[k] & 0x0F > 3:
                return False
            k += 17 + sum(body[k + 1:k + 17])
        return k == n
    return n >= 6 and n == 6 + 3 * body[5]


def _jpeg_clean(buf: bytes, a: int, b: int) -> None:
    if buf[a:a + 2] != b"\xff\xd8":
        return
    i = a + 2
    frame = 0
    for _ in range(4096):
        while i + 1 < b and buf[i] == 0xFF and buf[i + 1] == 0xFF:
            i += 1
        if i + 2 > b:
            return
        if buf[i] != 0xFF:
            _fail("embedded JPEG stream has a broken marker")
        m = buf[i + 1]
        if m == 0xD8 or m == 0x01 or 0xD0 <= m <= 0xD7:
            i += 2
            continue
        if m in (0xD9, 0xDA):
            return
        if i + 4 > b:
            _fail("embedded JPEG stream truncated")
        ln = int.from_bytes(buf[i + 2:i + 4], "big")
        payload = buf[i + 4:i + 2 + ln]
        if ln < 2 or i + 2 + ln > b:
            _fail("embedded JPEG segment overruns its strip")
        if m == 0xFE or 0xE0 <= m <= 0xEF:
            ok = (m == 0xEE and payload[:5] == b"Adobe") or (m == 0xEF and all_zero(payload))
            if not ok:
                _fail(f"embedded JPEG still has an APP{m - 0xE0 if m != 0xFE else 'COM'} segment")
        elif m in (0xC4, 0xDB, 0xDD) or (0xC0 <= m <= 0xCF and m not in (0xC8, 0xCC)):
            if not _exact_fill(m, payload):
                _fail(f"embedded JPEG segment 0xFF{m:02X} does not fill its length exactly")
            if 0xC0 <= m <= 0xCF and m != 0xC4:
                frame = m
        elif m == 0xCC:
            if frame not in (0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF) or len(payload) % 2 or len(payload) > 16:
                _fail("embedded JPEG has a DAC segment outside an arithmetic frame")
        else:
            _fail(f"embedded JPEG keeps marker 0xFF{m:02X} before its scan")
        i += 2 + ln
    _fail("embedded JPEG stream has too many segments")


def _curve_fits(tag: int, count: int, photometric: int | None, bits: int) -> bool:
    """ColorMap only in palette images, GrayResponseCurve only in greyscale ones, each
    (and TransferFunction) with exactly the table size 2^BitsPerSample gives it."""
    size = 2 ** min(bits, 16)
    if tag == 320:
        return photometric == 3 and count == 3 * size
    if tag == 291:
        return photometric in (0, 1) and count == size
    return count in (size, 3 * size)


def verify(clean: bytes, options: ScrubOptions) -> None:
    v = _View(clean)
    covered: list[tuple[int, int]] = [(0, v.head)]
    jpeg: list[tuple[int, int]] = []
    visited: set[int] = set()
    blocks = 0
    # work list of (offset, is_first_page, follow_chain)
    todo: list[tuple[int, bool, bool]] = [(v.first, True, True)]
    if v.first == 0:
        _fail("no image directory")
    while todo:
        at, first, chain = todo.pop()
        if at in visited:
            _fail("directory visited twice (loop)")
        visited.add(at)
        if len(visited) > _MAX_DIRS:
            _fail("too many directories")
        if at < v.head:
            _fail("directory overlaps the header")
        tags, nxt, table_len = _directory(v, at)
        covered.append((at, at + table_len))
        comp = _ints(v, tags[259])[0] if 259 in tags else 1
        spp = _ints(v, tags[277])[0] if 277 in tags else 1
        photometric = _ints(v, tags[262])[0] if 262 in tags else None
        bits = _ints(v, tags[258])[0] if 258 in tags else 1
        for tag, (typ, cnt, where, nbytes) in tags.items():
            allowed = tag in _RENDERING
            if tag == 274:
                value = _ints(v, tags[274])[0] if typ in (3, 4) and cnt == 1 else 0
                allowed = options.keep_orientation and 1 <= value <= 8
            elif tag == 34675:
                allowed = options.keep_icc
                if allowed:
                    _icc.check(bytes(clean[where:where + nbytes]), "TIFF ICC tag")
            elif 512 <= tag <= 521:
                allowed = comp == 6
            elif tag in (291, 301, 320):
                allowed = _curve_fits(tag, cnt, photometric, bits)
            if not allowed:
                _fail(f"tag {tag} is not a rendering tag")
            if cnt > _LIMITS.get(tag, 1) and not (tag in _SAMPLE_WISE and cnt <= spp):
                _fail(f"tag {tag} holds too many values for an image tag")
            if typ not in (1, 7) if tag in (347, 34675) else typ in (2, 7):
                _fail(f"tag {tag} has a type no rendering tag uses")
            if nbytes > v.osize:
                covered.append((where, where + nbytes))
        if not first:
            kind = _ints(v, tags[254])[0] if 254 in tags else 0
            if kind & 1 or (255 in tags and _ints(v, tags[255])[0] == 2):
                _fail("a reduced-resolution preview is still linked")
        pixels = False
        for o_tag, c_tag in ((273, 279), (324, 325), (513, 514)):
            if (o_tag in tags) != (c_tag in tags):
                _fail("image data offsets without byte counts")
            if o_tag not in tags:
                continue
            offs, lens = _ints(v, tags[o_tag]), _ints(v, tags[c_tag])
            if len(offs) != len(lens):
                _fail("strip/tile counts disagree")
            blocks += len(offs)
            if blocks > _MAX_BLOCKS:
                _fail("too many strips or tiles")
            for o, ln in zip(offs, lens):
                if o + ln > len(clean):
                    _fail("image data outside the file")
                if o_tag == 513 and clean[o:o + 3] != b"\xff\xd8\xff":
                    _fail("old-style JPEG interchange data is not a JPEG stream")
                if ln:
                    covered.append((o, o + ln))
                    pixels = True
                    if comp in (6, 7):
                        jpeg.append((o, o + ln))
        if comp == 6:
            for t in (519, 520, 521):
                if t in tags:
                    for o in _ints(v, tags[t]):
                        size = 64 if t == 519 else 16 + sum(clean[o:o + 16])
                        covered.append((o, o + size))
        if 347 in tags:
            _, _, where, nbytes = tags[347]
            jpeg.append((where, where + nbytes))
        if not pixels:
            _fail("an image directory has no image data")
        if 330 in tags:
            for sub in _ints(v, tags[330]):
                todo.append((sub, False, False))
        if chain and nxt:
            todo.append((nxt, False, True))
        elif not chain and nxt:
            _fail("a SubIFD has a chained directory")
    # every byte outside the referenced structures must be zero
    pos = 0
    for a, b in sorted(covered) + [(len(clean), len(clean))]:
        if not all_zero(clean, pos, a):
            _fail(f"non-zero bytes that nothing references at offset {pos}")
        pos = max(pos, b)
    for a, b in jpeg:
        _jpeg_clean(clean, a, b)
