"""PNG (and APNG) walker: keep the rendering chunks, neutralise every other chunk in place.

Why chunk surgery and not a re-save: PNG chunks are length-delimited and each carries
its own CRC, so a chunk can be renamed to a private ancillary type (`skIp`: lower,
lower, UPPER, lower = ancillary, private, reserved-bit clear, safe-to-copy), zero-filled
and re-checksummed without moving a single later byte.  Decoders skip unknown ancillary
chunks by rule, so pixels, palette, transparency and animation are untouched.

Orientation: PNG readers take it from an `eXIf` chunk and (Pillow) from XMP
`tiff:Orientation` when the eXIf has none.  We keep it only as a *fresh* minimal TIFF
(`engine.exif.minimal_tiff`) written into the chunk that carried it, so its position
relative to IDAT (which some readers care about) does not change.  Orientation found only
in an ImageMagick "Raw profile type exif" is not kept: no browser or Pillow honours it.

Damage policy (we never re-encode, so we never "repair" image data):
* a kept critical chunk (IHDR, PLTE, IDAT, IEND) or animation chunk (acTL, fcTL, fdAT:
  dropping one would desynchronise the frame sequence) with a bad CRC or size, an unknown
  critical chunk, a chunk running past the end, or no IEND -> ScrubError;
* a kept *ancillary* chunk with a bad CRC or an impossible size is neutralised, which is
  what libpng does with it anyway (discard), so rendering does not change;
* our own padding (`skIp`, all-zero payload) and our own minimal eXIf are recognised and
  left alone, so scrub(scrub(x)) == scrub(x) byte for byte and reports nothing new.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

from .. import icc
from ..errors import ScrubError
from ..exif import MINIMAL_TIFF_LEN, find_tiff_header, minimal_tiff, read_tiff, valid_orientation
from ..report import Findings, ScrubOptions
from ..xmp import xmp_orientation, xmp_property_names
from .._bytes import all_zero

SIGNATURE = b"\x89PNG\r\n\x1a\n"
PAD_TYPE = b"skIp"
MAX_CHUNK_LEN = 0x7FFFFFFF  # PNG: lengths are 31-bit
XMP_KEYWORD = b"XML:com.adobe.xmp"

#: Chunks needed to render (always kept).  iCCP is added when options.keep_icc.
RENDER_CHUNKS = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB",
                           b"cICP", b"sBIT", b"acTL", b"fcTL", b"fdAT", b"pHYs", b"bKGD"})

# Fixed or bounded payload sizes of kept ancillary chunks.  A kept chunk of the wrong size
# could smuggle text; libpng ignores such chunks anyway ("invalid length"), so we drop them.
_ANCILLARY_SIZES: dict[bytes, frozenset[int]] = {
    b"gAMA": frozenset({4}), b"cHRM": frozenset({32}), b"sRGB": frozenset({1}),
    b"cICP": frozenset({4}), b"sBIT": frozenset({1, 2, 3, 4}), b"acTL": frozenset({8}),
    b"fcTL": frozenset({26}), b"pHYs": frozenset({9}), b"bKGD": frozenset({1, 2, 6}),
    b"tRNS": frozenset(range(1, 257)),
}
# Chunks whose loss would change the image structurally: corrupt ones fail the scrub.
_STRUCTURAL = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"acTL", b"fcTL", b"fdAT"})
_RAW_PROFILE = re.compile(rb"^Raw profile type (\S+)$", re.I)
_MAX_KEYWORD = 79
_VALUE_LIMIT = 200


@dataclass(slots=True)
class _Chunk:
    offset: int       # of the length field
    length: int       # payload length
    ctype: bytes
    crc_ok: bool

    @property
    def data_start(self) -> int:
        return self.offset + 8

    @property
    def end(self) -> int:
        return self.offset + 12 + self.length


def _crc(ctype: bytes, data: bytes | bytearray | memoryview) -> bytes:
    return struct.pack(">I", zlib.crc32(data, zlib.crc32(ctype)) & 0xFFFFFFFF)


def _parse(data: bytes, options: ScrubOptions) -> tuple[list[_Chunk], int]:
    """Walk the chunk list up to IEND; return the chunks and the offset just after IEND."""
    if data[:8] != SIGNATURE:
        raise ScrubError("PNG: the file does not start with the PNG signature")
    chunks: list[_Chunk] = []
    pos = 8
    n = len(data)
    while True:
        if len(chunks) >= options.max_structures:
            raise ScrubError(f"PNG has more than {options.max_structures} chunks; refusing to walk it")
        if pos == n:
            raise ScrubError("PNG is truncated: it ends without an IEND chunk")
        if pos + 12 > n:
            raise ScrubError("PNG is truncated: the last chunk header is cut off")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if length > MAX_CHUNK_LEN:
            raise ScrubError("PNG chunk declares an impossible length (corrupt file)")
        if not all(65 <= b <= 90 or 97 <= b <= 122 for b in ctype):
            raise ScrubError("PNG chunk type is not four letters (corrupt file)")
        end = pos + 12 + length
        if end > n:
            raise ScrubError("PNG is truncated: a chunk runs past the end of the file")
        crc_ok = data[end - 4:end] == _crc(ctype, memoryview(data)[pos + 8:end - 4])
        chunk = _Chunk(pos, length, ctype, crc_ok)
        if not chunks and ctype != b"IHDR":
            raise ScrubError("PNG does not start with an IHDR chunk (unsupported or corrupt file)")
        chunks.append(chunk)
        pos = end
        if ctype == b"IEND":
            return chunks, pos


# --- reading what a chunk holds (for the report only) ------------------------------------


@dataclass(slots=True)
class _Budget:
    """Bytes we may still inflate for this whole file (not per chunk), so thousands of
    small compressed text chunks cannot add up to a decompression bomb."""
    left: int


def _inflate(blob: bytes, budget: _Budget) -> bytes | None:
    """Bounded zlib decompression; None when the stream is broken or the budget is spent."""
    if budget.left <= 0:
        return None
    try:
        out = zlib.decompressobj().decompress(blob, budget.left)
    except zlib.error:
        return None
    budget.left -= len(out)
    return out


def _keyword(payload: bytes) -> tuple[bytes | None, int]:
    """(keyword, index after its NUL) or (None, 0) when there is no valid terminator."""
    nul = payload.find(b"\0", 0, _MAX_KEYWORD + 1)
    if nul <= 0:
        return None, 0
    return payload[:nul], nul + 1


def _safe_name(raw: bytes) -> str:
    text = raw.decode("latin-1")
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:_MAX_KEYWORD]


def _printable(text: bytes) -> str:
    s = text[:_VALUE_LIMIT].decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else " " for ch in s)


@dataclass(slots=True)
class _TextInfo:
    keyword: bytes | None
    text: bytes | None     # decompressed (bounded) text, None if unreadable


def _read_text_chunk(ctype: bytes, payload: bytes, budget: _Budget) -> _TextInfo:
    kw, i = _keyword(payload)
    if kw is None:
        return _TextInfo(None, None)
    if ctype == b"tEXt":
        return _TextInfo(kw, payload[i:])
    if ctype == b"zTXt":
        if i >= len(payload) or payload[i] != 0:
            return _TextInfo(kw, None)
        return _TextInfo(kw, _inflate(payload[i + 1:], budget))
    # iTXt: flag, method, language\0, translated keyword\0, text
    if i + 2 > len(payload):
        return _TextInfo(kw, None)
    flag, method = payload[i], payload[i + 1]
    j = payload.find(b"\0", i + 2)
    k = payload.find(b"\0", j + 1) if j >= 0 else -1
    if k < 0:
        return _TextInfo(kw, None)
    body = payload[k + 1:]
    if flag == 1:
        return _TextInfo(kw, _inflate(body, budget) if method == 0 else None)
    return _TextInfo(kw, body)


def _raw_profile(text: bytes, limit: int) -> bytes | None:
    """Decode an ImageMagick "Raw profile type X" body: "\\nname\\n   length\\nhex...\"."""
    lines = text.lstrip(b"\n").split(b"\n", 2)
    if len(lines) < 3:
        return None
    try:
        declared = int(lines[1].strip())
    except ValueError:
        return None
    want = 2 * max(0, min(declared, limit))
    # ImageMagick wraps the hex at 72 columns: 3 * want bytes of text are plenty.
    hexdigits = re.sub(rb"\s+", b"", lines[2][: 3 * want + 64])[:want]
    try:
        return bytes.fromhex(hexdigits.decode("ascii"))
    except ValueError:
        return None


