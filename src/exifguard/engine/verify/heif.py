"""Independent check of a cleaned HEIF/HEIC/AVIF file.

Passes only when:
* the top level holds ftyp (first), one meta, mdat, and free/skip boxes with zero
  payloads, followed by nothing but zeros;
* meta holds only the structural boxes, the handler is `pict` with a blank name;
* item entries carry no name (spaces only) and nothing after their fields; pitm, iloc,
  ipma, item references, data references and entity groups hold nothing after their
  fields (and no data reference names a location);
* every item property is one a renderer needs (ICC only with keep_icc, and only as a
  well-formed ICC profile);
* every item is a coded/derived image, or an Exif item holding exactly an empty TIFF
  and zeros, or an XMP item holding exactly the empty packet and spaces, or any other
  item whose payload is all zeros;
* every byte of mdat/idat that no item references is zero.
"""

from __future__ import annotations

from ..errors import ScrubError
from ..report import ScrubOptions
from . import _icc
from ._boxes import B, Counter, all_zero, top_level, type_code, u, walk

_PIXEL_ITEMS = {b"hvc1", b"hvt1", b"lhv1", b"av01", b"avc1", b"vvc1", b"vvi1", b"evc1", b"j2k1", b"jpeg",
                b"unci", b"mski", b"grid", b"iden", b"iovl", b"tmap"}
_META_CHILDREN = {b"hdlr", b"pitm", b"iinf", b"iloc", b"iref", b"iprp", b"idat", b"dinf", b"grpl",
                  b"free", b"skip"}
_PROPS = {b"hvcC", b"av1C", b"avcC", b"vvcC", b"lhvC", b"jpgC", b"j2kH", b"uncC", b"cmpd", b"cmpC", b"icef",
          b"ispe", b"pixi", b"colr", b"irot", b"imir", b"clap", b"pasp", b"auxC", b"rloc", b"lsel", b"a1op",
          b"a1lx", b"clli", b"mdcv", b"cclv", b"amve", b"reve", b"ndwt", b"oinf", b"tols", b"iscl", b"ccst",
          b"free", b"skip"}
_EMPTY_TIFF = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00" * 6
_EMPTY_XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>'


def _padding_ok(buf: bytes, box: B) -> None:
    if box.kind in (b"free", b"skip") and not all_zero(buf, box.payload, box.end):
        raise ScrubError(f"a '{box.kind.decode()}' box still holds data")


def _ftyp_brands_only(buf: bytes, ftyp: B) -> None:
    """ftyp = major brand, minor version, up to 32 compatible brands; brands alphanumeric."""
    body = buf[ftyp.payload:ftyp.end]
    if len(body) < 8 or len(body) % 4 or len(body) > 8 + 4 * 32:
        raise ScrubError("ftyp box is not a brand list")
    for k in [0] + list(range(8, len(body), 4)):
        brand = body[k:k + 4]
        if not all(c == 32 or chr(c).isalnum() and c < 128 for c in brand) or not brand.strip(b" "):
            raise ScrubError("ftyp box names a brand that is not a brand")


