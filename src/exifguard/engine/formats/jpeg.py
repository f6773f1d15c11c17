"""JPEG walker: keep the marker segments a decoder needs, neutralise everything else.

The file is walked marker by marker from SOI to the first EOI, including the
segments between progressive scans.  After every SOS the entropy-coded data is
skipped (never decoded) up to the next real marker: `FF00` (byte stuffing),
`FFD0`-`FFD7` (restart markers) and runs of `FF` fill bytes do not end it.

Kept (metadata-carriers.md §2): SOI, DQT, DHT, DRI, DNL, one SOFn, SOS + scan data,
RSTn, EOI, DAC only in an arithmetic-coded frame (SOF9-11, 13-15: in a Huffman frame
it means nothing, so it is neutralised), the first APP14 `Adobe` (its first 12 payload
bytes; anything after them is zeroed), the first JFIF APP0 (thumbnail size and pixels
zeroed) and, when `keep_icc`, the ICC APP2 segments, but only when together they are
exactly one well-formed ICC profile (`engine.icc`); otherwise all are neutralised.
The first Exif APP1 becomes a fresh minimal Exif that holds only Orientation
(§3).  Everything else - other APPn, COM, JPEG extension markers, and every byte
after the first EOI - is neutralised:

* `preserve_length` (default): the segment keeps its 2-byte length, its marker
  becomes APP15 (`FFEF`, read by no decoder) and its payload is zeroed; the bytes
  after EOI are zero-filled.  Every offset stays valid.
* otherwise the segment (and the trailer) is dropped.

Kept structural segments must add up exactly to their declared length (a DQT is
whole tables, a DHT is counts plus symbols, SOF/SOS match their component counts),
so a "table" cannot serve as a roomy hiding place; a mismatch is refused.  Tables no
scan decodes with (never referenced, or redefined before use) and restart intervals
no scan uses are neutralised too: they render nothing but can hold free bytes.

Failure policy (fail closed, the caller gets a ScrubError and nothing else):

* a segment that runs past the end of the data, a missing end-of-image marker in
  the header, a second SOI, reserved marker codes (`FF01`-`FFBF`) and non-marker
  bytes where a marker must start are all rejected: libjpeg would skip such
  "extraneous bytes", so they could hide anything and we do not guess.
* one exception is accepted on purpose: scan data that simply runs to the end of
  the buffer without an EOI.  Truncated downloads look like that, the scan bytes
  are copied verbatim in every JPEG anyway, and any marker-like structure hidden
  in such a tail is parsed (and neutralised or rejected) like any other segment.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from .. import icc
from ..errors import ScrubError
from ..exif import find_tiff_header, minimal_tiff, read_tiff, valid_orientation
from ..report import Findings, ScrubOptions
from ..xmp import xmp_orientation, xmp_property_names
from .._bytes import all_zero

# Structure markers kept verbatim (SOFn without C4 DHT / C8 JPG / CC DAC, which are
# listed on their own).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_KEEP = _SOF | {0xC4, 0xCC, 0xDB, 0xDD}
_DNL = 0xDC
_DAC = 0xCC
_ARITH_SOF = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SOS = 0xDA
_EOI = 0xD9
_SOI = 0xD8
_APP0, _APP1, _APP2, _APP11, _APP13, _APP14, _APP15 = 0xE0, 0xE1, 0xE2, 0xEB, 0xED, 0xEE, 0xEF
_COM = 0xFE

EXIF_ID = b"Exif\0\0"
XMP_ID = b"http://ns.adobe.com/xap/1.0/\0"
EXT_XMP_ID = b"http://ns.adobe.com/xmp/extension/\0"
ICC_ID = b"ICC_PROFILE\0"
JFIF_ID = b"JFIF\0"
ADOBE_ID = b"Adobe"
ADOBE_LEN = 12  # "Adobe" + version(2) + flags0(2) + flags1(2) + transform(1)
JFIF_FIXED = 14  # "JFIF\0" + version(2) + units(1) + density(4) + thumb w/h(2)
JFIF_THUMB_DIMS = 12  # where the thumbnail width/height bytes start

# A real marker inside entropy-coded data: FF followed by anything but 00 (stuffing),
# D0-D7 (restart) or FF (fill; the last FF of a run is the one that matches).
# Measured against a `bytes.find(b"\xff")` loop: entropy data holds thousands of FF00
# pairs per MB (about 1,800 in noise, 4,700 in camera photos), one Python iteration
# each, so that loop is 1.5-3x slower than this search, which runs in C at ~3 GB/s.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")

# The smallest segment that can hold a minimal Exif with Orientation:
# marker(2) + length(2) + "Exif\0\0"(6) + TIFF(26).
MIN_EXIF_SEGMENT = 4 + len(EXIF_ID) + len(minimal_tiff(1))


def _err(msg: str) -> ScrubError:
    return ScrubError(f"JPEG {msg}", format="JPEG")


@dataclass(slots=True)
class _Walk:
    items: list[tuple[str, int, int, int]]
    """("seg", marker, start, end) or ("scan", 0, start, end) in file order."""
    eoi_end: int | None
    """One past the EOI marker, or None when scan data ran to the end of the buffer."""


def _walk(data: bytes, options: ScrubOptions) -> _Walk:
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != _SOI:
        raise _err("does not start with a start-of-image marker")
    items: list[tuple[str, int, int, int]] = [("seg", _SOI, 0, 2)]
    pos = 2
    count = 0
    while True:
        if pos >= n:
            raise _err("is truncated: no end-of-image marker")
        if data[pos] != 0xFF:
            raise _err(f"is corrupt: unexpected byte at offset {pos} where a marker should start")
        while pos + 1 < n and data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos + 1 >= n:
            raise _err("is truncated: no end-of-image marker")
        marker = data[pos + 1]
        count += 1
        if count > options.max_structures:
            raise _err(f"has more than {options.max_structures} marker segments; refusing to walk it")
        if marker == _EOI:
            items.append(("seg", _EOI, pos, pos + 2))
            return _Walk(items, pos + 2)
        if 0xD0 <= marker <= 0xD7:  # stray restart marker: standalone, harmless
            items.append(("seg", marker, pos, pos + 2))
            pos += 2
            continue
        if marker == _SOI:
            raise _err(f"is corrupt: a second start-of-image marker at offset {pos}")
        if marker < 0xC0:
            raise _err(f"is corrupt: reserved marker 0xFF{marker:02X} at offset {pos}")
        if pos + 4 > n:
            raise _err("is truncated inside a segment header")
        length = struct.unpack_from(">H", data, pos + 2)[0]
        if length < 2:
            raise _err(f"is corrupt: segment 0xFF{marker:02X} at offset {pos} has length {length}")
        end = pos + 2 + length
        if end > n:
            raise _err(f"is truncated: segment 0xFF{marker:02X} at offset {pos} declares "
                       f"{length} bytes but only {n - pos - 2} remain")
        items.append(("seg", marker, pos, end))
        pos = end
        if marker == _SOS:
            m = _NEXT_MARKER.search(data, pos)
            if m is None:  # scan data runs to the end: truncated download (accepted)
                items.append(("scan", 0, pos, n))
                return _Walk(items, None)
            items.append(("scan", 0, pos, m.start()))
            pos = m.start()


def _structure_ok(marker: int, payload: bytes) -> bool:
    """Is a kept structural segment exactly what it claims to be?

    Its contents must add up exactly to its declared length (a DQT is whole tables, a
    DHT is counts plus symbols, SOF/SOS match their component counts) and its table
    classes and ids must be ones a decoder accepts (libjpeg stops on any other).  A
    "table" therefore cannot serve as a roomy hiding place for text.
    """
    n = len(payload)
    if marker in _SOF:
        return n >= 6 and payload[5] >= 1 and n == 6 + 3 * payload[5]
    if marker == _SOS:
        return n >= 1 and n == 4 + 2 * payload[0]
    if marker == 0xDD:  # DRI
        return n == 2
    if marker == 0xDB:  # DQT: (precision/id, 64 or 128 bytes)*
        i = 0
        while i < n:
            pq, tq = payload[i] >> 4, payload[i] & 15
            if pq > 1 or tq > 3:
                return False
            i += 1 + (128 if pq else 64)
        return i == n
    if marker == 0xC4:  # DHT: (class/id, 16 counts, symbols)*
        i = 0
        while i < n:
            if i + 17 > n or payload[i] >> 4 > 1 or payload[i] & 15 > 3:
                return False
            symbols = sum(payload[i + 1:i + 17])
            if symbols > 256:
                return False
            i += 17 + symbols
        return i == n
    if marker == 0xCC:  # DAC: (class/id, value)*, at most 4 DC + 4 AC conditioning tables
        return n % 2 == 0 and n <= 16 and all(_dac_ok(payload[i], payload[i + 1])
                                              for i in range(0, n, 2))
    return True




def _dac_ok(table: int, value: int) -> bool:
    """One arithmetic conditioning entry: DC (class 0) holds L <= U, AC (class 1) K in 1..63."""
    tc, tb = table >> 4, table & 15
    if tc > 1 or tb > 3:
        return False
    if tc == 0:
        return (value & 15) <= (value >> 4)
    return 1 <= value <= 63


# Identifiers of APPn segments known by name (metadata-carriers.md §1.1 and what the
# corpus holds).  A segment is named only from this fixed vocabulary: an unknown
# identifier is free text that may itself be private ("JaneDoe+15550100"), and the
# carrier name reaches the event log, the audit log and `inspect`.
_APP_IDS: tuple[tuple[bytes, str], ...] = (
    (b"JFIF\0", "JFIF"), (b"JFXX\0", "JFXX"), (b"AVI1", "AVI1"),
    (b"Exif\0", "Exif"), (XMP_ID, "XMP"), (EXT_XMP_ID, "extended XMP"), (b"FLIR\0", "FLIR"),
    (b"QVCI", "QVCI"), (ICC_ID, "ICC_PROFILE"), (b"MPF\0", "MPF"), (b"FPXR\0", "FPXR"),
    (b"urn:iso:std:iso:ts:21496", "ISO gain map"), (b"HDR_CAPTURE_INFO", "HDR_CAPTURE_INFO"),
    (b"GainMap", "GainMap"), (b"AROT", "AROT"), (b"Meta\0", "Meta"), (b"META\0", "Meta"),
    (b"ssuniqueid", "ssuniqueid"), (b"RMETA", "RMETA"), (b"GoPro", "GoPro"), (b"NITF", "NITF"),
    (b"EPPIM", "EPPIM"), (b"\x1aQualcomm Camera", "Qualcomm"), (b"SPIFF", "SPIFF"),
    (b"II\x1a\0\0\0HEAPJPGM", "CIFF"), (b"Agfa Gevaert", "AgfaGevaert"),
    (b"Media Jukebox", "Media Jukebox"), (b"UNICODE", "UNICODE"), (b"HDR_RI", "HDR_RI"),
    (b"Ducky", "Ducky"), (b"AgfaGevaert", "AgfaGevaert"), (b"PrintIM", "PrintIM"),
    (b"Photoshop 3.0", "Photoshop 3.0"), (b"Adobe_CM", "Adobe_CM"), (b"Adobe", "Adobe"),
)


def segment_is_what_it_claims(marker: int, payload: bytes) -> bool:
    """`_structure_ok` for other walkers that meet JPEG streams (TIFF JPEG strips and
    JPEGTables): a kept table or frame segment must fill exactly its declared length."""
    return _structure_ok(marker, payload)


def _ident(payload: bytes) -> str | None:
    """The known name of an APPn segment's identifier, or None (never payload bytes)."""
    for prefix, name in _APP_IDS:
        if payload.startswith(prefix):
            return name
    return None


