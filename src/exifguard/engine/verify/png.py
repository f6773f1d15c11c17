"""Independent check of a scrubbed PNG (written apart from the walker, on purpose).

It re-reads the output from scratch and accepts only: the signature; IHDR first and
IEND last; chunks whose type is on the rendering allowlist (iCCP only when ICC is
kept, and then only as one zlib stream holding one well-formed ICC profile), with a
valid CRC and a plausible size, at most one of each kept ancillary type, all of them
before the image data (colour-space chunks before the palette), one unbroken run of IDAT, fcTL/fdAT only after an acTL;
`skIp` padding whose payload is all zeros; at most one `eXIf` that is a minimal TIFF holding nothing but Orientation
(the rest zero); and nothing but zero bytes after IEND.  Any doubt raises ScrubError.
"""

from __future__ import annotations

import zlib

from ..errors import ScrubError
from ..report import ScrubOptions
from .._bytes import all_zero, type_code
from . import _icc

_SIG = bytes((0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A))
_PADDING = b"skIp"
_ALLOWED = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"cICP",
            b"sBIT", b"acTL", b"fcTL", b"fdAT", b"pHYs", b"bKGD"}
_SIZE_RULES = {
    b"IHDR": lambda n: n == 13, b"IEND": lambda n: True, b"gAMA": lambda n: n == 4,
    b"cHRM": lambda n: n == 32, b"sRGB": lambda n: n == 1, b"cICP": lambda n: n == 4,
    b"sBIT": lambda n: 1 <= n <= 4, b"acTL": lambda n: n == 8, b"fcTL": lambda n: n == 26,
    b"pHYs": lambda n: n == 9, b"bKGD": lambda n: n in (1, 2, 6), b"tRNS": lambda n: 1 <= n <= 256,
    b"PLTE": lambda n: 0 < n <= 768 and n % 3 == 0,
}


def _be16(b: bytes, i: int) -> int:
    return (b[i] << 8) | b[i + 1]


def _be32(b: bytes, i: int) -> int:
    return int.from_bytes(b[i:i + 4], "big")


def _le16(b: bytes, i: int) -> int:
    return b[i] | (b[i + 1] << 8)


def _le32(b: bytes, i: int) -> int:
    return int.from_bytes(b[i:i + 4], "little")


def _check_exif(payload: bytes) -> None:
    """Accept only: TIFF header, IFD0 at 8 with 0 or 1 entry (Orientation SHORT x1,
    value 1..8), next-IFD 0, and zeros after that."""
    if len(payload) < 14:
        raise ScrubError("eXIf chunk is too small to be a valid TIFF")
    if payload[:4] == b"MM\x00\x2a":
        u16, u32 = _be16, _be32
    elif payload[:4] == b"II\x2a\x00":
        u16, u32 = _le16, _le32
    else:
        raise ScrubError("eXIf chunk does not hold a TIFF header")
    if u32(payload, 4) != 8:
        raise ScrubError("eXIf chunk's first directory is not where a minimal TIFF puts it")
    entries = u16(payload, 8)
    if entries > 1:
        raise ScrubError(f"eXIf chunk holds {entries} entries; only Orientation may remain")
    end = 10 + 12 * entries + 4
    if len(payload) < end:
        raise ScrubError("eXIf chunk is cut short")
    if entries == 1:
        tag, typ, count = u16(payload, 10), u16(payload, 12), u32(payload, 14)
        if (tag, typ, count) != (0x0112, 3, 1):
            raise ScrubError("eXIf chunk holds an entry other than Orientation")
        if not 1 <= u16(payload, 18) <= 8 or u16(payload, 20) != 0:
            raise ScrubError("eXIf Orientation value is invalid")
    if u32(payload, end - 4) != 0:
        raise ScrubError("eXIf chunk links to a further directory")
    if not all_zero(payload, end):
        raise ScrubError("eXIf chunk has data after its minimal TIFF")