# IPTC IIM record 2 datasets worth naming in a report (ExifTool names).
_IPTC_NAMES = {
    5: "ObjectName", 15: "Category", 25: "Keywords", 40: "SpecialInstructions", 55: "DateCreated",
    60: "TimeCreated", 62: "DigitalCreationDate", 63: "DigitalCreationTime",
    65: "OriginatingProgram", 80: "By-line", 85: "By-lineTitle", 90: "City", 92: "Sub-location",
    95: "Province-State", 100: "Country-PrimaryLocationCode", 101: "Country-PrimaryLocationName",
    105: "Headline", 110: "Credit", 115: "Source", 116: "CopyrightNotice", 118: "Contact",
    120: "Caption-Abstract", 122: "Writer-Editor",
}


def _iptc_names(blob: bytes) -> list[str]:
    """Dataset names in an IPTC IIM stream (raw, or inside a Photoshop IRB)."""
    names: dict[str, None] = {}
    i = min((k for k in (blob.find(b"\x1c\x01"), blob.find(b"\x1c\x02")) if k >= 0), default=-1)
    steps = 0
    while 0 <= i and i + 5 <= len(blob) and blob[i] == 0x1C and steps < 4096:
        record, dataset, size = blob[i + 1], blob[i + 2], int.from_bytes(blob[i + 3:i + 5], "big")
        if size & 0x8000:  # extended-length dataset: rare, stop rather than guess
            break
        if record == 2 and dataset in _IPTC_NAMES:
            names.setdefault(_IPTC_NAMES[dataset], None)
        i += 5 + size
        steps += 1
    return list(names) or ["IPTC"]


