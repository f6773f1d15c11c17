"""HEIF / HEIC / AVIF cleaner: edits the ISOBMFF container in place, never the pixels.

Where metadata lives (metadata-carriers.md §1.5): `Exif` items and XMP items (`mime`
items of type application/rdf+xml) anywhere in the item table, vendor top-level boxes
(Samsung `sefd`, motion-photo `mpvd`, `uuid`), unknown item properties, bytes in
`mdat` that no item references, and bytes after the last box.

Why in place: every item's data is addressed by absolute offsets in `iloc`, so
shrinking anything would mean rewriting those offsets.  Instead each carrier keeps
its exact size and gets neutral content (§4):

* Exif item -> 4-byte offset 0, an empty valid TIFF (`engine.exif.minimal_tiff(None)`),
  zeros.  Orientation in HEIF lives in `irot`/`imir`, which we keep, so the TIFF needs
  no entries.  libheif refuses an all-zero Exif payload, hence the valid TIFF.  An Exif
  item shorter than 18 bytes cannot hold that; it is zero-filled (it cannot carry more
  than an empty directory anyway).
* XMP item -> `<x:xmpmeta xmlns:x="adobe:ns:meta/"/>` padded with spaces (an all-space
  packet makes ExifTool warn "Invalid XMP").  Shorter than that: all spaces.  A
  `content_encoding` (compressed XMP) is blanked to NULs in the `infe` so readers
  take the packet as plain text.
* Any other non-image item (unknown types, other `mime` types, `uri `, items in `iloc`
  without an `infe`) -> zero-filled payload.
* A box we do not keep -> renamed `free` (same size) and its payload zeroed; so is an
  item property no item is associated with (it renders nothing).
* Unreferenced bytes inside `mdat`/`idat` and bytes after the last box -> zeros.

`colr` with an ICC profile is kept when `keep_icc` (the default) and the profile is a
well-formed ICC profile (`engine.icc`: a text or XMP "profile" is not); otherwise the
property box is renamed `free` and zeroed (colours then fall back to the codec's
defaults, which is what the caller asked for).  `nclx` is always kept.

`preserve_length=False` produces the same in-place output: shrinking HEIF would need
all `iloc` offsets rewritten, and the result is never larger than the input.

Image sequences (`moov` tracks) are refused: their track headers and `udta` hold
their own metadata, which this walker does not clean yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import icc
from ..errors import ScrubError
from ..exif import find_tiff_header, minimal_tiff, read_tiff
from ..report import Findings, ScrubOptions
from ..xmp import xmp_property_names
from ._splice import Splice
from .isobmff import Box, Budget, Reader, is_fourcc, iter_boxes, printable_type, read_header
from .._bytes import all_zero, type_code

FMT = "HEIF"

#: Item types that are coded images or derived images: their data is kept untouched.
IMAGE_ITEM_TYPES = frozenset({
    b"hvc1", b"hvt1", b"lhv1", b"av01", b"avc1", b"vvc1", b"vvi1", b"evc1", b"j2k1", b"jpeg",
    b"unci", b"mski", b"grid", b"iden", b"iovl", b"tmap",
})
KEEP_TOP = frozenset({b"ftyp", b"meta", b"mdat", b"free", b"skip"})
KEEP_META = frozenset({b"hdlr", b"pitm", b"iinf", b"iloc", b"iref", b"iprp", b"idat", b"dinf", b"grpl"})
#: Item properties needed to decode or display an image (everything else is blanked,
#: e.g. `udes` user descriptions or creation/modification time properties).
KEEP_PROPS = frozenset({
    b"hvcC", b"av1C", b"avcC", b"vvcC", b"lhvC", b"jpgC", b"j2kH", b"uncC", b"cmpd", b"cmpC", b"icef",
    b"ispe", b"pixi", b"colr", b"irot", b"imir", b"clap", b"pasp", b"auxC", b"rloc", b"lsel", b"a1op",
    b"a1lx", b"clli", b"mdcv", b"cclv", b"amve", b"reve", b"ndwt", b"oinf", b"tols", b"iscl", b"ccst",
})
PADDING = frozenset({b"free", b"skip"})
XMP_MIME = b"application/rdf+xml"
NEUTRAL_XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>'
EXIF_HEAD = b"\0\0\0\0" + minimal_tiff(None)


def neutral_exif(length: int) -> bytes:
    """What an Exif item of `length` bytes becomes (see the module docstring)."""
    if length < len(EXIF_HEAD):
        return bytes(length)
    return EXIF_HEAD + bytes(length - len(EXIF_HEAD))


def neutral_xmp(length: int) -> bytes:
    if length < len(NEUTRAL_XMP):
        return b" " * length
    return NEUTRAL_XMP + b" " * (length - len(NEUTRAL_XMP))


@dataclass(slots=True)
class _Item:
    id: int
    type: bytes
    content_type: bytes = b""
    encoding_span: tuple[int, int] | None = None  # where a content_encoding string sits in the infe
    text_spans: list[tuple[int, int]] = field(default_factory=list)  # item name, URI type: free text
    extra: tuple[int, int] | None = None  # bytes after the entry's last field


@dataclass(slots=True)
class _Loc:
    id: int
    method: int
    dref: int
    base: int
    extents: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) as declared


@dataclass(slots=True)
class _Walk:
    # The walk reads `data` and writes `out`.  That equals reading the edited bytes,
    # because nothing is read after it was edited: every box is read before it is
    # blanked, only kept boxes are walked into (so blanked boxes never nest), top-level
    # boxes, meta children and the trailing bytes do not overlap, and item data, the
    # mdat/idat gaps and the infe encoding strings lie in distinct boxes or ranges
    # (metadata items overlapping anything are refused before any item is written).
    data: bytes
    out: Splice
    options: ScrubOptions
    findings: Findings
    budget: Budget
    mdats: list[Box] = field(default_factory=list)
    idat: Box | None = None


def _blank_box(w: _Walk, box: Box, carrier: str | None = None) -> None:
    """Rename a box to `free` and zero everything after its header (size field kept)."""
    head = 16 if box.largesize else 8
    had_content = not all_zero(w.data, box.start + head, box.end)
    if box.type not in PADDING or had_content:
        w.findings.remove(carrier or f"HEIF box {box.name}", box.start, box.size)
    w.out[box.start + 4:box.start + 8] = b"free"
    w.out[box.start + head:box.end] = bytes(box.end - box.start - head)


def _zero_padding(w: _Walk, box: Box) -> None:
    """`free`/`skip` may hold leftovers (old metadata an editor moved away): zero them."""
    if not all_zero(w.data, box.body, box.end):
        _blank_box(w, box)


def scrub(data: bytes, options: ScrubOptions, findings: Findings) -> bytes:
    w = _Walk(data, Splice(data), options, findings, Budget(FMT, options.max_structures))
    n = len(data)
    tops: list[Box] = []
    pos = 0
    trailing = n
    while pos < n:
        if n - pos < 8 or (tops and not is_fourcc(bytes(data[pos + 4:pos + 8]))):
            trailing = pos  # not a box: data appended after the file
            break
        w.budget.spend()
        try:
            box = read_header(data, pos, n, fmt=FMT, top_level=True)
        except ScrubError:
            if not tops:
                raise
            # A header that does not fit after the file proper: appended data, zero-filled
            # below.  Item data there is still refused (extents must lie inside an mdat).
            trailing = pos
            break
        tops.append(box)
        pos = box.end
    if not tops or tops[0].type != b"ftyp":
        raise ScrubError("HEIF: the file does not start with an ftyp box")
    metas = [b for b in tops if b.type == b"meta"]
    if len(metas) != 1:
        raise ScrubError(f"HEIF: expected exactly one top-level meta box, found {len(metas)}")
    if any(b.type == b"moov" for b in tops):
        raise ScrubError("HEIF: image sequences (moov tracks) cannot be cleaned yet")
    w.mdats = [b for b in tops if b.type == b"mdat"]

    _check_ftyp(data, tops[0])
    for box in tops:
        if box.type in PADDING:
            _zero_padding(w, box)
        elif box.type not in KEEP_TOP or (box.type == b"ftyp" and box is not tops[0]):
            _blank_box(w, box)  # a second ftyp tells a decoder nothing: only the first counts
    if not all_zero(data, trailing):
        findings.remove("data after last box", trailing, n - trailing)
    w.out[trailing:] = bytes(n - trailing)

    _meta(w, metas[0])
    return w.out.build()


MAX_BRANDS = 32
"""Compatible brands a kept ftyp may list (real files list two to six)."""


def _check_ftyp(data: bytes, ftyp: Box) -> None:
    """The one ftyp a decoder reads must be brands only: major brand, minor version and
    whole 4-byte compatible brands, each made of letters, digits and spaces.  Anything
    else in it would travel verbatim, and the box cannot be blanked (it identifies the
    file), so a malformed one is refused."""
    body = bytes(data[ftyp.body:ftyp.end])
    brands = [body[:4]] + [body[k:k + 4] for k in range(8, len(body), 4)]
    if len(body) < 8 or len(body) % 4 or len(brands) > MAX_BRANDS + 1 \
            or not all(type_code(b) == b.decode("latin-1") for b in brands):
        raise ScrubError("HEIF: the ftyp box holds more than brands (malformed or hostile file)")


def _meta(w: _Walk, meta: Box) -> None:
    buf = w.data
    r = Reader(buf, meta.body, meta.end, FMT, "meta")
    version, _ = r.full_header()
    if version != 0:
        raise ScrubError(f"HEIF: unsupported meta box version {version}")
    children: dict[bytes, Box] = {}
    for box in iter_boxes(buf, r.pos, meta.end, w.budget):
        if box.type in KEEP_META:
            if box.type in children:
                raise ScrubError(f"HEIF: more than one '{box.name}' box in meta")
            children[box.type] = box
        elif box.type in PADDING:
            _zero_padding(w, box)
        else:  # e.g. an ISO `xml `/`bxml` box holding XMP directly, or a vendor box
            _blank_box(w, box)
    hdlr = children.get(b"hdlr")
    if hdlr is None:
        raise ScrubError("HEIF: meta box has no hdlr")
    hr = Reader(buf, hdlr.body, hdlr.end, FMT, "hdlr")
    hr.full_header()
    hr.u32()
    if hr.fourcc() != b"pict":
        raise ScrubError("HEIF: meta handler is not 'pict' (not a HEIF image)")
    # pre_defined and reserved are zero by definition and the handler name is free text
    # no reader needs: all of it becomes zeros, only the handler type stays
    w.out[hdlr.body + 4:hdlr.body + 8] = bytes(4)
    if hr.pos < hdlr.end:
        w.out[hr.pos:hdlr.end] = bytes(hdlr.end - hr.pos)
    w.idat = children.get(b"idat")
    if b"pitm" in children:
        _pitm(w, children[b"pitm"])
    if b"dinf" in children:
        _dinf(w, children[b"dinf"])
    if b"grpl" in children:
        _grpl(w, children[b"grpl"])

    items = _iinf(w, children[b"iinf"]) if b"iinf" in children else {}
    locs = _iloc(w, children[b"iloc"]) if b"iloc" in children else {}
    if b"iref" in children:
        _iref(w, children[b"iref"])
    if b"iprp" in children:
        _iprp(w, children[b"iprp"])
    _clean_items(w, items, locs)


def _zero_tail(w: _Walk, start: int, end: int, what: str) -> None:
    """Bytes after a kept box's last field are read by no decoder: they become zeros."""
    if start < end and not all_zero(w.data, start, end):
        w.findings.remove(f"HEIF {what} extra data", start, end - start)
        w.out[start:end] = bytes(end - start)


