"""GIF walker: keep the blocks that draw the image, neutralise every other extension.

A GIF is a header, a Logical Screen Descriptor (+ global colour table), then a
sequence of blocks: image descriptors (`2C`, + local colour table, LZW code size
and data sub-blocks), extensions (`21 <label>` + data sub-blocks + `00`) and
finally the trailer `3B`.

Kept: image descriptors and their data, the Graphic Control Extension (`21 F9`),
the looping application extensions `NETSCAPE2.0` / `ANIMEXTS1.0` (their loop
sub-block only; other sub-block payloads are zeroed), the first `ICCRGBG1012` when
ICC is kept and its sub-blocks hold one well-formed ICC profile (`engine.icc`), and
the trailer.

Everything else (comments, XMP, plain text, other application extensions,
unknown labels) is rewritten in place as *neutral padding* of exactly the same
length.  Raw zeros cannot be used because a decoder would read them as sub-block
lengths, so the span from `21` to its terminating `00` becomes:

* an Application Extension with an all-zero 11-byte identifier and zero-filled
  sub-blocks (`21 FF 0B` + 11 x `00` + sub-blocks + `00`) when the span is 15
  bytes or at least 17 bytes;
* otherwise (a span of 3, 5..14 or 16 bytes; 4 cannot occur) a Comment
  Extension with zero-filled sub-blocks (`21 FE` + sub-blocks + `00`).  Every
  decoder knows and ignores comments; the only trace is that readers such as
  ExifTool may show a comment made of NUL characters.

Both are recognised on a second pass as already neutral, so scrubbing is idempotent.
Bytes after the trailer are zero-filled (or dropped in compact mode).
"""

from __future__ import annotations

from .. import icc
from ..errors import ScrubError
from ..report import Findings, ScrubOptions
from ..xmp import xmp_property_names
from ._splice import Splice
from .._bytes import all_zero

_LOOPING = (b"NETSCAPE2.0", b"ANIMEXTS1.0")
_ICC = b"ICCRGBG1012"
_XMP = b"XMP DataXMP"
_PAD_ID = bytes(11)
APP_PAD_MIN = 15  # 21 FF 0B + 11-byte identifier + 00


def _sub_blocks_fill(n: int) -> bytes:
    """Zero-data sub-blocks occupying exactly n bytes (n == 0 or n >= 2)."""
    out = bytearray()
    while n > 0:
        # `take` bytes = one length byte + (take - 1) zero data bytes; never leave 1 behind
        if n == 1:
            break
        take = n if n <= 256 else 255 if n == 257 else 256
        out.append(take - 1)
        out += bytes(take - 1)
        n -= take
    if n != 0:
        raise ValueError("sub-block fill cannot end in a 1-byte remainder")
    return bytes(out)


def pad_extension(length: int) -> bytes:
    """Neutral GIF extension of exactly `length` bytes (length 3 or >= 5)."""
    if length == 3:
        return b"\x21\xfe\x00"
    if length < 3 or length == 4:
        raise ValueError(f"no GIF extension is {length} bytes long")
    if length == APP_PAD_MIN or length >= APP_PAD_MIN + 2:
        return b"\x21\xff\x0b" + _PAD_ID + _sub_blocks_fill(length - APP_PAD_MIN) + b"\x00"
    return b"\x21\xfe" + _sub_blocks_fill(length - 3) + b"\x00"


class _Walk:
    def __init__(self, data: bytes, options: ScrubOptions) -> None:
        self.data = data
        self.options = options
        self.count = 0

    def tick(self) -> None:
        """Count one block (image or extension).  Sub-blocks are not counted: each takes at
        least two bytes, so walking them is already bounded by the input length."""
        self.count += 1
        if self.count > self.options.max_structures:
            raise ScrubError(f"GIF: too many blocks (over {self.options.max_structures})")

    def sub_blocks(self, p: int, what: str) -> tuple[list[tuple[int, int]], int]:
        """Data sub-blocks starting at p: ([(data offset, length)], offset after the 00)."""
        data = self.data
        blocks: list[tuple[int, int]] = []
        n = len(data)
        while True:
            if p >= n:
                raise ScrubError(f"GIF: {what} is truncated (its sub-blocks run past the end)")
            size = data[p]
            if size == 0:
                return blocks, p + 1
            if p + 1 + size > n:
                raise ScrubError(f"GIF: {what} is truncated (a sub-block runs past the end)")
            blocks.append((p + 1, size))
            p += 1 + size