def _text_tags(info: _TextInfo, options: ScrubOptions) -> tuple[list[str], list[tuple[str, str]]]:
    if info.keyword is None:
        return ["<malformed text chunk>"], []
    name = _safe_name(info.keyword)
    tags = [name]
    values: list[tuple[str, str]] = []
    text = info.text
    if text is None:
        return tags, values
    m = _RAW_PROFILE.match(info.keyword)
    if info.keyword == XMP_KEYWORD:
        tags += xmp_property_names(text)
    elif m:
        kind = m.group(1).lower()
        blob = _raw_profile(text, options.max_inflate_bytes)
        if blob is not None and kind in (b"exif", b"app1"):
            off = find_tiff_header(blob)
            if off >= 0:
                summary = read_tiff(blob[off:], collect_values=options.collect_values)
                tags += summary.names
                if options.collect_values:
                    values += [(e.name, e.value) for e in summary.entries if e.value is not None]
        elif blob is not None and kind == b"xmp":
            tags += xmp_property_names(blob)
        elif kind in (b"iptc", b"8bim"):
            tags += _iptc_names(blob) if blob is not None else ["IPTC"]
    elif options.collect_values:
        values.append((name, _printable(text)))
    return tags, values


def _exif_block(payload: bytes) -> bytes | None:
    """The TIFF inside an eXIf payload (normally at 0; some writers prefix `Exif\\0\\0`)."""
    for off in (0, 6):
        if payload[off:off + 4] in (b"II*\0", b"MM\0*"):
            return payload[off:]
    return None