def _pitm(w: _Walk, pitm: Box) -> None:
    r = Reader(w.data, pitm.body, pitm.end, FMT, "pitm")
    version, _ = r.full_header()
    r.uint(2 if version == 0 else 4)
    _zero_tail(w, r.pos, pitm.end, "pitm")


def _dinf(w: _Walk, dinf: Box) -> None:
    """Data references: only `dref` with `url `/`urn ` entries, and no location text
    (a self-contained entry has none; a location would name another file)."""
    for box in iter_boxes(w.data, dinf.body, dinf.end, w.budget):
        if box.type != b"dref":
            _blank_box(w, box)
            continue
        r = Reader(w.data, box.body, box.end, FMT, "dref")
        r.full_header()
        r.u32()
        for entry in iter_boxes(w.data, r.pos, box.end, w.budget):
            _zero_tail(w, min(entry.body + 4, entry.end), entry.end, f"data reference {entry.name}")


def _grpl(w: _Walk, grpl: Box) -> None:
    """Entity groups: group id, entity count and entity ids; nothing after them."""
    for box in iter_boxes(w.data, grpl.body, grpl.end, w.budget):
        r = Reader(w.data, box.body, box.end, FMT, "grpl")
        r.full_header()
        r.u32()
        n = r.u32()
        r.require_count(n, 4)
        w.budget.spend(n)
        r.pos += 4 * n
        _zero_tail(w, r.pos, box.end, f"entity group {box.name}")