def verify(clean: bytes, options: ScrubOptions) -> None:
    buf = clean
    counter = Counter(options.max_structures)
    tops, tail = top_level(buf, counter)
    if not tops or tops[0].kind != b"ftyp":
        raise ScrubError("no leading ftyp box")
    _ftyp_brands_only(buf, tops[0])
    if not all_zero(buf, tail, len(buf)):
        raise ScrubError("bytes after the last box are not zero")
    metas = []
    mdats = []
    for box in tops:
        if box.kind == b"meta":
            metas.append(box)
        elif box.kind == b"mdat":
            mdats.append(box)
        elif box.kind in (b"free", b"skip"):
            _padding_ok(buf, box)
        elif box.kind != b"ftyp" or box is not tops[0]:
            raise ScrubError(f"top-level box '{type_code(box.kind)}' is not allowed here")
    if len(metas) != 1:
        raise ScrubError("not exactly one meta box")
    meta = metas[0]
    if buf[meta.payload] != 0:
        raise ScrubError("unexpected meta version")
    kids: dict[bytes, B] = {}
    for box in walk(buf, meta.payload + 4, meta.end, counter):
        if box.kind not in _META_CHILDREN:
            raise ScrubError(f"meta child '{type_code(box.kind)}' is not allowed")
        _padding_ok(buf, box)
        if box.kind not in (b"free", b"skip"):
            if box.kind in kids:
                raise ScrubError(f"duplicate meta child '{type_code(box.kind)}'")
            kids[box.kind] = box
    hdlr = kids.get(b"hdlr")
    if hdlr is None or buf[hdlr.payload + 8:hdlr.payload + 12] != b"pict":
        raise ScrubError("meta handler is not 'pict'")
    if not all_zero(buf, min(hdlr.payload + 24, hdlr.end), hdlr.end):
        raise ScrubError("handler name not blank")
    if not all_zero(buf, hdlr.payload + 4, min(hdlr.payload + 8, hdlr.end)) \
            or not all_zero(buf, min(hdlr.payload + 12, hdlr.end), hdlr.end):
        raise ScrubError("handler pre_defined or reserved fields are not zero")
    _nothing_after_fields(buf, kids, counter)
    if b"iprp" in kids:
        _check_properties(buf, kids[b"iprp"], counter, options)
    types, encoded = _item_types(buf, kids.get(b"iinf"), counter)
    idat = kids.get(b"idat")
    extents = _item_extents(buf, kids.get(b"iloc"), idat, counter)

    covered: list[tuple[int, int]] = []
    for item_id, spans in extents.items():
        kind, ctype = types.get(item_id, (b"", b""))
        if spans is None:
            if kind in _PIXEL_ITEMS:
                continue
            raise ScrubError("a non-image item is stored where it cannot be checked")
        covered += spans
        if kind in _PIXEL_ITEMS:
            continue
        payload = b"".join(buf[a:b] for a, b in spans)
        if kind == b"Exif":
            ok = (payload[:4] == b"\0\0\0\0" and payload[4:18] == _EMPTY_TIFF and all_zero(payload, 18)) \
                if len(payload) >= 18 else all_zero(payload)
            if not ok:
                raise ScrubError("an Exif item holds more than an empty TIFF")
        elif kind == b"mime" and ctype == b"application/rdf+xml":
            if item_id in encoded:
                raise ScrubError("an XMP item still declares a content encoding")
            body = payload[len(_EMPTY_XMP):] if payload.startswith(_EMPTY_XMP) else payload
            if body.strip(b" "):
                raise ScrubError("an XMP item holds more than the empty packet")
        elif not all_zero(payload):
            raise ScrubError("a non-image item still holds data")

    covered.sort()
    for box in mdats + ([idat] if idat is not None else []):
        at = box.payload
        for a, b in covered:
            if b <= box.payload or a >= box.end:
                continue
            if a > at and not all_zero(buf, at, a):
                raise ScrubError("unreferenced bytes in mdat/idat are not zero")
            at = max(at, b)
        if at < box.end and not all_zero(buf, at, box.end):
            raise ScrubError("unreferenced bytes in mdat/idat are not zero")


def _check_properties(buf: bytes, iprp: B, counter: Counter, options: ScrubOptions) -> None:
    icc_at: set[int] = set()  # 1-based property positions holding an ICC profile
    maps: list[B] = []
    props_seen: list[tuple[int, bytes]] = []
    for box in walk(buf, iprp.payload, iprp.end, counter):
        _padding_ok(buf, box)
        if box.kind == b"ipco":
            for n, prop in enumerate(walk(buf, box.payload, box.end, counter), start=1):
                if prop.kind not in _PROPS:
                    raise ScrubError(f"item property '{type_code(prop.kind)}' is not allowed")
                _padding_ok(buf, prop)
                _only_its_fields(buf, prop)
                props_seen.append((n, bytes(prop.kind)))
                if prop.kind == b"colr" and buf[prop.payload:prop.payload + 4] in (b"prof", b"rICC"):
                    if not options.keep_icc:
                        raise ScrubError("an ICC profile is left although keep_icc is off")
                    _icc.check(bytes(buf[prop.payload + 4:prop.end]), "HEIF colr")
                    icc_at.add(n)
        elif box.kind == b"ipma":
            maps.append(box)
        elif box.kind not in (b"free", b"skip"):
            raise ScrubError(f"iprp child '{type_code(box.kind)}' is not allowed")
    associated: set[int] = set()
    for m in maps:
        for props in _associations(buf, m, counter):
            associated |= props
            if len(icc_at & props) > 1:
                raise ScrubError("an image item has more than one ICC profile")
    for n, kind in props_seen:
        if kind not in (b"free", b"skip") and n not in associated:
            raise ScrubError(f"item property {n} ('{type_code(kind)}') belongs to no item")


