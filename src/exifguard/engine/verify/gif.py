"""Independent check of a cleaned GIF (written apart from the walker on purpose).

Accepts only: header + logical screen descriptor + colour tables, image blocks,
Graphic Control Extensions whose first sub-block carries at most the 4 defined
bytes (anything beyond, and any later sub-block, zero) and that an image follows
before the next GCE or the trailer, one `NETSCAPE2.0` / `ANIMEXTS1.0` holding at
most a loop sub-block (`01` + count) and otherwise zeros, one `ICCRGBG1012` only when
ICC is kept and only holding a well-formed ICC profile, and our neutral padding:
Comment extensions or Application Extensions with an all-zero identifier whose
sub-blocks are all zeros.  After the trailer only zeros may follow.
"""

from __future__ import annotations

from ..errors import ScrubError
from ..report import ScrubOptions
from .._bytes import all_zero
from . import _icc


class _Reader:
    def __init__(self, buf: bytes, limit: int) -> None:
        self.buf = buf
        self.left = limit

    def blocks(self, at: int) -> tuple[list[bytes], int]:
        """Sub-block payloads from `at` up to the 00 terminator; returns (payloads, next offset)."""
        buf = self.buf
        got: list[bytes] = []
        while True:
            if at >= len(buf):
                raise ScrubError("sub-blocks run past the end")
            length = buf[at]
            at += 1
            if not length:
                return got, at
            if at + length > len(buf):
                raise ScrubError("sub-block runs past the end")
            got.append(buf[at:at + length])
            at += length


def _table(flags: int) -> int:
    return 3 * (1 << ((flags & 7) + 1)) if flags & 0x80 else 0


def _nonzero(blocks: list[bytes]) -> bool:
    """Whether any of the sub-blocks holds a non-zero byte."""
    return not all(map(all_zero, blocks))


def verify(clean: bytes, options: ScrubOptions) -> None:
    if clean[:6] not in (b"GIF87a", b"GIF89a") or len(clean) < 13:
        raise ScrubError("not a GIF")
    r = _Reader(clean, options.max_structures)
    at = 13 + _table(clean[10])
    frames = 0
    profiles = 0
    loops = 0
    gce_waiting: int | None = None  # offset of a graphic control extension not yet used
    while True:
        if at >= len(clean):
            raise ScrubError("no trailer")
        kind = clean[at]
        r.left -= 1
        if r.left < 0:
            raise ScrubError("too many blocks")
        if kind == 0x3B:
            if gce_waiting is not None:
                raise ScrubError(f"graphic control extension at {gce_waiting} applies to no image")
            break
        if kind == 0x2C:
            if at + 10 > len(clean):
                raise ScrubError("image descriptor cut off")
            at += 10 + _table(clean[at + 9]) + 1
            _, at = r.blocks(at)
            frames += 1
            gce_waiting = None
            continue
        if kind != 0x21 or at + 2 > len(clean):
            raise ScrubError(f"unexpected byte at offset {at}")
        label = clean[at + 1]
        where = at
        payloads, at = r.blocks(at + 2)
        if label == 0xF9:
            if payloads and (_nonzero([payloads[0][4:]]) or _nonzero(payloads[1:])):
                raise ScrubError(f"graphic control extension at {where} carries extra bytes")
            if gce_waiting is not None:
                raise ScrubError(f"graphic control extension at {gce_waiting} applies to no image")
            gce_waiting = where
        elif label == 0xFE:
            if _nonzero(payloads):
                raise ScrubError(f"comment at offset {where} is not empty padding")
        elif label == 0xFF and payloads:
            ident, rest = payloads[0], payloads[1:]
            if ident in (b"NETSCAPE2.0", b"ANIMEXTS1.0"):
                loops += 1
                if loops > 1:
                    raise ScrubError(f"a second looping extension at {where}")
                if rest and len(rest[0]) == 3 and rest[0][0] == 1:
                    rest = rest[1:]
                if _nonzero(rest):
                    raise ScrubError(f"looping extension at {where} carries extra bytes")
            elif ident == b"ICCRGBG1012":
                if not options.keep_icc or profiles:
                    raise ScrubError("ICC profile extension present although ICC is not kept, or twice")
                profiles += 1
                _icc.check(b"".join(rest), "GIF ICCRGBG1012")
            elif ident == bytes(11):
                if _nonzero(rest):
                    raise ScrubError(f"padding extension at {where} is not all zeros")
            else:
                raise ScrubError(f"application extension at {where} is not allowed")
        else:
            raise ScrubError(f"extension 0x{label:02X} at offset {where} is not allowed")
    if not frames:
        raise ScrubError("no image")
    if _nonzero([clean[at + 1:]]):
        raise ScrubError("non-zero bytes after the trailer")