def _iinf(w: _Walk, iinf: Box) -> dict[int, _Item]:
    r = Reader(w.data, iinf.body, iinf.end, FMT, "iinf")
    version, _ = r.full_header()
    count = r.u16() if version == 0 else r.u32()
    r.require_count(count, 12)
    items: dict[int, _Item] = {}
    for box in iter_boxes(w.data, r.pos, iinf.end, w.budget):
        if box.type != b"infe":
            _blank_box(w, box)
            continue
        item = _infe(box, w.data)
        if item.id in items:
            raise ScrubError("HEIF: two item entries share one item ID")
        items[item.id] = item
        _blank_entry_text(w, item)
    return items


def _infe(box: Box, buf: bytes) -> _Item:
    r = Reader(buf, box.body, box.end, FMT, "infe")
    version, _ = r.full_header()
    if version in (0, 1):  # no item type: a MIME-typed item
        item_id = r.u16()
        r.u16()
        at, name = r.cstring()
        _, ctype = r.cstring()
        item = _Item(item_id, b"mime", ctype.strip())
    elif version in (2, 3):
        item_id = r.u16() if version == 2 else r.u32()
        r.u16()
        itype = r.fourcc()
        at, name = r.cstring()
        item = _Item(item_id, itype)
        if itype == b"uri ":
            uat, uri = r.cstring()
            item.text_spans.append((uat, uat + len(uri)))
        if itype != b"mime":
            item.text_spans.append((at, at + len(name)))
            if r.left() > 0:
                item.extra = (r.pos, r.end)
            return item
        _, ctype = r.cstring()
        item.content_type = ctype.strip()
    else:
        raise ScrubError(f"HEIF: unsupported item info entry version {version}")
    item.text_spans.append((at, at + len(name)))
    if r.left() > 0:
        eat, enc = r.cstring()
        if enc:
            item.encoding_span = (eat, eat + len(enc))
    if r.left() > 0:
        item.extra = (r.pos, r.end)
    return item