# -- IPTC/Photoshop names for the report ------------------------------------------------

_IRB_NAMES = {0x0404: "IPTC-NAA", 0x040C: "PhotoshopThumbnail", 0x0409: "PhotoshopThumbnail",
              0x0422: "EXIFInfo", 0x0424: "XMP", 0x040F: "ICC_Profile", 0x0425: "IPTCDigest",
              0x041C: "IPTCDigest", 0x03ED: "ResolutionInfo", 0x0421: "VersionInfo"}
_IPTC_NAMES = {5: "ObjectName", 25: "Keywords", 40: "SpecialInstructions", 55: "DateCreated",
               60: "TimeCreated", 62: "DigitalCreationDate", 63: "DigitalCreationTime",
               65: "OriginatingProgram", 80: "By-line", 85: "By-lineTitle", 90: "City",
               92: "Sub-location", 95: "Province-State", 100: "Country-PrimaryLocationCode",
               101: "Country-PrimaryLocationName", 103: "OriginalTransmissionReference",
               105: "Headline", 110: "Credit", 115: "Source", 116: "CopyrightNotice",
               118: "Contact", 120: "Caption-Abstract", 122: "Writer-Editor"}


def _iptc_names(block: bytes, out: list[str]) -> None:
    i, n = 0, len(block)
    while i + 5 <= n and block[i] == 0x1C and len(out) < 256:
        rec, ds = block[i + 1], block[i + 2]
        size = struct.unpack_from(">H", block, i + 3)[0]
        i += 5
        if size & 0x8000:  # extended dataset: size in the next (size & 0x7FFF) bytes
            k = size & 0x7FFF
            if k > 4 or i + k > n:
                return
            size = int.from_bytes(block[i:i + k], "big")
            i += k
        if rec == 2 and ds in _IPTC_NAMES:
            out.append(_IPTC_NAMES[ds])
        i += size