_FIELD_BYTES = {b"ispe": 12, b"irot": 1, b"imir": 1, b"pasp": 8, b"clap": 32, b"clli": 4,
                b"mdcv": 24, b"a1op": 1, b"lsel": 2}


def _only_its_fields(buf: bytes, prop: B) -> None:
    """A fixed-layout property holds its fields and then only zeros; colr is one of the
    colour types (nclx, nclc, prof, rICC)."""
    body = buf[prop.payload:prop.end]
    if prop.kind == b"colr":
        kind = body[:4]
        if kind not in (b"nclx", b"nclc", b"prof", b"rICC"):
            raise ScrubError("a colr property of unknown type is left")
        used = {b"nclx": 11, b"nclc": 10}.get(kind)
    elif prop.kind == b"pixi":
        used = 5 + body[4] if len(body) >= 5 else None
    else:
        used = _FIELD_BYTES.get(prop.kind)
    if used is not None and not all_zero(body, used):
        raise ScrubError(f"property '{type_code(prop.kind)}' holds bytes after its fields")


def _associations(buf: bytes, ipma: B, counter: Counter) -> list[set[int]]:
    """The property positions each ipma entry associates with its item."""
    at, end = ipma.payload, ipma.end
    version, flags = u(buf, at, 1, end), u(buf, at + 1, 3, end)
    idlen, wide = (2 if version == 0 else 4), flags & 1
    entries = u(buf, at + 4, 4, end)
    counter.tick(entries)
    q = at + 8
    out = []
    for _ in range(entries):
        q += idlen
        n = u(buf, q, 1, end)
        q += 1
        counter.tick(n)
        step = 2 if wide else 1
        mask = 0x7FFF if wide else 0x7F
        out.append({u(buf, q + k * step, step, end) & mask for k in range(n)})
        q += n * step
    if not all_zero(buf, min(q, end), end):
        raise ScrubError("ipma holds bytes after its associations")
    return out


def _cstr_end(buf: bytes, at: int, end: int) -> int:
    k = buf.find(b"\0", at, end)
    return end if k < 0 else k + 1


def _nothing_after_fields(buf: bytes, kids: dict[bytes, B], counter: Counter) -> None:
    """pitm, iref entries, dref entries and entity groups hold their fields and then only
    zeros (iloc and ipma are checked where they are read)."""
    pitm = kids.get(b"pitm")
    if pitm is not None:
        used = 4 + (2 if buf[pitm.payload] == 0 else 4)
        if not all_zero(buf, min(pitm.payload + used, pitm.end), pitm.end):
            raise ScrubError("pitm holds bytes after the primary item ID")
    iref = kids.get(b"iref")
    if iref is not None:
        idlen = 2 if buf[iref.payload] == 0 else 4
        for ref in walk(buf, iref.payload + 4, iref.end, counter):
            n = u(buf, ref.payload + idlen, 2, ref.end)
            if not all_zero(buf, min(ref.payload + idlen + 2 + n * idlen, ref.end), ref.end):
                raise ScrubError("an item reference holds bytes after its IDs")
    dinf = kids.get(b"dinf")
    if dinf is not None:
        for box in walk(buf, dinf.payload, dinf.end, counter):
            if box.kind in (b"free", b"skip"):
                _padding_ok(buf, box)
                continue
            if box.kind != b"dref":
                raise ScrubError("dinf holds something other than a dref")
            for entry in walk(buf, box.payload + 8, box.end, counter):
                if not all_zero(buf, min(entry.payload + 4, entry.end), entry.end):
                    raise ScrubError("a data reference names a location")
    grpl = kids.get(b"grpl")
    if grpl is not None:
        for group in walk(buf, grpl.payload, grpl.end, counter):
            n = u(buf, group.payload + 8, 4, group.end)
            counter.tick(n)
            if not all_zero(buf, min(group.payload + 12 + 4 * n, group.end), group.end):
                raise ScrubError("an entity group holds bytes after its entity IDs")


def _blank_text(buf: bytes, a: int, b: int) -> None:
    """A C string the writer chose freely (item name, URI type) must be spaces only."""
    if buf[a:b].rstrip(b"\0").strip(b" "):
        raise ScrubError("an item entry still carries a name")