def _blank_entry_text(w: _Walk, item: _Item) -> None:
    """An item's name (and a URI item's type) is free text no decoder needs: it becomes
    spaces of the same length.  Bytes after the entry's last field become zeros."""
    for a, b in item.text_spans:
        if b > a and w.data[a:b].strip(b" "):
            w.findings.remove("HEIF item name", a, b - a, ["ItemName"])
            w.out[a:b] = b" " * (b - a)
    if item.extra is not None:
        a, b = item.extra
        if not all_zero(w.data, a, b):
            w.findings.remove("HEIF item entry extra data", a, b - a)
            w.out[a:b] = bytes(b - a)


def _iloc(w: _Walk, iloc: Box) -> dict[int, _Loc]:
    r = Reader(w.data, iloc.body, iloc.end, FMT, "iloc")
    version, _ = r.full_header()
    if version > 2:
        raise ScrubError(f"HEIF: unsupported iloc version {version}")
    b1, b2 = r.u8(), r.u8()
    off_size, len_size, base_size = b1 >> 4, b1 & 15, b2 >> 4
    idx_size = b2 & 15 if version in (1, 2) else 0
    for s in (off_size, len_size, base_size, idx_size):
        if s not in (0, 4, 8):
            raise ScrubError("HEIF: iloc uses a field size other than 0, 4 or 8 bytes")
    id_size = 4 if version == 2 else 2
    count = r.u32() if version == 2 else r.u16()
    r.require_count(count, id_size + (2 if version else 0) + 2 + base_size + 2)
    w.budget.spend(count)
    locs: dict[int, _Loc] = {}
    for _ in range(count):
        item_id = r.uint(id_size)
        method = r.u16() & 15 if version in (1, 2) else 0
        loc = _Loc(item_id, method, r.u16(), r.uint(base_size))
        ext_count = r.u16()
        r.require_count(ext_count, idx_size + off_size + len_size)
        w.budget.spend(ext_count)
        for _ in range(ext_count):
            r.uint(idx_size)
            loc.extents.append((r.uint(off_size), r.uint(len_size)))
        if item_id in locs:
            raise ScrubError("HEIF: two iloc entries share one item ID")
        locs[item_id] = loc
    _zero_tail(w, r.pos, iloc.end, "iloc")
    return locs