def _is_our_exif(payload: bytes) -> int | None:
    """Orientation if this payload is exactly what we write (minimal TIFF + zeros)."""
    for o in range(2, 9):
        head = minimal_tiff(o)
        if payload[:len(head)] == head and all_zero(payload, len(head)):
            return o
    return None


# --- the walk -----------------------------------------------------------------------------


def scrub(data: bytes, options: ScrubOptions, findings: Findings) -> bytes:
    """Rewrite a PNG so it holds only rendering chunks (plus our padding / minimal eXIf)."""
    chunks, iend_end = _parse(data, options)
    keep = set(RENDER_CHUNKS)
    if options.keep_icc:
        keep.add(b"iCCP")

    if not any(c.ctype == b"IDAT" for c in chunks):
        raise ScrubError("PNG has no IDAT chunk (no image data)")
    ihdr = chunks[0]
    if ihdr.length != 13 or not ihdr.crc_ok:
        raise ScrubError("PNG IHDR chunk is corrupt")

    # Where kept chunks stand and how often they occur decides whether they are what
    # they claim (e.g. an fdAT in a file that is not animated is no frame data).
    misplaced = _placement(data, chunks)
    notes: dict[int, str] = {}

    # Pass 1: classify.  action: "keep", "pad" (already our padding), "drop" (neutralise).
    actions: list[str] = []
    exif_orientation: int | None = None   # Orientation tag of the (first) eXIf, if it has one
    exif_index: int | None = None
    xmp_orient: tuple[int, int] | None = None  # (chunk index, orientation) from XMP
    budget = _Budget(options.max_inflate_bytes)
    texts: dict[int, _TextInfo] = {}  # XMP chunks already read in pass 1
    mv = memoryview(data)
    for idx, c in enumerate(chunks):
        payload = mv[c.data_start:c.data_start + c.length]
        if c.ctype in keep:
            structural = c.ctype in _STRUCTURAL
            if not c.crc_ok:
                if structural:
                    raise ScrubError(f"PNG {c.ctype.decode()} chunk has a bad checksum (corrupt file)")
                actions.append("drop")  # libpng discards ancillary chunks with bad CRCs
                continue
            sizes = _ANCILLARY_SIZES.get(c.ctype)
            if sizes is not None and c.length not in sizes:
                if structural:
                    raise ScrubError(f"PNG {c.ctype.decode()} chunk has an invalid size (corrupt file)")
                actions.append("drop")
                continue
            if c.ctype == b"fdAT" and c.length < 4:
                raise ScrubError("PNG fdAT chunk is too short (corrupt file)")
            if c.ctype == b"PLTE" and (c.length % 3 or c.length > 768 or c.length == 0):
                raise ScrubError("PNG palette (PLTE) has an invalid size (corrupt file)")
            if c.ctype == b"IEND" and not all_zero(payload):
                actions.append("iend")
                continue
            why = misplaced.get(idx)
            if why is None and c.ctype == b"iCCP" and not _icc_chunk_ok(payload, options):
                why = "<not an ICC profile>"
            if why is not None:
                notes[idx] = why
                actions.append("drop")
                continue
            actions.append("keep")
            continue
        if c.ctype[0] < 97:  # unknown critical chunk: a decoder must fail, so must we
            raise ScrubError(f"PNG has an unknown critical chunk {_safe_name(c.ctype)!r}; cannot clean it")
        if c.ctype == PAD_TYPE and all_zero(payload):
            actions.append("pad")
            continue
        actions.append("drop")
        if c.ctype == b"eXIf" and exif_index is None:
            exif_index = idx
            tiff = _exif_block(bytes(payload))
            if tiff is not None:
                summary = read_tiff(tiff)
                if any(e.ifd == "IFD0" and e.tag == 0x0112 for e in summary.entries):
                    exif_orientation = summary.orientation if summary.orientation is not None else 0
        elif (c.ctype in (b"tEXt", b"zTXt", b"iTXt") and xmp_orient is None
              and bytes(payload[:len(XMP_KEYWORD) + 1]) == XMP_KEYWORD + b"\0"):
            info = texts[idx] = _read_text_chunk(c.ctype, bytes(payload), budget)
            if info.text is not None:
                o = xmp_orientation(info.text)
                if o is not None:
                    xmp_orient = (idx, o)

    # Orientation as readers see it: eXIf's tag wins when present (even if it is 1 or
    # invalid); otherwise XMP tiff:Orientation (Pillow's rule).
    orientation: int | None = None
    source: int | None = None
    if exif_orientation is not None:
        orientation, source = valid_orientation(exif_orientation), exif_index
    elif xmp_orient is not None:
        orientation, source = valid_orientation(xmp_orient[1]), xmp_orient[0]
    host: int | None = None
    if orientation is not None and options.keep_orientation:
        host = _pick_host(chunks, actions, source, exif_index)
        if host is None:
            raise ScrubError("PNG: no room to keep the orientation in place (eXIf chunk too small)")

    # Pass 2: write.  The output is assembled once with b"".join: kept chunks (IDAT above
    # all) are memoryview slices of the input, so their bytes are copied exactly once.
    out = _Out(mv, options.preserve_length)
    for idx, c in enumerate(chunks):
        action = actions[idx]
        if action == "keep":
            _note_kept(c.ctype, findings)
            if c.ctype == b"iCCP":
                kw, _ = _keyword(bytes(mv[c.data_start:c.data_start + _MAX_KEYWORD + 1]))
                assert kw is not None  # checked by _icc_chunk_ok
                if kw != neutral_profile_name(len(kw)):
                    # the profile's name is free text a writer chose; the name no decoder
                    # uses is replaced by a neutral one of the same length
                    findings.remove("ICC profile name", c.offset, c.end - c.offset, ["ProfileName"])
                    body = neutral_profile_name(len(kw)) + data[c.data_start + len(kw):c.data_start + c.length]
                    chunk = struct.pack(">I", c.length) + b"iCCP" + body + _crc(b"iCCP", body)
                    _put(out, c, chunk, options)
                    continue
            if not options.preserve_length:
                out.pieces.append(mv[c.offset:c.end])
            continue
        payload = data[c.data_start:c.data_start + c.length]
        if action == "pad":
            if not options.preserve_length:
                continue
            if not c.crc_ok:
                out.replace(c.end - 4, c.end, _crc(PAD_TYPE, payload))
            continue
        if action == "iend":
            findings.remove("PNG IEND data", c.offset, c.end - c.offset)
            chunk = struct.pack(">I", c.length if options.preserve_length else 0) + b"IEND"
            chunk += bytes(c.length if options.preserve_length else 0)
            chunk += _crc(b"IEND", chunk[8:])
            _put(out, c, chunk, options)
            continue
        # "drop": neutralise, maybe as the orientation host.
        if idx == host:
            assert orientation is not None
            if c.ctype == b"eXIf" and _is_our_exif(payload) == orientation:
                findings.keep("orientation", f"minimal eXIf, value {orientation}")
                if options.preserve_length:
                    if not c.crc_ok:
                        out.replace(c.end - 4, c.end, _crc(b"eXIf", payload))
                    continue
            else:
                _report(c, payload, options, findings, budget, texts.get(idx), notes.get(idx))
                findings.keep("orientation", f"minimal eXIf, value {orientation}")
            tiff = minimal_tiff(orientation)
            body = tiff + bytes(c.length - len(tiff)) if options.preserve_length else tiff
            chunk = struct.pack(">I", len(body)) + b"eXIf" + body + _crc(b"eXIf", body)
            _put(out, c, chunk, options)
            continue
        _report(c, payload, options, findings, budget, texts.get(idx), notes.get(idx))
        if options.preserve_length:
            _put(out, c, struct.pack(">I", c.length) + PAD_TYPE + bytes(c.length)
                 + _crc(PAD_TYPE, bytes(c.length)), options)

    if options.preserve_length:
        out.replace(iend_end, iend_end, b"")  # the rest of the input up to IEND's end
    tail = len(data) - iend_end
    if tail:
        if not all_zero(data, iend_end):
            findings.remove("data after IEND", iend_end, tail)
        if options.preserve_length:
            out.pieces.append(bytes(tail))
    if host is not None and source is not None:
        # the Orientation written back into the minimal eXIf was kept, not removed
        findings.kept_from(chunks[source].offset, "Orientation")
    return b"".join(out.pieces)