def _irb_names(payload: bytes) -> list[str]:
    """Resource and IPTC dataset names inside a `Photoshop 3.0` APP13 (bounded, lenient)."""
    names: list[str] = []
    i = payload.find(b"8BIM")
    n = len(payload)
    steps = 0
    while 0 <= i and i + 12 <= n and payload[i:i + 4] == b"8BIM" and steps < 1024:
        steps += 1
        rid = struct.unpack_from(">H", payload, i + 4)[0]
        nlen = payload[i + 6]
        j = i + 6 + nlen + 1 + ((nlen + 1) & 1)  # Pascal name padded to an even size
        if j + 4 > n:
            break
        size = struct.unpack_from(">I", payload, j)[0]
        data_at = j + 4
        if rid in _IRB_NAMES:
            names.append(_IRB_NAMES[rid])
        if rid == 0x0404:
            _iptc_names(payload[data_at:data_at + size], names)
        i = data_at + size + (size & 1)
    return names


# -- Exif helpers -----------------------------------------------------------------------


def _thumb_span(tiff: bytes) -> tuple[int, int] | None:
    """(offset, length) of the IFD1 JPEG thumbnail inside a TIFF block, if declared."""
    if len(tiff) < 8 or tiff[:4] not in (b"II*\0", b"MM\0*"):
        return None
    bo = "<" if tiff[:2] == b"II" else ">"
    try:
        off = struct.unpack_from(bo + "I", tiff, 4)[0]
        cnt = struct.unpack_from(bo + "H", tiff, off)[0]
        off = struct.unpack_from(bo + "I", tiff, off + 2 + 12 * min(cnt, 4096))[0]
        if not off:
            return None
        cnt = struct.unpack_from(bo + "H", tiff, off)[0]
        vals: dict[int, int] = {}
        for k in range(min(cnt, 4096)):
            p = off + 2 + 12 * k
            tag, typ = struct.unpack_from(bo + "HH", tiff, p)
            if tag in (0x0201, 0x0202):
                vals[tag] = (struct.unpack_from(bo + "I", tiff, p + 8)[0] if typ == 4
                             else struct.unpack_from(bo + "H", tiff, p + 8)[0])
    except struct.error:
        return None
    if 0x0201 in vals and 0x0202 in vals:
        return vals[0x0201], vals[0x0202]
    return None