def _iref(w: _Walk, iref: Box) -> None:
    """Validate item references (cdsc, thmb, auxl, dimg, ...).

    We never follow references to find metadata (every Exif/XMP item is cleaned wherever
    it hangs), but a reference cycle means a hostile or corrupt file that would send a
    decoder round in circles, so it is refused.  The check is Kahn's algorithm: linear
    in the (budgeted) number of references, no recursion."""
    r = Reader(w.data, iref.body, iref.end, FMT, "iref")
    version, _ = r.full_header()
    if version > 1:
        raise ScrubError(f"HEIF: unsupported iref version {version}")
    id_size = 2 if version == 0 else 4
    edges: dict[int, list[int]] = {}
    indegree: dict[int, int] = {}
    for box in iter_boxes(w.data, r.pos, iref.end, w.budget):
        rr = Reader(w.data, box.body, box.end, FMT, "iref")
        src = rr.uint(id_size)
        n = rr.u16()
        rr.require_count(n, id_size)
        w.budget.spend(n)
        indegree.setdefault(src, 0)
        for _ in range(n):
            dst = rr.uint(id_size)
            if dst == src:
                raise ScrubError("HEIF: an item references itself (iref loop)")
            edges.setdefault(src, []).append(dst)
            indegree[dst] = indegree.get(dst, 0) + 1
        _zero_tail(w, rr.pos, box.end, f"item reference {box.name}")
    ready = [node for node, deg in indegree.items() if deg == 0]
    done = 0
    while ready:
        node = ready.pop()
        done += 1
        for dst in edges.get(node, ()):
            indegree[dst] -= 1
            if indegree[dst] == 0:
                ready.append(dst)
    if done != len(indegree):
        raise ScrubError("HEIF: item references form a loop (iref)")


def _iprp(w: _Walk, iprp: Box) -> None:
    profiles: set[int] = set()              # 1-based ipco positions of kept ICC profiles
    links: list[tuple[int, list[int]]] = []  # (item, property positions) from every ipma
    children = list(iter_boxes(w.data, iprp.body, iprp.end, w.budget))
    for box in children:  # associations first: a property no item uses is not kept
        if box.type == b"ipma":
            links += _ipma(w, box)
    used = {p for _, props in links for p in props}
    for box in children:
        if box.type == b"ipco":
            profiles |= _ipco(w, box, used)
        elif box.type == b"ipma":
            pass
        elif box.type in PADDING:
            _zero_padding(w, box)
        else:
            _blank_box(w, box)
    for _, props in links:
        if len(profiles.intersection(props)) > 1:
            # one image, one colour profile: decoders would pick one or the other
            raise ScrubError("HEIF: an image item is associated with more than one ICC profile")


