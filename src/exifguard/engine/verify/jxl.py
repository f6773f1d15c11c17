"""Independent check of a cleaned JPEG XL file.

A bare codestream must start with `FF 0A` (it has no metadata boxes).  A container
must be the 12-byte signature box, then `ftyp` holding exactly `jxl `, 0, `jxl `, then
only `jxll` (one byte, level 5 or 10), `jxlc`, `jxlp` and zero-filled `free`/`skip` boxes, holding at least
one codestream box, followed by nothing but zeros.
"""

from __future__ import annotations

from ..errors import ScrubError
from ..report import ScrubOptions
from ._boxes import Counter, all_zero, top_level, type_code

_SIG = b"\x00\x00\x00\x0cJXL \x0d\x0a\x87\x0a"
_ALLOWED = {b"jxll", b"jxlc", b"jxlp", b"free", b"skip"}


def verify(clean: bytes, options: ScrubOptions) -> None:
    if clean[:2] == b"\xff\x0a":
        return
    if clean[:12] != _SIG:
        raise ScrubError("not a JPEG XL codestream or container")
    boxes, tail = top_level(clean, Counter(options.max_structures))
    if len(boxes) < 2 or boxes[1].kind != b"ftyp" or clean[boxes[1].payload:boxes[1].end] != b"jxl \0\0\0\0jxl ":
        raise ScrubError("no ftyp box of exactly 'jxl ', 0, 'jxl ' after the signature")
    if not all_zero(clean, tail, len(clean)):
        raise ScrubError("bytes after the last box are not zero")
    codestream = False
    for box in boxes[2:]:
        if box.kind not in _ALLOWED:
            raise ScrubError(f"box '{type_code(box.kind)}' is not allowed here")
        if box.kind == b"jxll" and clean[box.payload:box.end] not in (b"\x05", b"\x0a"):
            raise ScrubError("jxll box does not hold one valid level")
        if box.kind in (b"free", b"skip") and not all_zero(clean, box.payload, box.end):
            raise ScrubError("a free box still holds data")
        codestream = codestream or box.kind in (b"jxlc", b"jxlp")
    if not codestream:
        raise ScrubError("no codestream box")