def _is_minimal_exif(payload: bytes) -> bool:
    """True for the Exif we write ourselves (Orientation only, zero padding after)."""
    if not payload.startswith(EXIF_ID):
        return False
    tiff = payload[len(EXIF_ID):]
    for o in range(2, 9):
        for be in (True, False):
            mt = minimal_tiff(o, big_endian=be)
            if tiff.startswith(mt) and all_zero(tiff, len(mt)):
                return True
    return False


def _exif_app1(orientation: int, span: int, big_endian: bool) -> tuple[bytes, bytes]:
    """Bytes for a span of `span` bytes: a minimal Exif APP1 plus the padding after it.

    Returns (app1, rest): rest is an APP15 padding segment (>= 4 bytes) or empty, in
    which case up to 3 spare bytes are zero padding inside the APP1 itself.
    """
    body = EXIF_ID + minimal_tiff(orientation, big_endian=big_endian)
    spare = span - 4 - len(body)
    if spare < 0:
        raise ValueError("span too small for a minimal Exif")
    if spare >= 4:
        app1 = b"\xff\xe1" + struct.pack(">H", 2 + len(body)) + body
        rest = b"\xff\xef" + struct.pack(">H", spare - 2) + bytes(spare - 4)
        return app1, rest
    return b"\xff\xe1" + struct.pack(">H", 2 + len(body) + spare) + body + bytes(spare), b""


# -- the walker -------------------------------------------------------------------------


