"""Independent check of a cleaned WebP (written apart from the walker on purpose).

Accepts only: the RIFF/WEBP header; `VP8X` first with consistent flags and zero
reserved bits, or a single `VP8 `/`VP8L`; the rendering chunks the flags declare:
without the animation flag exactly one picture (`VP8L`, `VP8 `, or `ALPH` then `VP8 `)
and no `ANIM`/`ANMF`; with it one `ANIM` and then `ANMF` frames each holding exactly
one picture (plus zero `JUNK`) and no top-level image chunk; `ICCP` only when ICC is
kept, once, and only as a well-formed ICC profile; at most one `EXIF` chunk that holds nothing but a
minimal Orientation TIFF followed by zeros; `JUNK` chunks whose payload and pad
are all zero; only zeros past the RIFF size.
"""

from __future__ import annotations

import struct

from ..errors import ScrubError
from ..report import ScrubOptions
from .._bytes import all_zero
from . import _icc

_RENDER = {b"VP8 ", b"VP8L", b"ALPH", b"ANIM", b"ANMF"}
_FRAME_PARTS = {b"ALPH", b"VP8 ", b"VP8L"}


def _chunks(buf: bytes, lo: int, hi: int, limit: list[int]) -> list[tuple[bytes, int, int, bytes]]:
    """(fourcc, header offset, declared size, pad bytes) for each chunk in buf[lo:hi];
    `limit` holds how many chunks the whole file may still have."""
    found = []
    at = lo
    while at < hi:
        limit[0] -= 1
        if limit[0] < 0:
            raise ScrubError("too many chunks")
        if hi - at < 8:
            raise ScrubError(f"stray bytes at offset {at}")
        size = int.from_bytes(buf[at + 4:at + 8], "little")
        body_end = at + 8 + size
        if body_end > hi:
            raise ScrubError(f"chunk at offset {at} overruns its container")
        nxt = min(body_end + (size % 2), hi)
        found.append((buf[at:at + 4], at, size, buf[body_end:nxt]))
        at = nxt
    return found


def _minimal_tiffs() -> set[bytes]:
    out = set()
    for o in range(2, 9):
        for bo, magic in ((">", b"MM\0*"), ("<", b"II*\0")):
            out.add(magic + struct.pack(bo + "IHHHIHHI", 8, 1, 0x0112, 3, 1, o, 0, 0))
    return out


_ORIENTATION_TIFFS = _minimal_tiffs()


def _check_exif(payload: bytes) -> None:
    for prefix in (b"", b"Exif\0\0"):
        head = payload[len(prefix):len(prefix) + 26]
        if payload.startswith(prefix) and head in _ORIENTATION_TIFFS:
            if not all_zero(payload, len(prefix) + 26):
                raise ScrubError("EXIF chunk has bytes after the minimal Orientation block")
            return
    raise ScrubError("EXIF chunk is not a minimal Orientation-only block")


def _one_picture(parts: list[bytes], where: str) -> None:
    """One picture: exactly one VP8/VP8L, optionally preceded by one ALPH, and an ALPH
    only in front of a lossy VP8 (lossless VP8L carries its own alpha)."""
    if parts not in ([b"VP8 "], [b"VP8L"], [b"ALPH", b"VP8 "]):
        raise ScrubError(f"{where} does not hold exactly one picture (image chunk and optional ALPH)")


def verify(clean: bytes, options: ScrubOptions) -> None:
    if clean[:4] != b"RIFF" or clean[8:12] != b"WEBP" or len(clean) < 12:
        raise ScrubError("not a RIFF/WEBP file")
    end = 8 + int.from_bytes(clean[4:8], "little")
    if end > len(clean):
        raise ScrubError("RIFF size exceeds the data")
    if not all_zero(clean, end):
        raise ScrubError("non-zero bytes past the RIFF size")
    limit = [options.max_structures]
    top = _chunks(clean, 12, end, limit)
    if not top:
        raise ScrubError("no chunks")
    for _, at, _, pad in top:
        if any(pad):  # at most one byte
            raise ScrubError(f"non-zero pad byte after the chunk at offset {at}")

    kind = top[0][0]
    if kind in (b"VP8 ", b"VP8L"):
        for fourcc, at, size, _ in top[1:]:
            if fourcc != b"JUNK" or not all_zero(clean, at + 8, at + 8 + size):
                raise ScrubError("a simple WebP may hold nothing after its image but zero JUNK")
        return
    if kind != b"VP8X":
        raise ScrubError("first chunk is neither VP8X nor an image")
    _, vat, vsize, _ = top[0]
    if vsize < 10:
        raise ScrubError("VP8X too short")
    flags = clean[vat + 8]
    if flags & 0xC1 or any(clean[vat + 9:vat + 12]) or not all_zero(clean, vat + 18, vat + 8 + vsize):
        raise ScrubError("VP8X reserved bits are set")

    seen_exif = seen_icc = False
    animation = bool(flags & 0x02)
    anim_headers = 0
    still: list[bytes] = []
    for fourcc, at, size, _ in top[1:]:
        body = clean[at + 8:at + 8 + size]
        if fourcc in _RENDER:
            if fourcc in _FRAME_PARTS:
                if animation:
                    raise ScrubError(f"still image chunk at offset {at} in an animated WebP")
                still.append(fourcc)
            elif not animation:
                raise ScrubError(f"animation chunk at offset {at} in a WebP not flagged as animated")
            if fourcc == b"ANIM":
                anim_headers += 1
                if anim_headers > 1:
                    raise ScrubError("more than one ANIM chunk")
                if not all_zero(body, 6):
                    raise ScrubError(f"ANIM chunk at offset {at} carries data after its 6 bytes")
            if fourcc == b"ANMF":
                if size < 16 or not anim_headers:
                    raise ScrubError("ANMF frame too short or before the ANIM chunk")
                parts = []
                for sub, sat, ssize, spad in _chunks(clean, at + 24, at + 8 + size, limit):
                    if any(spad):  # at most one byte
                        raise ScrubError("non-zero pad byte inside ANMF")
                    if sub in _FRAME_PARTS:
                        parts.append(sub)
                        continue
                    if sub != b"JUNK" or not all_zero(clean, sat + 8, sat + 8 + ssize):
                        raise ScrubError(f"ANMF frame holds a non-image chunk at offset {sat}")
                _one_picture(parts, f"the ANMF frame at offset {at}")
        elif fourcc == b"JUNK":
            if not all_zero(body):
                raise ScrubError(f"JUNK chunk at offset {at} is not all zeros")
        elif fourcc == b"ICCP":
            if not options.keep_icc or seen_icc:
                raise ScrubError("ICCP chunk present although it should be gone")
            seen_icc = True
            _icc.check(body, "ICCP")
        elif fourcc == b"EXIF":
            if seen_exif or not options.keep_orientation:
                raise ScrubError("more than one EXIF chunk, or EXIF while orientation is not kept")
            seen_exif = True
            _check_exif(body)
        else:
            raise ScrubError(f"chunk type not allowed after scrub at offset {at}")
    if not animation:
        _one_picture(still, "the file")
    elif not anim_headers:
        raise ScrubError("animated WebP without an ANIM chunk")
    if bool(flags & 0x08) != seen_exif:
        raise ScrubError("VP8X EXIF flag disagrees with the chunks present")
    if bool(flags & 0x20) != seen_icc:
        raise ScrubError("VP8X ICC flag disagrees with the chunks present")
    if flags & 0x04:
        raise ScrubError("VP8X XMP flag is still set")
