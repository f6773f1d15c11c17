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


_OTHER_FORMATS = (b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"Exif\0\0II*\0", b"Exif\0\0MM\0*",
                  b"<x:xmpmeta", b"http://ns.adobe.com/xap/1.0/", b"<rdf:RDF", b"Photoshop 3.0\x008BIM",
                  b"ftypheic", b"ftypheix", b"ftypheif", b"ftypheis", b"ftypmif1", b"ftypavif", b"ftypavis")


def _bare_codestream_only(clean: bytes) -> None:
    """A bare codestream may not carry another image or a metadata block."""
    body = clean[2:]
    for sig in _OTHER_FORMATS:
        if sig in body:
            raise ScrubError("bare codestream holds another format's signature or a metadata block")
    k = body.find(b"RIFF")
    while k >= 0:
        if body[k + 8:k + 15] == b"WEBPVP8":
            raise ScrubError("bare codestream holds a WebP")
        k = body.find(b"RIFF", k + 1)
    k = body.find(b"\xff\xd8\xff")
    while k >= 0:
        seg = k + 2
        if seg + 4 <= len(body) and 0xC0 <= body[seg + 1] <= 0xFE:
            after = seg + 2 + int.from_bytes(body[seg + 2:seg + 4], "big")
            if after + 1 < len(body) and body[after] == 0xFF and 0xC0 <= body[after + 1] <= 0xFE:
                raise ScrubError("bare codestream holds a JPEG")
        k = body.find(b"\xff\xd8\xff", k + 1)


def verify(clean: bytes, options: ScrubOptions) -> None:
    if clean[:2] == b"\xff\x0a":
        _bare_codestream_only(clean)
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