def scrub(data: bytes, options: ScrubOptions, findings: Findings) -> bytes:
    """Rewrite a JPEG so that only rendering structures (and minimal Orientation) remain."""
    walk = _walk(data, options)
    segs = [(m, s, e) for kind, m, s, e in walk.items if kind == "seg"]

    # Pass 1: orientation.  Exif Orientation wins; XMP `tiff:Orientation` counts only
    # when the (first) Exif has no Orientation tag at all (as in Pillow's getexif()).
    first_exif: tuple[int, int] | None = None
    first_xmp: tuple[int, int] | None = None
    exif_orient: int | None = None
    big_endian = True
    for m, s, e in segs:
        if m != _APP1:
            continue
        pl = data[s + 4:e]
        if first_exif is None and pl.startswith(b"Exif\0"):
            first_exif = (s, e)
            t = find_tiff_header(pl)
            if t >= 0:
                tiff = pl[t:]
                exif_orient = read_tiff(tiff).orientation
                big_endian = tiff[:2] == b"MM"
        elif first_xmp is None and pl.startswith(XMP_ID):
            first_xmp = (s, e)
    orientation: int | None = None
    target: tuple[int, int] | None = None
    if options.keep_orientation:
        if exif_orient is not None:
            orientation = valid_orientation(exif_orient)
            target = first_exif
        elif first_xmp is not None:
            orientation = valid_orientation(xmp_orientation(data[first_xmp[0] + 4:first_xmp[1]]))
            target = first_exif if first_exif and first_exif[1] - first_exif[0] >= MIN_EXIF_SEGMENT \
                else first_xmp
        if orientation is not None and target is not None \
                and target[1] - target[0] < MIN_EXIF_SEGMENT:
            orientation = None
        if orientation is None:
            target = None
    # the block whose Orientation is written back: its Orientation is kept, not removed
    source = (first_exif if exif_orient is not None else first_xmp) if target is not None else None

    # Frame type and colour profile, decided before any segment is written: DAC may
    # precede the frame header, and ICC is one profile spread over many segments.
    arithmetic = _frame_is_arithmetic(segs)
    tables = _tables(data, walk.items, arithmetic)
    idle_dri = _idle_restart_intervals(segs)
    dnl_used = _needed_dnl(data, segs)
    icc_ok = options.keep_icc and _icc_ok(data, segs)

    # Pass 2: decide each segment; collect the output pieces.  Both modes assemble the
    # output once with b"".join: kept bytes (scan data above all) are memoryview slices
    # of the input, so they are copied exactly once, into the result.
    #   preserve_length: every input byte is covered, in order: kept items and the gaps
    #     between them (fill bytes) verbatim, rewritten/neutralised segments by
    #     replacements of the same length, the trailer by zeros.
    #   compact: kept items only; neutralised segments, fill bytes and trailer dropped.
    preserve = options.preserve_length
    pieces: list[bytes | memoryview] = []
    view = memoryview(data)
    cursor = 0  # preserve_length: input bytes before this offset are in `pieces`
    icc_segments = 0
    jfif_seen = adobe_seen = False

    for kind, m, s, e in walk.items:
        if preserve and s > cursor:  # fill bytes between items, kept as they are
            pieces.append(view[cursor:s])
        cursor = e
        if kind == "scan":
            pieces.append(view[s:e])
            continue
        pl = data[s + 4:e] if e - s >= 4 else b""
        keep = True
        carrier: str | None = None
        tags: list[str] = []
        values: list[tuple[str, str]] = []
        if m == _DAC and not arithmetic:
            # Conditioning tables mean nothing to a Huffman-coded frame: a DAC there is
            # not what it claims (e.g. an Exif block whose marker byte was changed).
            keep = False
            carrier = "marker 0xFFCC"
        elif m == _DNL and s != dnl_used:
            keep = False  # libjpeg skips every DNL; only one ending a 0-line frame is needed
            carrier = "unused DNL"
        elif m == 0xDD and s in idle_dri:
            keep = False  # no scan follows before it is redefined or the image ends
            carrier = "unused DRI"
        elif m in (0xDB, 0xC4) and not any(t.used for t in tables[s]):
            keep = False  # defines only tables no scan decodes with
            carrier = "unused DQT" if m == 0xDB else "unused DHT"
        elif m in (0xDB, 0xC4) and not all(t.used for t in tables[s]):
            seg = bytearray(data[s:e])
            for t in tables[s]:
                if not t.used:
                    seg[t.start - s:t.end - s] = _neutral_table(t, data)
            if bytes(seg) != data[s:e]:
                findings.remove("unused DQT" if m == 0xDB else "unused DHT", s, e - s)
            pieces.append(bytes(seg))
            continue
        elif m in _KEEP or m == _SOS:
            if not _structure_ok(m, pl):
                raise _err(f"is corrupt: segment 0xFF{m:02X} at offset {s} does not match its length")
        elif 0xD0 <= m <= 0xD7:
            # a restart marker outside scan data restarts nothing (libjpeg skips it), but
            # each one still says 3 bits: it becomes two fill bytes before the next marker
            findings.remove("stray restart marker", s, 2)
            if preserve:
                pieces.append(b"\xff\xff")
            continue
        elif m in (_SOI, _EOI) or (m == _DNL and s == dnl_used):
            pass
        elif target is not None and (s, e) == target:
            app1, rest = _exif_app1(orientation or 1, e - s, big_endian)
            findings.keep("orientation", str(orientation))
            if m == _APP1 and pl.startswith(b"Exif\0"):
                if not _is_minimal_exif(pl):
                    _report_exif(pl, s, e, options, findings)
            else:
                _report_xmp(pl, s, e, options, findings)
            pieces.append(app1)
            if preserve and rest:
                pieces.append(rest)
            continue
        elif m == _APP0 and pl.startswith(JFIF_ID) and len(pl) >= JFIF_FIXED and not jfif_seen:
            jfif_seen = True
            # The thumbnail is removed by zeroing its pixels *and* its width/height
            # (so no reader sees a thumbnail at all); compact mode drops the bytes.
            if not all_zero(pl, JFIF_THUMB_DIMS):
                findings.remove("JFIF thumbnail", s + 4 + JFIF_FIXED, len(pl) - JFIF_FIXED,
                                tags=["ThumbnailImage"])
            if preserve:
                pieces.append(view[s:s + 4 + JFIF_THUMB_DIMS])
                pieces.append(bytes(len(pl) - JFIF_THUMB_DIMS))
            else:
                pieces.append(b"\xff\xe0" + struct.pack(">H", 2 + JFIF_FIXED)
                              + pl[:JFIF_THUMB_DIMS] + b"\0\0")
            continue
        elif m == _APP14 and pl.startswith(ADOBE_ID) and len(pl) >= ADOBE_LEN and not adobe_seen:
            adobe_seen = True
            findings.keep("Adobe APP14", "colour transform")
            tail = pl[ADOBE_LEN:]
            if not all_zero(tail):
                findings.remove("APP14 Adobe extra data", s + 4 + ADOBE_LEN, len(tail))
                pieces.append(data[s:s + 4 + ADOBE_LEN] + bytes(len(tail)))
                continue
        elif m == _APP2 and pl.startswith(ICC_ID) and icc_ok:
            icc_segments += 1
        else:
            keep = False
            carrier, tags, values = _classify(m, pl, s, e, options, findings)
        if keep:
            pieces.append(view[s:e])
            continue
        if carrier is not None:
            findings.remove(carrier, s, e - s, tags=tags, values=values)
        if preserve:  # neutralise in place: APP15, same length field, zero payload
            pieces.append(b"\xff\xef" + data[s + 2:s + 4] + bytes(e - s - 4))

    if source is not None:
        findings.kept_from(source[0], "Orientation")
    if icc_segments:
        findings.keep("colour profile", f"ICC ({icc_segments} segment{'s' * (icc_segments > 1)})")
    if walk.eoi_end is None:
        findings.keep("truncated scan", "no end-of-image marker; scan data copied unchanged")
    elif walk.eoi_end < len(data):
        at, n = walk.eoi_end, len(data)
        if not all_zero(data, at):
            findings.remove("trailer after EOI", at, n - at)
            mpf = data.find(b"\xff\xd8\xff", at)
            if mpf >= 0:
                findings.remove("MPF secondary image", mpf, n - mpf)
        if preserve:
            pieces.append(bytes(n - at))
    return b"".join(pieces)


