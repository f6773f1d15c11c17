"""BMP walker: BMP has no metadata carriers, but a file can still say more than its pixels.

What can leak, and what we do (same length, in place):

* A BITMAPV5HEADER with a *linked* colour profile (`CSType = 'LINK'`) stores a local
  file **path** (often `C:\\Users\\<name>\\...`).  The path is zeroed and the header
  switched to sRGB with no profile.
* An embedded ICC profile (`'MBED'`) is kept (keep_icc, and only when it is a
  well-formed ICC profile, `engine.icc`) or neutralised the same way.
* Bytes no structure references (gaps before the pixel array, data appended after the
  image or after the profile) and the two reserved header words are zeroed, and so are
  V4/V5 header fields nothing reads in this file (calibration endpoints and gammas
  unless the colour space is calibrated RGB, profile offset/size without a profile,
  the V5 reserved word).
* BMPs that wrap a JPEG or PNG stream (compression 4/5) are refused: those streams have
  their own metadata and no viewer on the web renders them.

Compact mode returns the same bytes (the file stays valid and is never larger).
"""

from __future__ import annotations

import struct

from .. import icc
from ..errors import ScrubError
from ..report import Findings, ScrubOptions

_INFO_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}
LCS_SRGB = 0x73524742
PROFILE_LINKED = 0x4C494E4B
PROFILE_EMBEDDED = 0x4D424544


def layout(data: bytes) -> tuple[int, int, list[tuple[int, int]], tuple[int, int] | None, int]:
    """(dib header size, compression, kept spans, profile span or None, CSType)."""
    n = len(data)
    if n < 26 or data[:2] != b"BM":
        raise ScrubError("BMP: file is too short or has no BM signature")
    pix_off = struct.unpack_from("<I", data, 10)[0]
    hsize = struct.unpack_from("<I", data, 14)[0]
    if hsize not in _INFO_SIZES or 14 + hsize > n:
        raise ScrubError("BMP: unknown or truncated bitmap header")
    if hsize == 12:
        width, height, planes, bpp = struct.unpack_from("<HhHH", data, 18)
        compression, size_image, used = 0, 0, 0
        pal_entry = 3
    else:
        width, height, planes, bpp = struct.unpack_from("<iiHH", data, 18)
        compression = struct.unpack_from("<I", data, 30)[0] if hsize >= 20 else 0
        size_image = struct.unpack_from("<I", data, 34)[0] if hsize >= 24 else 0
        used = struct.unpack_from("<I", data, 46)[0] if hsize >= 40 else 0
        pal_entry = 4
    if width <= 0 or height == 0 or bpp not in (1, 2, 4, 8, 16, 24, 32) or planes != 1:
        raise ScrubError("BMP: image geometry is invalid")
    if compression in (4, 5):
        raise ScrubError("BMP: an embedded JPEG/PNG stream is not supported")
    if compression not in (0, 1, 2, 3, 6):
        raise ScrubError("BMP: unknown compression")
    end = 14 + hsize
    if hsize == 40 and compression in (3, 6):
        end += 12 if compression == 3 else 16  # bit masks follow a plain INFO header
    colours = used if used else (1 << bpp if bpp <= 8 else 0)
    if colours > 1 << 16:
        raise ScrubError("BMP: palette is too large")
    end += colours * pal_entry
    if end > pix_off or pix_off > n:
        raise ScrubError("BMP: pixel data offset is inconsistent with the headers")
    if compression in (1, 2):
        if size_image == 0:
            raise ScrubError("BMP: compressed image without a size")
        pix_len = size_image
    else:
        pix_len = ((bpp * width + 31) // 32) * 4 * abs(height)
    if pix_off + pix_len > n:
        raise ScrubError("BMP: pixel data is truncated")
    spans = [(0, 10), (10, end), (pix_off, pix_off + pix_len)]
    profile = None
    cstype = 0
    if hsize >= 108:
        cstype = struct.unpack_from("<I", data, 14 + 56)[0]
    if hsize == 124 and cstype in (PROFILE_LINKED, PROFILE_EMBEDDED):
        p_off, p_len = struct.unpack_from("<II", data, 14 + 112)
        start = 14 + p_off
        if p_len == 0 or start + p_len > n or start < end:
            raise ScrubError("BMP: colour profile lies outside the file")
        profile = (start, start + p_len)
        if start < pix_off + pix_len and pix_off < start + p_len:
            raise ScrubError("BMP: colour profile overlaps the pixel data")
    return hsize, compression, spans, profile, cstype


LCS_CALIBRATED_RGB = 0


def _unused_header_fields(hdr: bytes | bytearray, hsize: int) -> list[tuple[int, int]]:
    """Spans (file offsets) of V4/V5 header fields no decoder reads in this file: the
    calibration endpoints and gammas unless the colour space is LCS_CALIBRATED_RGB, the
    profile offset and size when there is no profile, and the V5 reserved word."""
    spans: list[tuple[int, int]] = []
    if hsize < 108:
        return spans
    cstype = struct.unpack_from("<I", hdr, 14 + 56)[0]
    if cstype != LCS_CALIBRATED_RGB:
        spans.append((14 + 60, 14 + 108))
    if hsize == 124:
        if cstype not in (PROFILE_LINKED, PROFILE_EMBEDDED):
            spans.append((14 + 112, 14 + 120))
        spans.append((14 + 120, 14 + 124))
    return spans


def _zero_unused_header_fields(out: bytearray, hsize: int, findings: Findings) -> None:
    """Free values in header fields nothing reads become zeros (pixels are unaffected)."""
    for a, b in _unused_header_fields(out, hsize):
        if any(out[a:b]):
            findings.remove("BMP unused header fields", a, b - a)
            out[a:b] = bytes(b - a)


def scrub(data: bytes, options: ScrubOptions, findings: Findings) -> bytes:
    """Zero a linked-profile path, stray bytes and reserved words; keep pixels as they are."""
    hsize, _, spans, profile, cstype = layout(data)
    out = bytearray(data)
    if any(out[6:10]):
        findings.remove("BMP reserved header fields", 6, 4)
        out[6:10] = bytes(4)
    if profile is not None:
        if cstype == PROFILE_EMBEDDED and options.keep_icc \
                and icc.problem(data[profile[0]:profile[1]]) is None:
            spans.append(profile)
            findings.keep("colour profile", "BMP embedded ICC profile")
        else:
            carrier = "BMP linked profile path" if cstype == PROFILE_LINKED else "BMP ICC profile"
            tags = ("ProfileFileName",) if cstype == PROFILE_LINKED else ()
            findings.remove(carrier, profile[0], profile[1] - profile[0], tags)
            struct.pack_into("<I", out, 14 + 56, LCS_SRGB)
            struct.pack_into("<II", out, 14 + 112, 0, 0)
    elif hsize >= 108 and cstype == PROFILE_LINKED:
        struct.pack_into("<I", out, 14 + 56, LCS_SRGB)
    _zero_unused_header_fields(out, hsize, findings)
    pos, stray, first = 0, 0, -1
    for a, b in sorted(spans) + [(len(out), len(out))]:
        if a > pos:
            gap = out[pos:a]
            nonzero = len(gap) - gap.count(0)
            if nonzero:
                stray += nonzero
                first = pos if first < 0 else first
                out[pos:a] = bytes(a - pos)
        pos = max(pos, b)
    if stray:
        findings.remove("BMP data outside the image", first, stray)
    return bytes(out)
