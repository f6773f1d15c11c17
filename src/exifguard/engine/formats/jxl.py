"""JPEG XL cleaner: blanks metadata boxes of the ISOBMFF container in place.

A bare codestream (`FF 0A`) has no metadata carriers (ISO/IEC 18181-1: Exif and XMP
exist only as container boxes), so it is returned unchanged - unless it visibly holds
an embedded image (PNG, WebP, GIF, HEIF, or a JPEG with two chained segments) or a
metadata block (Exif, XMP, Photoshop), which a codestream cannot legitimately carry:
then it is refused (fuzz finding C2: a JPEG behind `FF 0A` travelled as "JXL").  Limitation: the bare
codestream's own length is not known without decoding it, so bytes appended after a
bare codestream cannot be told apart from image data and are left as they are.

In the container (ISO/IEC 18181-2) we keep the signature box `JXL `, the one `ftyp`
(which must be exactly `jxl `, 0, `jxl `), `jxll` (level, one byte: 5 or 10) and
`jxlc`/`jxlp` (the codestream, byte-identical).  Everything else is renamed `free` with
its size kept and payload zeroed, including a second `ftyp` or signature box and `jxli`
(a frame index for seeking: decoders do not need it, and its offsets are free numbers):

* `Exif`, `xml ` (XMP), `jumb` (JUMBF/C2PA) and `brob` (Brotli-compressed box; its
  first 4 payload bytes name the wrapped type, usually one of those three).
  Orientation lives in the codestream header, not in Exif, so nothing is lost.
* `jbrd` (JPEG bitstream reconstruction data).  It stores the original JPEG's other
  APPn/COM segments and any trailer (Brotli-compressed), and it rebuilds the Exif/XMP
  segments from the `Exif`/`xml ` boxes; once those are blank it could only rebuild a
  different JPEG anyway.  Dropping it keeps the pixels; only the byte-exact JPEG
  round trip is lost.
* unknown boxes, and non-zero `free`/`skip` payloads.

Not cleaned: text inside the codestream itself (frame names), which needs a codestream
parser.  `preserve_length=False` produces the same in-place output.
"""

from __future__ import annotations

import re

from ..categories import categories_for
from ..errors import ScrubError
from ..exif import find_tiff_header, read_tiff
from ..report import Findings, ScrubOptions
from ..xmp import xmp_property_names
from ._splice import Splice
from .isobmff import Box, Budget, is_fourcc, read_header
from .._bytes import all_zero

FMT = "JXL"
SIGNATURE = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
KEEP = frozenset({b"JXL ", b"ftyp", b"jxll", b"jxlc", b"jxlp"})
PADDING = frozenset({b"free", b"skip"})
CARRIERS = {b"Exif": "JXL Exif box", b"xml ": "JXL XMP box", b"jumb": "JXL JUMBF box",
            b"brob": "JXL brob box", b"jbrd": "JXL JPEG reconstruction box"}


# Signatures long enough that entropy-coded data does not produce them by chance.
_FOREIGN = (
    (re.compile(re.escape(b"\x89PNG\r\n\x1a\n")), "an embedded PNG"),
    (re.compile(rb"RIFF.{4}WEBPVP8", re.S), "an embedded WebP"),
    (re.compile(rb"GIF8[79]a"), "an embedded GIF"),
    (re.compile(rb"ftyp(?:hei[cfxs]|mif1|avi[fs])"), "an embedded HEIF/AVIF"),
    (re.compile(rb"Exif\0\0(?:II\*\0|MM\0\*)"), "an Exif block"),
    (re.compile(rb"<x:xmpmeta|http://ns\.adobe\.com/xap/1\.0/|<rdf:RDF"), "an XMP packet"),
    (re.compile(rb"Photoshop 3\.0\x008BIM"), "a Photoshop/IPTC block"),
)
_JPEG_SOI = re.compile(rb"\xff\xd8\xff[\xc0-\xfe]")


def foreign_content(data: bytes) -> str | None:
    """What a bare codestream carries that is not codestream, or None.

    A JPEG counts only when its first segment's length leads to a second marker (two
    chained segments), so a chance `FF D8 FF` in coded data does not."""
    for pattern, what in _FOREIGN:
        if pattern.search(data, 2):
            return what
    for m in _JPEG_SOI.finditer(data, 2):
        at = m.start() + 2
        if at + 4 > len(data):
            break
        nxt = at + 2 + int.from_bytes(data[at + 2:at + 4], "big")
        if nxt + 1 < len(data) and data[nxt] == 0xFF and 0xC0 <= data[nxt + 1] <= 0xFE:
            return "an embedded JPEG"
    return None