def _ipco(w: _Walk, ipco: Box, used: set[int]) -> set[int]:
    """Clean the item properties; return the 1-based positions of the ICC profiles kept.

    A property no item is associated with (`used` holds the 1-based positions ipma
    names) renders nothing, yet holds free values: it is blanked like any other box."""
    # Properties are addressed by their 1-based position, so boxes are renamed, never removed.
    kept: set[int] = set()
    for position, box in enumerate(iter_boxes(w.data, ipco.body, ipco.end, w.budget), start=1):
        if box.type in PADDING:
            _zero_padding(w, box)
        elif position not in used and box.type in KEEP_PROPS:
            _blank_box(w, box, f"HEIF unused property {box.name}")
        elif box.type == b"colr" and bytes(w.data[box.body:box.body + 4]) not in _COLR_TYPES:
            _blank_box(w, box, "HEIF colr of unknown type")  # not a colour description at all
        elif box.type == b"colr":
            ctype = bytes(w.data[box.body:box.body + 4])
            _zero_after_fields(w, box)
            if ctype in (b"prof", b"rICC"):
                # kept only when it is what it claims: one well-formed ICC profile
                if w.options.keep_icc and icc.problem(bytes(w.data[box.body + 4:box.end])) is None:
                    w.findings.keep("colour profile", "HEIF colr ICC")
                    kept.add(position)
                else:
                    _blank_box(w, box, "ICC profile")
        elif box.type in (b"irot", b"imir"):
            _zero_after_fields(w, box)
            w.findings.keep("orientation", "HEIF irot/imir")
        elif box.type not in KEEP_PROPS:
            _blank_box(w, box)
        else:
            _zero_after_fields(w, box)
    return kept


_COLR_TYPES = frozenset({b"nclx", b"nclc", b"prof", b"rICC"})
# Payload sizes of the fixed-layout properties (ISO/IEC 23008-12, 14496-12, AV1-ISOBMFF);
# pixi's depends on its channel count.  Decoders read these fields and ignore the rest.
_FIXED_PROPS = {b"ispe": 12, b"irot": 1, b"imir": 1, b"pasp": 8, b"clap": 32, b"clli": 4,
                b"mdcv": 24, b"a1op": 1, b"lsel": 2}
_COLR_SIZES = {b"nclx": 11, b"nclc": 10}


def _fields_end(w: _Walk, box: Box) -> int | None:
    """Where a fixed-layout property's fields end, or None for variable layouts."""
    if box.type in _FIXED_PROPS:
        return box.body + _FIXED_PROPS[box.type]
    if box.type == b"pixi" and box.end - box.body >= 5:
        return box.body + 5 + w.data[box.body + 4]
    if box.type == b"colr":
        size = _COLR_SIZES.get(bytes(w.data[box.body:box.body + 4]))
        return None if size is None else box.body + size
    return None


def _zero_after_fields(w: _Walk, box: Box) -> None:
    """Bytes after a kept property's fields are read by no decoder: they become zeros."""
    end = _fields_end(w, box)
    if end is not None and end < box.end and not all_zero(w.data, end, box.end):
        w.findings.remove(f"HEIF {box.name} extra data", end, box.end - end)
        w.out[end:box.end] = bytes(box.end - end)


def _ipma(w: _Walk, ipma: Box) -> list[tuple[int, list[int]]]:
    """Validate the item-property associations; return (item, 1-based positions) pairs."""
    r = Reader(w.data, ipma.body, ipma.end, FMT, "ipma")
    version, flags = r.full_header()
    id_size = 2 if version < 1 else 4
    count = r.u32()
    r.require_count(count, id_size + 1)
    w.budget.spend(count)
    links: list[tuple[int, list[int]]] = []
    wide = flags & 1
    for _ in range(count):
        item = r.uint(id_size)
        n = r.u8()
        w.budget.spend(n)
        r.require_count(n, 2 if wide else 1)
        # each association: essential bit, then a 7- or 15-bit property index
        links.append((item, [r.uint(2 if wide else 1) & (0x7FFF if wide else 0x7F) for _ in range(n)]))
    _zero_tail(w, r.pos, ipma.end, "ipma")
    return links


def _kind(item: _Item | None) -> str:
    if item is None:
        return "orphan"
    if item.type in IMAGE_ITEM_TYPES:
        return "image"
    if item.type == b"Exif":
        return "exif"
    if item.type == b"mime" and item.content_type.lower() == XMP_MIME:
        return "xmp"
    return "other"


