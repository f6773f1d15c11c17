"""WebP walker: keep the rendering chunks, neutralise everything else in place.

A WebP file is `RIFF <size> WEBP` followed by chunks (`fourcc`, little-endian
size, payload, one pad byte when the size is odd; the pad byte belongs to the
chunk).  Only the extended format (first chunk `VP8X`) may carry metadata; a
simple file is a single `VP8 ` or `VP8L` chunk and anything after it is ignored
by decoders, so we neutralise it.

Kept chunks must be what the VP8X flags declare: with the animation flag, one ANIM
and then ANMF frames (a still image chunk at the top level is neutralised); without
it, no ANIM/ANMF.  Each picture (a still file, or one ANMF frame) keeps one VP8/VP8L
chunk and, for lossy VP8 only, one ALPH before it; later image chunks and stray ALPH
are neutralised, two ALPH before one picture are refused.  ICCP is kept only once,
only when flagged, and only when it is a well-formed ICC profile (`engine.icc`).

In place (`preserve_length`), a removed chunk keeps its size and becomes `JUNK`
(the conventional RIFF filler, skipped by every reader) with an all-zero payload
and pad byte.  The RIFF size is unchanged and bytes past it are zero-filled.
In compact mode removed chunks are dropped and the RIFF and `ANMF` sizes are
recomputed.

Orientation survives only as a *fresh* minimal TIFF written over the first EXIF
chunk's payload (prefix such as `Exif\\0\\0` kept when it is that standard one),
so the original EXIF bytes are never copied.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

from .. import icc
from ..errors import ScrubError
from ..exif import find_tiff_header, minimal_tiff, read_tiff, valid_orientation
from ..report import Findings, ScrubOptions
from ..xmp import xmp_orientation, xmp_property_names
from ._splice import Splice
from .._bytes import all_zero, type_code

_IMAGE = (b"VP8 ", b"VP8L")
_ANMF_KEEP = frozenset({b"ALPH", b"VP8 ", b"VP8L"})
_ANIM_SIZE = 6  # background colour (4) + loop count (2)
_ANMF_HEADER = 16  # X, Y, width-1, height-1 (3 bytes each), duration (3), flags (1)
_EXIF_PREFIXES = (b"", b"Exif\0\0")

FLAG_ICC = 0x20
FLAG_ALPHA = 0x10
FLAG_EXIF = 0x08
FLAG_XMP = 0x04
FLAG_ANIM = 0x02


@dataclass(slots=True)
class _Chunk:
    fourcc: bytes
    offset: int  # of the chunk header in the input
    size: int  # declared payload size
    end: int  # offset after payload and pad byte

    @property
    def payload_at(self) -> int:
        return self.offset + 8

    @property
    def span(self) -> int:
        return self.end - self.offset


def _name(fourcc: bytes) -> str:
    """Printable chunk name for the report (letters, digits and spaces only, else hex)."""
    return type_code(fourcc).rstrip()


def _walk(data: bytes, start: int, stop: int, budget: list[int], where: str) -> list[_Chunk]:
    """Split data[start:stop] into chunks; every declared size must fit.

    `budget` is the number of chunks still allowed in the whole file (shared with the
    walks of ANMF frames), so a hostile file cannot make us build huge lists.
    """
    chunks: list[_Chunk] = []
    p = start
    while p < stop:
        budget[0] -= 1
        if budget[0] < 0:
            raise ScrubError(f"WebP: too many chunks in {where}")
        if p + 8 > stop:
            raise ScrubError(f"WebP: a chunk header in {where} is cut off at offset {p}")
        fourcc = data[p:p + 4]
        size = struct.unpack_from("<I", data, p + 4)[0]
        end = p + 8 + size + (size & 1)
        if p + 8 + size > stop:
            raise ScrubError(f"WebP: chunk '{_name(fourcc)}' at offset {p} declares {size} bytes, "
                             f"past the end of {where}")
        if end > stop:
            # odd-sized last chunk without its pad byte: tolerated only at the very end
            end = stop
        chunks.append(_Chunk(fourcc, p, size, end))
        p = end
    return chunks


def _exif_names(payload: bytes) -> tuple[tuple[str, ...], int | None, bool]:
    """(tag names, orientation value if tagged, orientation tag present)."""
    hdr = find_tiff_header(payload)
    if hdr < 0:
        return (), None, False
    summary = read_tiff(payload[hdr:])
    present = any(e.ifd == "IFD0" and e.tag == 0x0112 for e in summary.entries)
    return summary.names, summary.orientation, present


def _minimal_exif_payload(prefix: bytes, orientation: int, big_endian: bool, size: int) -> bytes:
    body = prefix + minimal_tiff(orientation, big_endian=big_endian)
    return body + bytes(size - len(body))


class _Writer:
    def __init__(self, data: bytes, options: ScrubOptions, findings: Findings,
                 budget: list[int]) -> None:
        self.data = data
        self.budget = budget
        self.options = options
        self.findings = findings
        # written only: every read is of `data` (the walk reads each chunk before editing it)
        self.out = Splice(data)
        # compact mode: list of (offset, span) input ranges to drop
        self.drops: list[tuple[int, int]] = []
        # compact mode: chunk offset -> new declared payload size
        self.resized: dict[int, int] = {}

    def junk(self, chunk: _Chunk, carrier: str | None, tags: tuple[str, ...] = ()) -> None:
        """Turn a chunk into zero `JUNK` (or drop it); report unless it already was neutral."""
        body = self.data[chunk.payload_at:chunk.end]
        already = chunk.fourcc == b"JUNK" and all_zero(body)
        if not already and carrier is not None:
            self.findings.remove(carrier, chunk.offset, chunk.span, tags, values=_values_for(self, chunk))
        self.out[chunk.offset:chunk.offset + 4] = b"JUNK"
        self.out[chunk.payload_at:chunk.end] = bytes(chunk.end - chunk.payload_at)
        if not self.options.preserve_length:
            self.drops.append((chunk.offset, chunk.span))

    def zero_pad(self, chunk: _Chunk) -> None:
        """The pad byte of a kept chunk carries nothing; make sure it is zero."""
        if chunk.end > chunk.payload_at + chunk.size:
            self.out[chunk.payload_at + chunk.size:chunk.end] = bytes(chunk.end - chunk.payload_at - chunk.size)


def scrub(data: bytes, options: ScrubOptions, findings: Findings) -> bytes:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ScrubError("WebP: missing RIFF/WEBP header")
    riff_size = struct.unpack_from("<I", data, 4)[0]
    riff_end = 8 + riff_size
    if riff_size < 4:
        raise ScrubError("WebP: RIFF size is too small to hold any chunk")
    if riff_end > len(data):
        raise ScrubError(f"WebP: RIFF size declares {riff_end} bytes but the data has only "
                         f"{len(data)} (truncated)")
    budget = [options.max_structures]
    chunks = _walk(data, 12, riff_end, budget, "the RIFF container")
    if not chunks:
        raise ScrubError("WebP: no chunks at all")
    w = _Writer(data, options, findings, budget)

    first = chunks[0]
    if first.fourcc in _IMAGE:
        _scrub_simple(w, chunks)
    elif first.fourcc == b"VP8X":
        _scrub_extended(w, chunks)
    else:
        raise ScrubError(f"WebP: first chunk is '{_name(first.fourcc)}', not VP8, VP8L or VP8X")

    # bytes past the RIFF size
    tail = data[riff_end:]
    if not all_zero(tail):
        findings.remove("data past RIFF size", riff_end, len(tail))
    w.out[riff_end:] = bytes(len(tail))
    if options.preserve_length:
        return w.out.build()
    return _compact(w, chunks, riff_end)


def _scrub_simple(w: _Writer, chunks: list[_Chunk]) -> None:
    w.zero_pad(chunks[0])
    for c in chunks[1:]:
        w.junk(c, _carrier(c.fourcc), _tags_for(w, c))


def _carrier(fourcc: bytes) -> str:
    if fourcc == b"EXIF":
        return "WebP EXIF"
    if fourcc[:3] == b"XMP":
        return "WebP XMP"
    return f"WebP {_name(fourcc)}"


def _tags_for(w: _Writer, c: _Chunk) -> tuple[str, ...]:
    payload = w.data[c.payload_at:c.payload_at + c.size]
    if c.fourcc == b"EXIF":
        return _exif_names(payload)[0]
    if c.fourcc[:3] == b"XMP":
        return tuple(xmp_property_names(payload))
    return ()


def _values_for(w: _Writer, c: _Chunk) -> tuple[tuple[str, str], ...]:
    """(tag, value) pairs, only when the caller asked for private values."""
    if not w.options.collect_values or c.fourcc != b"EXIF":
        return ()
    payload = w.data[c.payload_at:c.payload_at + c.size]
    hdr = find_tiff_header(payload)
    if hdr < 0:
        return ()
    return tuple((e.name, e.value) for e in read_tiff(payload[hdr:], collect_values=True).entries
                 if e.value is not None)


def _scrub_extended(w: _Writer, chunks: list[_Chunk]) -> None:
    opts = w.options
    vp8x = chunks[0]
    if vp8x.size < 10:
        raise ScrubError("WebP: VP8X chunk is shorter than its 10-byte header")
    has_image = False
    icc_flag = bool(w.data[vp8x.payload_at] & FLAG_ICC)
    icc_kept = False
    exif_kept = False

    # Decide where orientation goes: the EXIF tag wins when it is present at all (as in
    # readers), XMP tiff:Orientation only when EXIF does not say.
    orientation: int | None = None
    exif_says = False
    xmp_orient: int | None = None
    for c in chunks[1:]:
        payload = w.data[c.payload_at:c.payload_at + c.size]
        if c.fourcc == b"EXIF" and not exif_says:
            _, o, present = _exif_names(payload)
            if present:
                exif_says = True
                orientation = valid_orientation(o)
        elif c.fourcc[:3] == b"XMP" and xmp_orient is None:
            xmp_orient = valid_orientation(xmp_orientation(payload))
    if not exif_says:
        orientation = xmp_orient
    if not opts.keep_orientation:
        orientation = None

    animated = bool(w.data[vp8x.payload_at] & FLAG_ANIM)
    still_parts: list[_Chunk] = []  # ALPH/VP8/VP8L of a still image, judged together below
    anim_seen = False
    for c in chunks[1:]:
        payload = w.data[c.payload_at:c.payload_at + c.size]
        if c.fourcc in _ANMF_KEEP:
            if animated:  # an animation's pictures live in ANMF frames only
                w.junk(c, _carrier(c.fourcc), ("<still image chunk in an animation>",))
            else:
                still_parts.append(c)
        elif c.fourcc == b"ANIM":
            if not animated or anim_seen:
                w.junk(c, "WebP ANIM", ("<not animated>" if not animated else "<second copy>",))
                continue
            anim_seen = True
            if c.size > _ANIM_SIZE and any(payload[_ANIM_SIZE:]):
                # ANIM is background colour + loop count; anything after is a hiding place
                w.findings.remove("WebP ANIM extra data", c.payload_at + _ANIM_SIZE, c.size - _ANIM_SIZE)
                w.out[c.payload_at + _ANIM_SIZE:c.payload_at + c.size] = bytes(c.size - _ANIM_SIZE)
            w.zero_pad(c)
        elif c.fourcc == b"ANMF":
            if not anim_seen:  # frames without (or before) the ANIM header are no animation
                w.junk(c, "WebP ANMF", ("<not animated>",))
                continue
            has_image = _scrub_anmf(w, c) or has_image
            w.zero_pad(c)
        elif c.fourcc == b"ICCP" and opts.keep_icc and not icc_kept and icc_flag \
                and icc.problem(payload) is None:
            # kept only when the VP8X ICC flag says decoders use it (keeping an ICCP the
            # original did not flag, or setting the flag, would change how it renders) and
            # only when it is one well-formed ICC profile
            icc_kept = True
            w.findings.keep("colour profile", "WebP ICCP")
            w.zero_pad(c)
        elif c.fourcc == b"ICCP":
            w.junk(c, "ICC profile", ("ICC_Profile",))
        elif (c.fourcc == b"EXIF" or c.fourcc[:3] == b"XMP") and orientation and not exif_kept \
                and _place_orientation(w, c, payload, orientation):
            exif_kept = True
        else:
            w.junk(c, _carrier(c.fourcc), _tags_for(w, c))
    if still_parts:
        has_image = _image_parts(w, still_parts, "the file") or has_image

    if not has_image:
        raise ScrubError("WebP: no image data (no VP8, VP8L or ANMF frame)")
    # VP8X flags: keep alpha and animation as declared, reflect what is left, clear reserved bits
    flags = w.data[vp8x.payload_at]
    new_flags = flags & (FLAG_ALPHA | FLAG_ANIM)
    if icc_kept:
        new_flags |= FLAG_ICC
    if exif_kept:
        new_flags |= FLAG_EXIF
    w.out[vp8x.payload_at] = new_flags
    w.out[vp8x.payload_at + 1:vp8x.payload_at + 4] = b"\0\0\0"  # reserved
    if vp8x.size > 10:  # anything after the canvas size is not part of VP8X
        w.out[vp8x.payload_at + 10:vp8x.end] = bytes(vp8x.end - vp8x.payload_at - 10)
    w.zero_pad(vp8x)


def _place_orientation(w: _Writer, c: _Chunk, payload: bytes, orientation: int) -> bool:
    """Write a fresh minimal EXIF (Orientation only) over this chunk; False if it cannot hold it."""
    prefix = b""
    big_endian = True
    if c.fourcc == b"EXIF":
        hdr = find_tiff_header(payload)
        if hdr >= 0:
            if payload[:hdr] in _EXIF_PREFIXES:
                prefix = payload[:hdr]
            big_endian = payload[hdr:hdr + 2] == b"MM"
    size = c.size
    if not w.options.preserve_length:
        size = len(prefix) + len(minimal_tiff(orientation))
    if len(prefix) + len(minimal_tiff(orientation)) > c.size:
        return False
    new = _minimal_exif_payload(prefix, orientation, big_endian, size)
    if c.fourcc != b"EXIF" or payload != new + bytes(c.size - len(new)) \
            or any(w.data[c.payload_at + c.size:c.end]):
        # a removal unless it already was exactly our minimal block (idempotence):
        # every other tag and the rest of the bytes are gone
        w.findings.remove(_carrier(c.fourcc), c.offset, c.span,
                          tuple(t for t in _tags_for(w, c) if t != "Orientation"),
                          values=_values_for(w, c))
    w.findings.keep("orientation", f"{orientation} (minimal EXIF)")
    w.out[c.offset:c.offset + 4] = b"EXIF"
    w.out[c.payload_at:c.end] = new + bytes(c.end - c.payload_at - len(new))
    if not w.options.preserve_length and c.end - c.payload_at > len(new):
        w.drops.append((c.payload_at + len(new), c.end - c.payload_at - len(new)))
        w.resized[c.offset] = len(new)
    return True


def _image_parts(w: _Writer, parts: list[_Chunk], where: str) -> bool:
    """Keep one picture: the first VP8/VP8L chunk and, for a lossy VP8 only, one ALPH
    before it.  Later image chunks and an ALPH after the picture or beside a lossless
    VP8L are ignored by decoders, so they are neutralised; two ALPH chunks before the
    picture are refused (libwebp's decoders disagree on which one applies).

    `parts` are the ALPH/VP8/VP8L chunks of a still file's top level or of one ANMF
    frame, in order.  Returns whether a picture was found.
    """
    image: _Chunk | None = None
    alpha: _Chunk | None = None
    for c in parts:
        if c.fourcc in _IMAGE:
            if image is None:
                image = c
                w.zero_pad(c)
            else:
                w.junk(c, _carrier(c.fourcc), ("<second image>",))
        elif image is not None:
            w.junk(c, "WebP ALPH", ("<after the image>",))
        elif alpha is not None:
            raise ScrubError(f"WebP: two ALPH chunks for one image in {where}; decoders disagree "
                             "on which applies")
        else:
            alpha = c
    if alpha is not None:
        if image is not None and image.fourcc == b"VP8 ":
            w.findings.keep("transparency", "WebP ALPH")
            w.zero_pad(alpha)
        else:
            w.junk(alpha, "WebP ALPH", ("<no lossy image to apply to>",))
    return image is not None


def _scrub_anmf(w: _Writer, c: _Chunk) -> bool:
    """Walk an animation frame's sub-chunks; True if it holds image data."""
    if c.size < _ANMF_HEADER:
        raise ScrubError(f"WebP: ANMF frame at offset {c.offset} is shorter than its header")
    start = c.payload_at + _ANMF_HEADER
    subs = _walk(w.data, start, c.payload_at + c.size, w.budget, "an ANMF frame")
    parts = []
    for s in subs:
        if s.fourcc in _ANMF_KEEP:
            parts.append(s)
        else:
            w.junk(s, _carrier(s.fourcc), _tags_for(w, s))
    image = _image_parts(w, parts, f"the ANMF frame at offset {c.offset}")
    if not image:
        raise ScrubError(f"WebP: ANMF frame at offset {c.offset} has no image data")
    return True


def _compact(w: _Writer, chunks: list[_Chunk], riff_end: int) -> bytes:
    """Drop the neutralised ranges and fix the RIFF and ANMF sizes."""
    drops = sorted(w.drops)
    edited = memoryview(w.out.build())
    out = bytearray()
    pos = 0
    for off, span in drops:
        out += edited[pos:off]
        pos = off + span
    out += edited[pos:riff_end]

    starts = [off for off, _ in drops]
    acc = [0]
    for _, span in drops:
        acc.append(acc[-1] + span)

    def removed_before(x: int) -> int:
        # drops never straddle a chunk boundary, so "starts before x" means "ends by x"
        return acc[bisect.bisect_left(starts, x)]

    def removed_within(a: int, b: int) -> int:
        return acc[bisect.bisect_left(starts, b)] - acc[bisect.bisect_left(starts, a)]

    dropped = set(drops)
    for c in chunks:
        if (c.offset, c.span) in dropped:
            continue
        if c.offset in w.resized:
            new_size = w.resized[c.offset]
        else:
            shrink = removed_within(c.payload_at, c.payload_at + c.size)
            if not shrink:
                continue
            new_size = c.size - shrink  # an ANMF frame that lost sub-chunks
        at = c.offset - removed_before(c.offset)
        struct.pack_into("<I", out, at + 4, new_size)
    struct.pack_into("<I", out, 4, len(out) - 8)
    return bytes(out)