_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_LOSSLESS_SOF = frozenset({0xC3, 0xC7, 0xCB, 0xCF})


@dataclass(slots=True)
class _Table:
    start: int   # absolute offset of the table's class/id byte
    end: int
    dht: bool
    used: bool = False


def _tables(data: bytes, items: list[tuple[str, int, int, int]], arithmetic: bool) -> dict[int, list[_Table]]:
    """Every DQT/DHT table definition (by segment start) and whether a scan uses it.

    A table that no scan decodes with is not rendering data, yet it is up to 128
    arbitrary bytes (DHT symbols can be any byte values): a hiding place.  The rules
    follow the decoder: a component's quantisation table is latched when the component's
    first scan starts (later redefinitions change nothing); Huffman tables are read at
    each scan that uses them - DC and AC in a sequential scan, DC only in a progressive
    DC-first or lossless scan, AC only in a progressive AC scan, none in a DC refinement
    scan or in an arithmetic-coded frame.
    """
    found: dict[int, list[_Table]] = {}
    dqt: dict[int, _Table] = {}
    dht: dict[tuple[int, int], _Table] = {}
    quant_of: dict[int, int] = {}   # component id -> quantisation table id (from SOF)
    latched: set[int] = set()
    kind = 0
    for what, m, s, e in items:
        if what != "seg":
            continue
        pl = data[s + 4:e]
        if m in (0xDB, 0xC4):
            if not _structure_ok(m, pl):
                raise _err(f"is corrupt: segment 0xFF{m:02X} at offset {s} does not match its length")
            i = 0
            tabs = found.setdefault(s, [])
            while i < len(pl):
                if m == 0xDB:
                    size = 1 + (128 if pl[i] >> 4 else 64)
                else:
                    size = 17 + sum(pl[i + 1:i + 17])
                t = _Table(s + 4 + i, s + 4 + i + size, m == 0xC4)
                tabs.append(t)
                if m == 0xDB:
                    dqt[pl[i] & 15] = t
                else:
                    dht[(pl[i] >> 4, pl[i] & 15)] = t
                i += size
        elif m in _SOF and _structure_ok(m, pl):
            kind = m
            quant_of = {pl[6 + 3 * k]: pl[8 + 3 * k] for k in range(pl[5])}
        elif m == _SOS and _structure_ok(m, pl):
            ns = pl[0]
            ss, ah = pl[1 + 2 * ns], pl[3 + 2 * ns] >> 4
            for k in range(ns):
                comp, sel = pl[1 + 2 * k], pl[2 + 2 * k]
                if comp not in latched and comp in quant_of:
                    latched.add(comp)
                    if quant_of[comp] in dqt:
                        dqt[quant_of[comp]].used = True
                if arithmetic:
                    continue
                wanted: list[tuple[int, int]] = []
                if kind in _LOSSLESS_SOF:
                    wanted = [(0, sel >> 4)]
                elif kind in _PROGRESSIVE_SOF:
                    if ss == 0:
                        wanted = [(0, sel >> 4)] if ah == 0 else []
                    else:
                        wanted = [(1, sel & 15)]
                else:
                    wanted = [(0, sel >> 4), (1, sel & 15)]
                for key in wanted:
                    if key in dht:
                        dht[key].used = True
    return found