class _Out:
    """Output pieces.  With preserve_length every input byte before `cursor` is in
    `pieces` (verbatim as a view, or replaced by bytes of the same length)."""

    __slots__ = ("view", "pieces", "cursor")

    def __init__(self, view: memoryview, preserve_length: bool) -> None:
        self.view = view
        self.pieces: list[bytes | memoryview] = [] if preserve_length else [SIGNATURE]
        self.cursor = 0

    def replace(self, start: int, end: int, new: bytes) -> None:
        """Keep the input up to `start`, then put `new` where input[start:end] was."""
        if start > self.cursor:
            self.pieces.append(self.view[self.cursor:start])
        if new:
            self.pieces.append(new)
        self.cursor = end


def _put(out: _Out, c: _Chunk, chunk: bytes, options: ScrubOptions) -> None:
    if options.preserve_length:
        assert len(chunk) == c.end - c.offset
        out.replace(c.offset, c.end, chunk)
    else:
        out.pieces.append(chunk)


_IMAGE_DATA_STEP = 1 << 20

# Kept ancillary chunks that count once and only before the image data (and, for the
# colour-space ones, before the palette): libpng ignores a second copy or one out of
# place ("duplicate", "out of place"), so each extra copy would be free bytes riding
# along - a few bytes each, but a file may hold thousands of them.
_ONCE_BEFORE_IDAT = frozenset({b"gAMA", b"cHRM", b"sRGB", b"cICP", b"sBIT", b"pHYs", b"bKGD",
                               b"tRNS", b"iCCP", b"acTL"})