FTYP_BODY = b"jxl \0\0\0\0jxl "
LEVELS = (b"\x05", b"\x0a")


def _kept_as_is(data: bytes, box: Box, index: int) -> bool:
    """A kept-type box that is what it claims: the signature and ftyp only where the
    container puts them (first, second), a level box holding one valid level.  A second
    ftyp or signature box, or a level box with anything else, is neutralised like any
    other box."""
    if box.type == b"JXL ":
        return index == 0
    if box.type == b"ftyp":
        return index == 1
    if box.type == b"jxll":
        return bytes(data[box.body:box.end]) in LEVELS
    return True


def scrub(data: bytes, options: ScrubOptions, findings: Findings) -> bytes:
    if data[:2] == b"\xff\x0a":
        # bare codestream: no boxes, no metadata carriers, and no end we can find without
        # decoding it.  So it is returned unchanged, unless it visibly carries something
        # else (an embedded image or a metadata block), which it cannot legitimately hold.
        what = foreign_content(data)
        if what is not None:
            raise ScrubError(f"JXL: a bare codestream that holds {what}; cannot tell it apart from "
                             "image data, so it is refused")
        return bytes(data)
    if data[:12] != SIGNATURE:
        raise ScrubError("JXL: neither a bare codestream nor a JPEG XL container")
    # Written only: every read is of `data`.  That is the same as reading the edited
    # bytes, because the boxes are all found before the first edit and each box is read
    # before it is blanked (boxes do not overlap).
    out = Splice(data)
    budget = Budget(FMT, options.max_structures)
    n = len(data)
    boxes: list[Box] = []
    pos = 0
    trailing = n
    while pos < n:
        if n - pos < 8 or (boxes and not is_fourcc(bytes(data[pos + 4:pos + 8]))):
            trailing = pos
            break
        budget.spend()
        try:
            box = read_header(data, pos, n, fmt=FMT, top_level=True)
        except ScrubError:
            if len(boxes) < 2:
                raise
            # A header that does not fit after signature and ftyp: appended data, zeroed below.
            trailing = pos
            break
        boxes.append(box)
        pos = box.end
    if len(boxes) < 2 or boxes[1].type != b"ftyp":
        raise ScrubError("JXL: the container has no ftyp box after its signature")
    if not any(b.type in (b"jxlc", b"jxlp") for b in boxes):
        raise ScrubError("JXL: the container holds no codestream (jxlc/jxlp)")

    if bytes(data[boxes[1].body:boxes[1].end]) != FTYP_BODY:
        raise ScrubError("JXL: the ftyp box is not the one JPEG XL defines ('jxl ', 0, 'jxl ')")
    for index, box in enumerate(boxes):
        if box.type in KEEP and _kept_as_is(data, box, index):
            continue
        head = 16 if box.largesize else 8
        payload = bytes(data[box.start + head:box.end])
        if box.type in PADDING and all_zero(payload):
            continue
        carrier = CARRIERS.get(box.type, f"JXL box {box.name}")
        tags: list[str] = []
        values: list[tuple[str, str]] = []
        inner = payload
        cats = None
        if box.type == b"brob":
            # Not decompressed: the brotli module offers no output bound, and the box goes
            # whole anyway.  Its category follows the wrapped type (first 4 payload bytes).
            cats = categories_for(CARRIERS.get(payload[:4], carrier), ())
            inner = b""
        if box.type == b"Exif":
            at = -1
            if len(inner) >= 4:
                declared = 4 + int.from_bytes(inner[:4], "big")
                if inner[declared:declared + 4] in (b"II*\0", b"MM\0*"):
                    at = declared
            if at < 0:
                at = find_tiff_header(inner)
            if at >= 0:
                summary = read_tiff(inner[at:], collect_values=options.collect_values)
                tags = list(summary.names)
                if options.collect_values:
                    values = [(e.name, e.value) for e in summary.entries if e.value is not None]
        elif box.type == b"xml ":
            tags = xmp_property_names(inner)
        findings.remove(carrier, box.start, box.size, tags, categories=cats, values=values)
        out[box.start + 4:box.start + 8] = b"free"
        out[box.start + head:box.end] = bytes(box.end - box.start - head)
    if not all_zero(data, trailing):
        findings.remove("data after last box", trailing, n - trailing)
    out[trailing:] = bytes(n - trailing)
    return out.build()