class _Order:
    """Where the kept chunks stand: one PLTE/tRNS/iCCP/acTL, all before the image data;
    IDAT in one unbroken run; fcTL/fdAT only in a file an acTL declared animated."""

    # exact sizes per colour type; None: the chunk may not appear with that colour type
    _BY_COLOUR = {b"tRNS": (2, None, 6, None, None, None, None), b"bKGD": (2, None, 6, 1, 2, None, 6),
                  b"sBIT": (1, None, 3, 3, 2, None, 4)}

    # at most once, before the image data; the colour-space ones before the palette too
    _SINGLE = {b"PLTE", b"tRNS", b"iCCP", b"acTL", b"gAMA", b"cHRM", b"sRGB", b"cICP", b"sBIT",
               b"pHYs", b"bKGD"}
    _COLOUR_SPACE = {b"gAMA", b"cHRM", b"sRGB", b"cICP", b"sBIT", b"iCCP"}

    def __init__(self) -> None:
        self.colour = -1
        self.entries = 0
        self.counts: dict[bytes, int] = {}
        self.data_state = 0  # 0: no IDAT yet, 1: in the IDAT run, 2: after it
        self.animated = False

    def see(self, ctype: bytes) -> None:
        if ctype == b"IDAT":
            if self.data_state == 2:
                raise ScrubError("IDAT chunks are not contiguous")
            self.data_state = 1
        elif self.data_state == 1:
            self.data_state = 2

    def check(self, ctype: bytes) -> None:
        if ctype in self._SINGLE:
            self.counts[ctype] = self.counts.get(ctype, 0) + 1
            if self.counts[ctype] > 1:
                raise ScrubError(f"more than one {type_code(ctype)} chunk")
            if self.data_state:
                raise ScrubError(f"{type_code(ctype)} chunk after the image data")
            if ctype in self._COLOUR_SPACE and self.counts.get(b"PLTE"):
                raise ScrubError(f"{type_code(ctype)} chunk after the palette")
            if ctype == b"acTL":
                self.animated = True
        elif ctype in (b"fcTL", b"fdAT") and not self.animated:
            raise ScrubError(f"{type_code(ctype)} chunk in a PNG that declares no animation")
        if ctype == b"PLTE" and self.colour != 3:
            raise ScrubError("PLTE chunk in a PNG that is not palette-based")

    def sized(self, ctype: bytes, length: int) -> None:
        """tRNS, bKGD and sBIT must have the size the colour type gives them."""
        if ctype not in self._BY_COLOUR:
            return
        if ctype == b"tRNS" and self.colour == 3:
            ok = 1 <= length <= self.entries
        else:
            table = self._BY_COLOUR[ctype]
            want = table[self.colour] if 0 <= self.colour < len(table) else None
            ok = want is not None and want == length
        if not ok:
            raise ScrubError(f"{type_code(ctype)} chunk size does not fit the colour type")


def _check_iccp(payload: bytes, options: ScrubOptions) -> None:
    """Neutral keyword ("ICC Profile" cut or padded with "_"), NUL, method 0, and a zlib
    stream ending with the chunk that inflates, within the inflate limit, to one
    well-formed ICC profile."""
    nul = payload.find(b"\0")
    if not 1 <= nul <= 79 or nul + 1 >= len(payload) or payload[nul + 1] != 0:
        raise ScrubError("iCCP chunk header is malformed")
    want = (b"ICC Profile" + b"_" * 79)[:nul]
    if want.endswith(b" "):
        want = want[:-1] + b"_"
    if payload[:nul] != want:
        raise ScrubError("iCCP profile name is not the neutral one")
    z = zlib.decompressobj()
    try:
        blob = z.decompress(payload[nul + 2:], options.max_inflate_bytes)
    except zlib.error as exc:
        raise ScrubError("iCCP profile does not inflate") from exc
    if not z.eof or z.unused_data or z.unconsumed_tail:
        raise ScrubError("iCCP profile stream is cut short, too large or followed by data")
    _icc.check(blob, "iCCP")


def verify(clean: bytes, options: ScrubOptions) -> None:
    if clean[:8] != _SIG:
        raise ScrubError("output lacks the PNG signature")
    allowed = set(_ALLOWED)
    if options.keep_icc:
        allowed.add(b"iCCP")
    n = len(clean)
    pos = 8
    count = 0
    exif_seen = False
    order = _Order()
    while True:
        if count >= options.max_structures:
            raise ScrubError("too many chunks")
        if pos + 12 > n:
            raise ScrubError("no IEND chunk before the end of the output")
        length = _be32(clean, pos)
        ctype = clean[pos + 4:pos + 8]
        if length >= 1 << 31 or pos + 12 + length > n:
            raise ScrubError("a chunk length runs past the end of the output")
        payload = clean[pos + 8:pos + 8 + length]
        stored_crc = _be32(clean, pos + 8 + length)
        if zlib.crc32(ctype + payload) & 0xFFFFFFFF != stored_crc:
            raise ScrubError(f"chunk {type_code(ctype)} has a bad CRC")
        if count == 0 and ctype != b"IHDR":
            raise ScrubError("the first chunk is not IHDR")
        count += 1
        pos += 12 + length
        order.see(ctype)
        if ctype == b"IHDR" and length == 13:
            order.colour = payload[9]
        if ctype == b"PLTE":
            order.entries = length // 3
        if ctype in allowed:
            rule = _SIZE_RULES.get(ctype)
            if rule is not None and not rule(length):
                raise ScrubError(f"chunk {type_code(ctype)} has an unexpected size {length}")
            order.check(ctype)
            order.sized(ctype, length)
            if ctype == b"iCCP":
                _check_iccp(payload, options)
            if ctype == b"IEND":
                if not all_zero(payload):
                    raise ScrubError("IEND chunk carries data")
                break
            continue
        if ctype == _PADDING:
            if not all_zero(payload):
                raise ScrubError("a padding chunk has non-zero payload")
            continue
        if ctype == b"eXIf":
            if exif_seen:
                raise ScrubError("more than one eXIf chunk")
            exif_seen = True
            if not options.keep_orientation:
                raise ScrubError("eXIf chunk present although orientation was not to be kept")
            _check_exif(payload)
            continue
        raise ScrubError(f"chunk type {type_code(ctype)} is not allowed in clean output")
    if not all_zero(clean, pos):
        raise ScrubError("non-zero bytes after IEND")