def _item_types(buf: bytes, iinf: B | None, counter: Counter) -> tuple[dict[int, tuple[bytes, bytes]], set[int]]:
    """item ID -> (type, mime content type); and the IDs whose content_encoding is not empty."""
    types: dict[int, tuple[bytes, bytes]] = {}
    encoded: set[int] = set()
    if iinf is None:
        return types, encoded
    ver = buf[iinf.payload]
    first = iinf.payload + (6 if ver == 0 else 8)
    for e in walk(buf, first, iinf.end, counter):
        if e.kind in (b"free", b"skip"):
            _padding_ok(buf, e)
            continue
        if e.kind != b"infe":
            raise ScrubError("unexpected box inside iinf")
        p, end = e.payload, e.end
        v = u(buf, p, 1, end)
        if v >= 2:
            idlen = 2 if v == 2 else 4
            item_id = u(buf, p + 4, idlen, end)
            q = p + 4 + idlen + 2
            kind = buf[q:q + 4]
            name_at = q + 4
        else:
            item_id = u(buf, p + 4, 2, end)
            kind = b"mime"
            name_at = p + 8
        q = _cstr_end(buf, name_at, end)
        _blank_text(buf, name_at, q)  # item name
        if kind == b"uri ":
            q_next = _cstr_end(buf, q, end)
            _blank_text(buf, q, q_next)  # URI type
            q = q_next
        ctype = b""
        if kind == b"mime":
            q2 = _cstr_end(buf, q, end)
            ctype = buf[q:q2].rstrip(b"\0").strip().lower()
            enc_end = _cstr_end(buf, q2, end)
            if buf[q2:enc_end].strip(b"\0"):
                encoded.add(item_id)
            q = enc_end
        if not all_zero(buf, q, end):
            raise ScrubError("an item entry holds data after its fields")
        if item_id in types:
            raise ScrubError("duplicate item ID")
        types[item_id] = (bytes(kind), bytes(ctype))
    return types, encoded


def _item_extents(buf: bytes, iloc: B | None, idat: B | None,
                  counter: Counter) -> dict[int, list[tuple[int, int]] | None]:
    """item ID -> absolute byte spans, or None when the data is elsewhere (method 2, other file)."""
    out: dict[int, list[tuple[int, int]] | None] = {}
    if iloc is None:
        return out
    end = iloc.end
    p = iloc.payload
    ver = u(buf, p, 1, end)
    if ver > 2:
        raise ScrubError("unknown iloc version")
    sizes = u(buf, p + 4, 1, end), u(buf, p + 5, 1, end)
    osz, lsz, bsz = sizes[0] >> 4, sizes[0] & 0xF, sizes[1] >> 4
    isz = sizes[1] & 0xF if ver else 0
    if any(s not in (0, 4, 8) for s in (osz, lsz, bsz, isz)):
        raise ScrubError("bad iloc field size")
    idsz = 4 if ver == 2 else 2
    q = p + 6
    count = u(buf, q, idsz, end)
    q += idsz
    counter.tick(count)
    for _ in range(count):
        item_id = u(buf, q, idsz, end)
        q += idsz
        method = 0
        if ver:
            method = u(buf, q, 2, end) & 0xF
            q += 2
        dref = u(buf, q, 2, end)
        base = u(buf, q + 2, bsz, end)
        q += 2 + bsz
        next_ = u(buf, q, 2, end)
        q += 2
        counter.tick(next_)
        if q + next_ * (isz + osz + lsz) > end:
            raise ScrubError("iloc entry cut short")
        spans: list[tuple[int, int]] | None = []
        if dref or method not in (0, 1) or (method == 1 and idat is None):
            spans = None
        lo, hi = (idat.payload, idat.end) if method == 1 and idat is not None else (0, len(buf))
        for _ in range(next_):
            off = u(buf, q + isz, osz, end)
            ln = u(buf, q + isz + osz, lsz, end)
            q += isz + osz + lsz
            if spans is None:
                continue
            a = lo + base + off
            b = hi if ln == 0 else a + ln
            if b > hi:
                raise ScrubError("an item extent points outside the file")
            spans.append((a, b))
        out[item_id] = spans
    if not all_zero(buf, min(q, end), end):
        raise ScrubError("iloc holds bytes after its entries")
    return out
