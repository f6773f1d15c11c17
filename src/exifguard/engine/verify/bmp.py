"""Independent check of a cleaned BMP: no linked profile path, no embedded JPEG/PNG,
zero reserved words, and nothing but zeros outside header, masks, palette, pixel array
and (when allowed) an embedded ICC profile that is a well-formed ICC profile."""

from __future__ import annotations

from ..errors import ScrubError
from ..report import ScrubOptions
from .._bytes import all_zero
from . import _icc


def _u32(b: bytes, at: int) -> int:
    if at + 4 > len(b):
        raise ScrubError("BMP header truncated")
    return int.from_bytes(b[at:at + 4], "little")


def verify(clean: bytes, options: ScrubOptions) -> None:
    if clean[:2] != b"BM" or len(clean) < 30:
        raise ScrubError("not a BMP")
    if clean[6:10] != bytes(4):
        raise ScrubError("reserved header words are not zero")
    dib = _u32(clean, 14)
    if dib == 12:
        w = int.from_bytes(clean[18:20], "little")
        h = int.from_bytes(clean[20:22], "little", signed=True)
        bpp = int.from_bytes(clean[24:26], "little")
        comp, sizeimg, used, entry = 0, 0, 0, 3
    elif dib in (16, 40, 52, 56, 64, 108, 124):
        w = int.from_bytes(clean[18:22], "little", signed=True)
        h = int.from_bytes(clean[22:26], "little", signed=True)
        bpp = int.from_bytes(clean[28:30], "little")
        comp = _u32(clean, 30) if dib >= 20 else 0
        sizeimg = _u32(clean, 34) if dib >= 24 else 0
        used = _u32(clean, 46) if dib >= 40 else 0
        entry = 4
    else:
        raise ScrubError("unknown BMP header")
    if comp not in (0, 1, 2, 3, 6):
        raise ScrubError("BMP compression not allowed (embedded JPEG/PNG or unknown)")
    if w <= 0 or h == 0 or bpp == 0 or bpp > 32:
        raise ScrubError("BMP geometry invalid")
    table_end = 14 + dib + (12 if (dib == 40 and comp == 3) else 16 if (dib == 40 and comp == 6) else 0)
    ncol = used or (2 ** bpp if bpp <= 8 else 0)
    table_end += ncol * entry
    start = _u32(clean, 10)
    length = sizeimg if comp in (1, 2) else (w * bpp + 31) // 32 * 4 * abs(h)
    if table_end > start or start + length > len(clean):
        raise ScrubError("BMP layout inconsistent")
    regions = [(0, table_end), (start, start + length)]
    if dib >= 108:
        cs = clean[14 + 56:14 + 60][::-1]
        if cs != b"\0\0\0\0" and not all_zero(clean, 14 + 60, 14 + 108):
            raise ScrubError("BMP calibration fields are set although the colour space is not calibrated")
        if dib == 124 and (not all_zero(clean, 14 + 120, 14 + 124)
                           or (cs not in (b"LINK", b"MBED") and not all_zero(clean, 14 + 112, 14 + 120))):
            raise ScrubError("BMP header holds values in fields nothing reads")
        if cs == b"LINK":
            raise ScrubError("BMP still links a colour profile by file path")
        if dib == 124 and cs == b"MBED":
            if not options.keep_icc:
                raise ScrubError("BMP ICC profile present though keep_icc is off")
            off, size = _u32(clean, 14 + 112), _u32(clean, 14 + 116)
            if 14 + off + size > len(clean):
                raise ScrubError("BMP ICC profile lies outside the file")
            _icc.check(bytes(clean[14 + off:14 + off + size]), "BMP")
            regions.append((14 + off, 14 + off + size))
    at = 0
    for a, b in sorted(regions):
        if not all_zero(clean, at, a):
            raise ScrubError(f"BMP has non-zero bytes outside the image at {at}")
        at = max(at, b)
    if not all_zero(clean, at):
        raise ScrubError("BMP has data after the image")