def _needed_dnl(data: bytes, segs: list[tuple[int, int, int]]) -> int | None:
    """Start of the one DNL a decoder needs, if any: the first DNL after the first scan,
    when the frame header declares 0 lines (the height is then given by the DNL).  Any
    other DNL tells no decoder anything (libjpeg skips them all) and is neutralised."""
    frame = next(((s, e) for m, s, e in segs if m in _SOF), None)
    if frame is None or data[frame[0] + 5:frame[0] + 7] != b"\0\0":
        return None
    scanned = False
    for m, s, e in segs:
        if m == _SOS:
            scanned = True
        elif m == _DNL and scanned and e - s == 6:
            return s
    return None


def _idle_restart_intervals(segs: list[tuple[int, int, int]]) -> set[int]:
    """Starts of DRI segments no scan uses: another DRI or the end of the image comes
    before the next SOS.  Each is only 2 bytes, but there may be thousands of them."""
    idle: set[int] = set()
    pending: int | None = None
    for m, s, _ in segs:
        if m == 0xDD:
            if pending is not None:
                idle.add(pending)
            pending = s
        elif m == _SOS:
            pending = None
    if pending is not None:
        idle.add(pending)
    return idle


def _neutral_table(t: _Table, data: bytes) -> bytes:
    """An unused table rewritten with the same class/id and size but no content: DQT
    values all 1; DHT the same symbol count, all codes 16 bits long, symbols zero."""
    head = data[t.start]
    size = t.end - t.start
    if not t.dht:
        body = b"\x01" * 64 if size == 65 else b"\x00\x01" * 64
        return bytes([head]) + body
    symbols = size - 17
    counts = bytearray(16)
    if symbols == 256:
        counts[14], counts[15] = 1, 255
    else:
        counts[15] = symbols
    return bytes([head]) + bytes(counts) + bytes(symbols)