_BEFORE_PLTE = frozenset({b"gAMA", b"cHRM", b"sRGB", b"cICP", b"sBIT", b"iCCP"})

# Sizes that depend on the IHDR colour type (PNG 3rd ed. §11.3): 0 grey, 2 truecolour,
# 3 indexed, 4 grey+alpha, 6 truecolour+alpha.  libpng ignores these chunks at any other
# size ("invalid"), so dropping them changes nothing a decoder shows.
_SIZE_BY_COLOUR: dict[bytes, dict[int, int]] = {
    b"tRNS": {0: 2, 2: 6},            # type 3: 1..palette entries; types 4/6: not allowed
    b"bKGD": {0: 2, 4: 2, 2: 6, 6: 6, 3: 1},
    b"sBIT": {0: 1, 2: 3, 3: 3, 4: 2, 6: 4},
}


def _size_fits(ctype: bytes, length: int, colour_type: int, palette: int) -> bool:
    if ctype == b"tRNS" and colour_type == 3:
        return 1 <= length <= palette
    return _SIZE_BY_COLOUR[ctype].get(colour_type) == length


def _placement(data: bytes, chunks: list[_Chunk]) -> dict[int, str]:
    """Kept-type chunks that stand where no decoder uses them: index -> why.

    Refused outright (a decoder fails, or decoders disagree on what they show): a
    second PLTE or tRNS, PLTE after the image data, and image data split by another
    chunk unless its zlib stream was already complete before the gap.  Neutralised
    (decoders ignore them, so the picture does not change): a second copy of a kept
    ancillary chunk, one after the image data, a colour-space chunk after the palette,
    fcTL/fdAT without an acTL before the image data (the file is not animated), and
    IDAT after a complete image data stream.
    """
    first = next(i for i, c in enumerate(chunks) if c.ctype == b"IDAT")
    run_end = first
    while run_end < len(chunks) and chunks[run_end].ctype == b"IDAT":
        run_end += 1
    animated = any(c.ctype == b"acTL" for c in chunks[:first])
    colour_type = data[chunks[0].data_start + 9]
    palette = next((c.length // 3 for c in chunks if c.ctype == b"PLTE"), 0)
    out: dict[int, str] = {}
    seen: set[bytes] = set()
    stray: list[int] = []
    for idx, c in enumerate(chunks):
        t = c.ctype
        if t == b"IDAT" and idx >= run_end:
            stray.append(idx)
        elif t in (b"PLTE", b"tRNS") and t in seen:
            raise ScrubError(f"PNG has more than one {t.decode()} chunk; decoders disagree on which applies")
        elif t == b"PLTE" and idx > first:
            raise ScrubError("PNG palette (PLTE) comes after the image data (corrupt file)")
        elif t in _ONCE_BEFORE_IDAT and idx > first:
            out[idx] = "<after image data>"
        elif t in _ONCE_BEFORE_IDAT and t in seen:
            out[idx] = "<second copy>"
        elif t in _BEFORE_PLTE and b"PLTE" in seen:
            out[idx] = "<after the palette>"
        elif t in (b"fcTL", b"fdAT") and not animated:
            out[idx] = "<not animated>"
        elif t == b"PLTE" and colour_type != 3:
            # a suggested palette (truecolour) or a forbidden one (greyscale): no decoder
            # draws with it, and its 3n bytes are free-form
            out[idx] = "<not used by this colour type>"
        elif t in _SIZE_BY_COLOUR and not _size_fits(t, c.length, colour_type, palette):
            out[idx] = "<wrong size for the colour type>"
        seen.add(t)
    if stray:
        if not _stream_complete(data, chunks[first:run_end], _raw_size_bound(data, chunks[0])):
            raise ScrubError("PNG image data (IDAT) is split by other chunks; cannot tell which "
                             "bytes are part of the picture")
        for idx in stray:
            out[idx] = "<after image data>"
    return out


def _raw_size_bound(data: bytes, ihdr: _Chunk) -> int:
    """An upper bound on the inflated image data IHDR allows (filter byte per row, an
    interlaced image at most doubles it), so a bomb in IDAT cannot run unbounded."""
    width, height, depth, colour = struct.unpack_from(">IIBB", data, ihdr.data_start)
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 4)
    row = 1 + (width * channels * max(depth, 1) + 7) // 8
    return 2 * height * row + (1 << 16)


def _stream_complete(data: bytes, run: list[_Chunk], bound: int) -> bool:
    """Does the zlib stream in this IDAT run end exactly at the run's end?

    Inflated in bounded steps and thrown away (nothing is re-encoded; this only tells
    whether a later IDAT can matter to a decoder), and never beyond `bound` bytes (more
    than the image can hold: not an answer we need).  Only called for files whose
    image data is split, so ordinary files never pay for it.
    """
    d = zlib.decompressobj()
    mv = memoryview(data)
    produced = 0
    for c in run:
        chunk = mv[c.data_start:c.data_start + c.length]
        if d.eof:
            if c.length:
                return False
            continue
        try:
            produced += len(d.decompress(chunk, _IMAGE_DATA_STEP))
            while d.unconsumed_tail and not d.eof and produced <= bound:
                produced += len(d.decompress(d.unconsumed_tail, _IMAGE_DATA_STEP))
        except zlib.error:
            return False
        if produced > bound:
            return False
        if d.eof and (d.unused_data or d.unconsumed_tail):
            return False
    return d.eof


def neutral_profile_name(length: int) -> bytes:
    """The iCCP profile name we leave: "ICC Profile" cut or padded with "_" to `length`
    bytes (what Pillow and macOS write at 11 bytes; never a leading or trailing space)."""
    name = (b"ICC Profile" + b"_" * _MAX_KEYWORD)[:length]
    return name[:-1] + b"_" if name.endswith(b" ") else name


def _icc_chunk_ok(payload: memoryview | bytes, options: ScrubOptions) -> bool:
    """An iCCP chunk: keyword, NUL, method 0, then one zlib stream that inflates (within
    `max_inflate_bytes`) to exactly one well-formed ICC profile and ends with the chunk."""
    raw = bytes(payload)
    kw, i = _keyword(raw)
    if kw is None or i >= len(raw) or raw[i] != 0:
        return False
    d = zlib.decompressobj()
    try:
        profile = d.decompress(raw[i + 1:], options.max_inflate_bytes)
    except zlib.error:
        return False
    if not d.eof or d.unused_data or d.unconsumed_tail:
        return False
    return icc.problem(profile) is None


def _pick_host(chunks: list[_Chunk], actions: list[str], source: int | None,
               exif_index: int | None) -> int | None:
    """Which neutralised chunk becomes the minimal eXIf: the one that carried the
    orientation, else the original eXIf, else any neutralised chunk big enough
    (before IDAT preferred, never between two image-data chunks)."""
    def fits(i: int | None) -> bool:
        return i is not None and actions[i] == "drop" and chunks[i].length >= MINIMAL_TIFF_LEN

    for cand in (source, exif_index):
        if fits(cand):
            return cand
    data_types = (b"IDAT", b"fdAT")
    ok = [i for i in range(1, len(chunks) - 1) if fits(i)
          and not (chunks[i - 1].ctype in data_types and chunks[i + 1].ctype in data_types)]
    first_idat = next(i for i, c in enumerate(chunks) if c.ctype == b"IDAT")
    before = [i for i in ok if i < first_idat]
    return (before or ok or [None])[0]


def _note_kept(ctype: bytes, findings: Findings) -> None:
    if ctype == b"iCCP":
        findings.keep("colour profile", "PNG iCCP")
    elif ctype == b"tRNS":
        findings.keep("transparency", "PNG tRNS")
    elif ctype == b"acTL":
        findings.keep("animation", "APNG acTL/fcTL/fdAT")


def _report(c: _Chunk, payload: bytes, options: ScrubOptions, findings: Findings, budget: _Budget,
            info: _TextInfo | None = None, note: str | None = None) -> None:
    """Record one neutralised chunk with the names (never values, unless asked) it held."""
    ctype = c.ctype
    length = c.end - c.offset
    tags: list[str] = []
    values: list[tuple[str, str]] = []
    if ctype in (b"tEXt", b"zTXt", b"iTXt"):
        if info is None:
            info = _read_text_chunk(ctype, payload, budget)
        tags, values = _text_tags(info, options)
        carrier = f"PNG {ctype.decode()}"
    elif ctype == b"eXIf":
        carrier = "PNG eXIf"
        tiff = _exif_block(payload)
        if tiff is not None:
            summary = read_tiff(tiff, collect_values=options.collect_values)
            tags = list(summary.names)
            if summary.has_thumbnail:
                tags.append("ThumbnailImage")
            if options.collect_values:
                values = [(e.name, e.value) for e in summary.entries if e.value is not None]
    elif ctype == b"tIME":
        carrier = "PNG tIME"
        tags = ["ModifyDate"]
        if options.collect_values and len(payload) == 7:
            y, mo, d, h, mi, s = struct.unpack(">HBBBBB", payload)
            values = [("ModifyDate", f"{y:04d}:{mo:02d}:{d:02d} {h:02d}:{mi:02d}:{s:02d}")]
    elif ctype == b"iCCP":
        carrier = "ICC profile"
        kw, _ = _keyword(payload)
        tags = ["ICC_Profile"] + ([note] if note else [])
        if kw and options.collect_values:
            values = [("ProfileName", _safe_name(kw))]
    elif ctype == b"caBX":
        carrier = "PNG caBX"
        tags = ["C2PA"]
    else:
        carrier = f"PNG {_safe_name(ctype)}"
        if note:
            tags = [note]
        elif not c.crc_ok or ctype in RENDER_CHUNKS:
            tags = ["<corrupt chunk>"]
    findings.remove(carrier, c.offset, length, tags, values=values)