def _all_zero(data: bytes, blocks: list[tuple[int, int]]) -> bool:
    return all(all_zero(data, o, o + s) for o, s in blocks)


# Application identifiers known by name.  The 8-byte identifier and 3-byte code are
# free text a writer chooses (it could be a person's name), and the carrier name reaches
# the logs, so any other identifier is reported without it.
_KNOWN_APPS = {_XMP: "XMP DataXMP", _ICC: "ICCRGBG1012", b"MGK8BIM0000": "MGK8BIM0000",
               b"MGKIPTC0000": "MGKIPTC0000", b"MGKIPTC": "MGKIPTC"}


def _app_name(ident: bytes) -> str:
    known = _KNOWN_APPS.get(bytes(ident))
    return f"GIF application {known}" if known else "GIF application"


def scrub(data: bytes, options: ScrubOptions, findings: Findings) -> bytes:
    if len(data) < 13 or data[:6] not in (b"GIF87a", b"GIF89a"):
        raise ScrubError("GIF: missing GIF87a/GIF89a header or logical screen descriptor")
    out = Splice(data)  # written only; every read below is of `data`
    drops: list[tuple[int, int]] = []
    walk = _Walk(data, options)
    p = 13
    if data[10] & 0x80:
        p += 3 * (2 << (data[10] & 7))
    n = len(data)

    def neutralise(start: int, end: int, carrier: str, tags: tuple[str, ...] = (),
                   blocks: list[tuple[int, int]] | None = None) -> None:
        values: tuple[tuple[str, str], ...] = ()
        if options.collect_values and blocks and tags:
            text = b"".join(data[o:o + s] for o, s in blocks)[:200]
            values = ((tags[0], "".join(ch if ch.isprintable() else "?"
                                        for ch in text.decode("latin-1"))),)
        findings.remove(carrier, start, end - start, tags, values=values)
        if options.preserve_length:
            out[start:end] = pad_extension(end - start)
        else:
            drops.append((start, end))

    def zero_blocks(blocks: list[tuple[int, int]]) -> bool:
        """Zero these sub-block payloads in place; True if anything was non-zero."""
        dirty = False
        for off, size in blocks:
            if any(data[off:off + size]):
                dirty = True
                out[off:off + size] = bytes(size)
        return dirty

    trailer = -1
    images = 0
    icc_kept = False
    # A Graphic Control Extension applies to the next graphic block.  One that is
    # followed by another GCE, by plain text (neutralised, so the GCE would otherwise
    # move onto the next image) or by the trailer applies to no image: it is neutralised.
    pending_gce: tuple[int, int] | None = None
    loop_value: bytes | None = None  # the loop sub-block of the first looping extension

    def drop_pending_gce() -> None:
        nonlocal pending_gce
        if pending_gce is not None:
            neutralise(pending_gce[0], pending_gce[1], "GIF graphic control (applies to no image)")
            pending_gce = None

    while p < n:
        intro = data[p]
        walk.tick()
        if intro == 0x3B:
            drop_pending_gce()
            trailer = p
            break
        if intro == 0x2C:
            if p + 10 > n:
                raise ScrubError(f"GIF: image descriptor at offset {p} is truncated")
            flags = data[p + 9]
            q = p + 10
            if flags & 0x80:
                q += 3 * (2 << (flags & 7))
            q += 1  # LZW minimum code size
            if q > n:
                raise ScrubError(f"GIF: image at offset {p} is truncated")
            _, p = walk.sub_blocks(q, f"image data at offset {q}")
            images += 1
            pending_gce = None  # the GCE before this image is used
            continue
        if intro != 0x21:
            raise ScrubError(f"GIF: unexpected byte 0x{intro:02X} at offset {p} where a block "
                             f"should start")
        if p + 2 > n:
            raise ScrubError(f"GIF: extension at offset {p} is truncated")
        start = p
        label = data[p + 1]
        blocks, end = walk.sub_blocks(p + 2, f"extension 0x{label:02X} at offset {p}")
        p = end
        if label == 0xF9:  # Graphic Control Extension: 4 meaningful bytes in the first sub-block
            extra = []
            if blocks:
                off, size = blocks[0]
                if size > 4:
                    extra.append((off + 4, size - 4))
                extra += blocks[1:]
            if zero_blocks(extra):
                findings.remove("GIF graphic control (extra bytes)", start, end - start)
            drop_pending_gce()
            pending_gce = (start, end)
            continue
        if label == 0xFF:
            ident = data[blocks[0][0]:blocks[0][0] + blocks[0][1]] if blocks else b""
            rest = blocks[1:]
            if ident in _LOOPING:
                # keep a well-formed loop sub-block (01 + loop count); zero anything else
                keep_first = bool(rest) and rest[0][1] == 3 and data[rest[0][0]] == 1
                value = bytes(data[rest[0][0]:rest[0][0] + 3]) if keep_first else b""
                if loop_value is not None:
                    # decoders take the first or the last copy: equal copies are redundant,
                    # different ones make the loop count a matter of the decoder
                    if value != loop_value:
                        raise ScrubError("GIF: two looping extensions with different loop counts")
                    neutralise(start, end, f"GIF application {ident.decode()} (second copy)")
                    continue
                loop_value = value
                if zero_blocks(rest[1:] if keep_first else rest):
                    findings.remove(f"GIF application {ident.decode()} (extra bytes)", start, end - start)
                findings.keep("animation", ident.decode())
                continue
            if ident == _ICC:
                profile = b"".join(data[o:o + k] for o, k in rest)
                if options.keep_icc and not icc_kept and icc.problem(profile) is None:
                    icc_kept = True
                    findings.keep("colour profile", "GIF ICCRGBG1012")
                    continue
                # not a profile, a second one, or not wanted
                neutralise(start, end, "ICC profile", ("ICC_Profile",))
                continue
            if ident == _PAD_ID and _all_zero(data, rest):
                if not options.preserve_length:
                    drops.append((start, end))
                continue  # our own padding
            if ident == _XMP:
                raw = data[blocks[0][0] + blocks[0][1]:end]
                neutralise(start, end, "GIF XMP", tuple(xmp_property_names(raw)))
            else:
                neutralise(start, end, _app_name(ident))
            continue
        if label == 0xFE:
            if _all_zero(data, blocks):
                if not options.preserve_length:
                    drops.append((start, end))
                continue  # empty or zeroed: our own padding
            neutralise(start, end, "GIF comment", ("Comment",), blocks)
            continue
        if label == 0x01:
            drop_pending_gce()
            neutralise(start, end, "GIF plain text", ("Text",), blocks[1:])
            continue
        neutralise(start, end, f"GIF extension 0x{label:02X}")

    if trailer < 0:
        raise ScrubError("GIF: no trailer (0x3B) found; the file is truncated")
    if images == 0:
        raise ScrubError("GIF: no image in the file")
    tail = trailer + 1
    if tail < n:
        if not all_zero(data, tail):
            findings.remove("data after trailer", tail, n - tail)
        out[tail:] = bytes(n - tail)
        if not options.preserve_length:
            drops.append((tail, n))
    if options.preserve_length or not drops:
        return out.build()
    view = memoryview(out.build())
    compact: list[memoryview] = []
    pos = 0
    for a, b in sorted(drops):  # an unused GCE is dropped after the blocks that follow it
        compact.append(view[pos:a])
        pos = b
    compact.append(view[pos:])
    return b"".join(compact)