def _ranges(w: _Walk, loc: _Loc, kind: str) -> list[tuple[int, int]] | None:
    """Absolute [start, end) file ranges of an item's data; None when it is not in this
    file's mdat/idat (external reference or built from other items)."""
    n = len(w.data)
    if loc.dref != 0 or loc.method == 2:
        if kind == "image":
            return None
        raise ScrubError("HEIF: cannot clean a metadata item stored outside the file or built from other "
                         "items (iloc construction method 2)")
    if loc.method == 1:
        if w.idat is None:
            raise ScrubError("HEIF: an item is stored in idat but the meta box has no idat")
        lo, hi = w.idat.body, w.idat.end
    elif loc.method == 0:
        lo, hi = 0, n
    else:
        raise ScrubError(f"HEIF: unknown iloc construction method {loc.method}")
    out = []
    for off, length in loc.extents:
        a = lo + loc.base + off
        b = hi if length == 0 else a + length
        if a > hi or b > hi:
            raise ScrubError("HEIF: an iloc extent points outside the file")
        if loc.method == 0 and not any(m.body <= a and b <= m.end for m in w.mdats):
            raise ScrubError("HEIF: an item's data lies outside every mdat box")
        out.append((a, b))
    return out


def _clean_items(w: _Walk, items: dict[int, _Item], locs: dict[int, _Loc]) -> None:
    buf = w.data
    placed: list[tuple[int, int, str]] = []  # (start, end, kind)
    item_ranges: list[tuple[_Item | None, str, int, list[tuple[int, int]]]] = []
    for item_id, loc in locs.items():
        item = items.get(item_id)
        kind = _kind(item)
        rngs = _ranges(w, loc, kind)
        if rngs is None:
            continue
        placed += [(a, b, kind) for a, b in rngs]
        item_ranges.append((item, kind, item_id, rngs))

    # Overlaps: metadata bytes shared with anything else cannot be blanked safely.
    placed.sort()
    cluster_end, cluster_meta, cluster_size = -1, False, 0
    for a, b, kind in placed:
        if a < cluster_end:
            cluster_size += 1
            cluster_meta = cluster_meta or kind != "image"
            cluster_end = max(cluster_end, b)
        else:
            cluster_end, cluster_meta, cluster_size = b, kind != "image", 1
        if cluster_size > 1 and cluster_meta and a < b:
            raise ScrubError("HEIF: a metadata item's data overlaps another item's data")

    # Bytes in mdat/idat that no item uses (leftovers, hidden payloads) become zeros.
    containers = list(w.mdats) + ([w.idat] if w.idat is not None else [])
    for box in containers:
        pos = box.body
        for a, b, _ in placed:
            if b <= box.body or a >= box.end:
                continue
            if a > pos:
                _zero_gap(w, pos, a)
            pos = max(pos, b)
        if pos < box.end:
            _zero_gap(w, pos, box.end)

    for item, kind, item_id, rngs in item_ranges:
        if kind == "image":
            continue
        old = b"".join(bytes(buf[a:b]) for a, b in rngs)
        total = len(old)
        if kind == "exif":
            new = neutral_exif(total)
            if old != new:
                tags, values = _exif_tags(old, w.options)
                w.findings.remove("HEIF Exif item", rngs[0][0] if rngs else 0, total, tags, values=values)
        elif kind == "xmp":
            new = neutral_xmp(total)
            if item is not None and item.encoding_span is not None:
                s, e = item.encoding_span
                w.out[s:e] = bytes(e - s)
            if old != new:
                w.findings.remove("HEIF XMP item", rngs[0][0] if rngs else 0, total, xmp_property_names(old))
        else:
            new = bytes(total)
            if old != new:
                label = printable_type(item.type) if item is not None else "orphan"
                w.findings.remove(f"HEIF {label} item", rngs[0][0] if rngs else 0, total)
        k = 0
        for a, b in rngs:
            w.out[a:b] = new[k:k + b - a]
            k += b - a


def _zero_gap(w: _Walk, a: int, b: int) -> None:
    if not all_zero(w.data, a, b):
        w.findings.remove("HEIF unreferenced mdat data", a, b - a)
        w.out[a:b] = bytes(b - a)


def _exif_tags(payload: bytes, options: ScrubOptions) -> tuple[list[str], list[tuple[str, str]]]:
    at = -1
    if len(payload) >= 4:
        declared = 4 + int.from_bytes(payload[:4], "big")
        if payload[declared:declared + 4] in (b"II*\0", b"MM\0*"):
            at = declared
    if at < 0:
        at = find_tiff_header(payload)
    if at < 0:
        return [], []
    summary = read_tiff(payload[at:], collect_values=options.collect_values)
    values = [(e.name, e.value) for e in summary.entries if e.value is not None] if options.collect_values else []
    return list(summary.names), values