def _frame_is_arithmetic(segs: list[tuple[int, int, int]]) -> bool:
    """True for an arithmetic-coded frame (SOF9-11, SOF13-15), where DAC is meaningful.

    One image has one frame header; a second SOF makes libjpeg stop ("two SOF
    markers"), so such a file is refused rather than guessed at.
    """
    sofs = [m for m, _, _ in segs if m in _SOF]
    if len(sofs) > 1:
        raise _err("is corrupt: more than one frame header (SOF marker)")
    first_scan = next((k for k, (m, _, _) in enumerate(segs) if m == _SOS), None)
    if first_scan is not None and not any(m in _SOF for m, _, _ in segs[:first_scan]):
        # no decoder can read scan data without a frame header, so it is no image data
        raise _err("is corrupt: scan data before any frame header (SOF marker)")
    return bool(sofs) and sofs[0] in _ARITH_SOF


def _icc_ok(data: bytes, segs: list[tuple[int, int, int]]) -> bool:
    """Do the `ICC_PROFILE` APP2 segments form exactly one well-formed ICC profile?

    If not (plain text, a second profile, chunk numbers that do not add up), every one of
    them is neutralised: a decoder could not use such a profile either.
    """
    first_scan = next((s for m, s, _ in segs if m == _SOS), len(data))
    icc_segs = [(s, e) for m, s, e in segs if m == _APP2 and data[s + 4:s + 4 + len(ICC_ID)] == ICC_ID]
    if not icc_segs or any(s > first_scan for s, _ in icc_segs):
        return False  # decoders read the profile from the header only, before the first scan
    chunks = [data[s + 4:e] for s, e in icc_segs]
    profile, _ = icc.assemble_jpeg(chunks)
    return profile is not None and icc.problem(profile) is None


def _report_exif(pl: bytes, s: int, e: int, options: ScrubOptions, findings: Findings) -> None:
    t = find_tiff_header(pl)
    tiff = pl[t:] if t >= 0 else b""
    summary = read_tiff(tiff, collect_values=options.collect_values)
    values = [(x.name, x.value) for x in summary.entries if x.value is not None] \
        if options.collect_values else []
    findings.remove("APP1 Exif", s, e - s, tags=summary.names, values=values)
    if summary.has_thumbnail:
        span = _thumb_span(tiff)
        if span is not None and span[0] + span[1] <= len(tiff):
            findings.remove("EXIF thumbnail", s + 4 + t + span[0], span[1], tags=["ThumbnailImage"])
        else:
            findings.remove("EXIF thumbnail", s, 0, tags=["ThumbnailImage"])


def _report_xmp(pl: bytes, s: int, e: int, options: ScrubOptions, findings: Findings) -> None:
    findings.remove("XMP", s, e - s, tags=xmp_property_names(pl[len(XMP_ID):]))


def _classify(m: int, pl: bytes, s: int, e: int, options: ScrubOptions,
              findings: Findings) -> tuple[str | None, list[str], list[tuple[str, str]]]:
    """Carrier name, tag names and (optional) values of a segment being neutralised.

    Returns carrier None for our own padding (APP15 with an all-zero payload): it is
    neutral already and reported as nothing, which keeps scrubbing idempotent.
    Reports that need their own shape (Exif, XMP) are filed here and None returned.
    """
    if m == _APP15 and all_zero(pl):
        return None, [], []
    if m == _APP1:
        if pl.startswith(b"Exif\0"):
            _report_exif(pl, s, e, options, findings)
            return None, [], []
        if pl.startswith(XMP_ID):
            _report_xmp(pl, s, e, options, findings)
            return None, [], []
        if pl.startswith(EXT_XMP_ID):
            # GUID(32) + full length(4) + offset(4) precede the chunk of XMP text
            return "extended XMP", xmp_property_names(pl[len(EXT_XMP_ID) + 40:]), []
    if m == _APP2:
        if pl.startswith(ICC_ID):
            return "ICC profile", ["ICC_Profile"], []
        if pl.startswith(b"MPF\0"):
            return "APP2 MPF", [], []
    if m == _APP11 and (pl.startswith(b"JP") or b"jumb" in pl[:64] or b"c2pa" in pl[:128]):
        return "APP11 JUMBF/C2PA", [], []
    if m == _APP13:
        return "IPTC (APP13)", _irb_names(pl) if pl.startswith(b"Photoshop 3.0") else [], []
    if m == _COM:
        vals = [("Comment", pl[:200].decode("latin-1"))] if options.collect_values else []
        return "COM", ["Comment"], vals
    if 0xE0 <= m <= 0xEF:
        name = _ident(pl)
        return (f"APP{m - 0xE0} {name}" if name else f"APP{m - 0xE0}"), [], []
    return f"marker 0xFF{m:02X}", [], []
