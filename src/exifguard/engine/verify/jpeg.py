"""Independent check of a cleaned JPEG (written apart from the walker on purpose).

Accepts only:
* SOI first; DQT and DHT naming real tables (precision 0/1, class 0/1, id 0..3) that
  fill them exactly, where every table no scan decodes with holds only neutral
  content; DRI only where a scan uses it; one DNL (4-byte form) after the first scan
  and only when the frame header declares 0 lines; one SOFn, before any SOS; SOS with
  its scan data; EOI; no restart marker outside scan data; DAC only with valid entries
  and only when the frame is arithmetic-coded; no ICC segment after the first scan;
* one JFIF APP0 whose thumbnail width, height and bytes (all after the first 12) are zero;
* one APP14 `Adobe` whose bytes after the 12 fixed ones are zero;
* ICC APP2 (`ICC_PROFILE\\0`) only when `keep_icc`, and only when all of them make up
  exactly one profile that passes `_icc.check`;
* at most one Exif APP1, holding a TIFF with an IFD0 of at most one entry
  (Orientation, SHORT, count 1, value 2..8), a zero next-IFD link and nothing but
  zeros after it;
* APP15 with an all-zero payload (our padding);
* after the first EOI, only zero bytes.  Scan data that runs to the end of the buffer
  without an EOI (a truncated download) is accepted, as the walker does.

The length rule (same length or never larger) is checked by the dispatcher.
"""

from __future__ import annotations

import re
import struct

from ..errors import ScrubError
from ..report import ScrubOptions
from .._bytes import all_zero
from . import _icc


_SCAN_END = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")


def _fail(reason: str) -> ScrubError:
    return ScrubError(reason, format="JPEG")


def _check_exif(payload: bytes, at: int) -> None:
    if payload[:6] != b"Exif\0\0":
        raise _fail(f"Exif segment at {at} has an unexpected prefix")
    tiff = payload[6:]
    if tiff[:4] == b"MM\0*":
        bo = ">"
    elif tiff[:4] == b"II*\0":
        bo = "<"
    else:
        raise _fail(f"Exif segment at {at} holds no TIFF header")
    if len(tiff) < 14:
        raise _fail(f"Exif segment at {at} is too short")
    ifd = struct.unpack_from(bo + "I", tiff, 4)[0]
    if ifd != 8:
        raise _fail(f"Exif segment at {at} does not start its IFD0 right after the header")
    count = struct.unpack_from(bo + "H", tiff, 8)[0]
    if count > 1:
        raise _fail(f"Exif segment at {at} holds {count} entries (at most Orientation allowed)")
    p = 10
    if count == 1:
        if len(tiff) < 26:
            raise _fail(f"Exif segment at {at} is too short for its entry")
        tag, typ, cnt, value, pad = struct.unpack_from(bo + "HHIHH", tiff, p)
        if tag != 0x0112 or typ != 3 or cnt != 1 or not 2 <= value <= 8 or pad != 0:
            raise _fail(f"Exif segment at {at} holds something other than a valid Orientation")
        p += 12
    if struct.unpack_from(bo + "I", tiff, p)[0] != 0:
        raise _fail(f"Exif segment at {at} links to a further IFD")
    if not all_zero(tiff, p + 4):
        raise _fail(f"Exif segment at {at} has non-zero bytes after its IFD")


def _tables_fit(code: int, body: bytes) -> bool:
    """Structural segments must be exactly as long as their own fields say."""
    size = len(body)
    if code == 0xDB:
        k = 0
        while k < size:
            k += 65 if body[k] < 0x10 else 129
        return k == size
    if code == 0xC4:
        k = 0
        while k + 17 <= size:
            k += 17 + sum(body[k + 1:k + 17])
        return k == size
    if code == 0xDA:
        return size >= 1 and size == 4 + 2 * body[0]
    if code == 0xDD:
        return size == 2
    if code == 0xCC:
        return size % 2 == 0
    return size >= 6 and size == 6 + 3 * body[5]  # SOFn


_ARITHMETIC_FRAMES = (0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)


def _dac_entries_ok(body: bytes) -> bool:
    """DAC: at most eight (table, value) pairs; DC tables hold L <= U, AC tables 1..63."""
    if len(body) > 16:
        return False
    for k in range(0, len(body), 2):
        cls, ident, val = body[k] >> 4, body[k] & 0x0F, body[k + 1]
        if ident > 3 or cls > 1:
            return False
        if (cls == 1 and not 0 < val < 64) or (cls == 0 and val & 0x0F > val >> 4):
            return False
    return True


def _table_ids_ok(code: int, body: bytes) -> bool:
    """DQT precision 0/1 and ids 0..3; DHT classes 0/1, ids 0..3, at most 256 symbols."""
    k = 0
    while k < len(body):
        hi, lo = body[k] >> 4, body[k] & 0x0F
        if hi > 1 or lo > 3:
            return False
        if code == 0xDB:
            k += 65 if hi == 0 else 129
        else:
            symbols = sum(body[k + 1:k + 17])
            if symbols > 256:
                return False
            k += 17 + symbols
    return True


def _finish(frames: list[int], dac_at: list[int], icc: list[bytes], options: ScrubOptions) -> None:
    """Checks that need the whole header: one frame, DAC only in it if arithmetic, one ICC profile."""
    if len(frames) > 1:
        raise _fail("more than one frame header (SOF)")
    if dac_at and not (frames and frames[0] in _ARITHMETIC_FRAMES):
        raise _fail(f"DAC segment at {dac_at[0]} in a frame that is not arithmetic-coded")
    if icc:
        _icc.check(_icc.jpeg_profile(icc, "JPEG"), "JPEG")


class _Ledger:
    """Which DQT/DHT table definitions some scan actually decodes with.

    Kept apart from the walker's bookkeeping on purpose.  Quantisation tables count
    when a component's first scan latches them; Huffman tables when a scan reads them
    (sequential: DC and AC; progressive DC-first and lossless: DC; progressive AC: AC;
    DC refinement and arithmetic frames: none).  A definition nothing uses must hold
    the neutral content the walker writes (DQT values all 1; DHT all codes 16 bits long
    with zero symbols), so it carries nothing.
    """

    def __init__(self, clean: bytes) -> None:
        self.clean = clean
        self.defs: list[list] = []           # [offset, size, is_dht, used]
        self.current: dict[tuple[int, int, int], list] = {}  # (is_dht, class, id) -> def
        self.sof = 0
        self.qsel: dict[int, int] = {}
        self.started: set[int] = set()
        self.restart_at: int | None = None  # a DRI no scan has used yet
        self.lines = -1          # the frame header's line count (0: a DNL gives it)
        self.dnl_seen = False

    def define(self, code: int, at: int, body: bytes) -> None:
        k = 0
        while k < len(body):
            hi, lo = body[k] >> 4, body[k] & 0x0F
            size = (65 if hi == 0 else 129) if code == 0xDB else 17 + sum(body[k + 1:k + 17])
            entry = [at + 4 + k, size, code == 0xC4, False]
            self.defs.append(entry)
            self.current[(int(code == 0xC4), hi if code == 0xC4 else 0, lo)] = entry
            k += size

    def frame(self, code: int, body: bytes) -> None:
        self.sof = code
        self.lines = (body[1] << 8) | body[2]
        self.qsel = {body[6 + 3 * c]: body[8 + 3 * c] for c in range(body[5])}

    def scan(self, body: bytes) -> None:
        count = body[0]
        spectral_start = body[1 + 2 * count]
        refining = body[3 + 2 * count] >> 4
        arithmetic = self.sof in _ARITHMETIC_FRAMES
        for c in range(count):
            comp, sel = body[1 + 2 * c], body[2 + 2 * c]
            if comp not in self.started:
                self.started.add(comp)
                self._mark((0, 0, self.qsel.get(comp, -1)))
            if arithmetic:
                continue
            if self.sof in (0xC3, 0xC7):
                uses = [(1, 0, sel >> 4)]
            elif self.sof in (0xC2, 0xC6):
                uses = [(1, 1, sel & 0x0F)] if spectral_start else ([(1, 0, sel >> 4)] if not refining else [])
            else:
                uses = [(1, 0, sel >> 4), (1, 1, sel & 0x0F)]
            for key in uses:
                self._mark(key)

    def _mark(self, key: tuple[int, int, int]) -> None:
        if key in self.current:
            self.current[key][3] = True

    def check(self) -> None:
        if self.restart_at is not None:
            raise _fail(f"restart interval at {self.restart_at} is used by no scan")
        for at, size, is_dht, used in self.defs:
            if used:
                continue
            table = self.clean[at + 1:at + size]
            if is_dht:
                n = size - 17
                want = bytes(14) + (bytes([1, 255]) if n == 256 else bytes([0, n])) + bytes(n)
            else:
                want = b"\x01" * 64 if size == 65 else b"\x00\x01" * 64
            if table != want:
                raise _fail(f"table at {at} is used by no scan yet holds data")


def verify(clean: bytes, options: ScrubOptions) -> None:
    frames: list[int] = []
    dac_at: list[int] = []
    icc: list[bytes] = []
    ledger = _Ledger(clean)
    _walk(clean, options, frames, dac_at, icc, ledger)
    _finish(frames, dac_at, icc, options)
    ledger.check()


def _walk(clean: bytes, options: ScrubOptions, frames: list[int], dac_at: list[int],
          icc: list[bytes], ledger: _Ledger) -> None:
    n = len(clean)
    if n < 4 or clean[:2] != b"\xff\xd8":
        raise _fail("output does not start with SOI")
    i = 2
    exif_seen = jfif_seen = adobe_seen = False
    steps = 0
    while True:
        steps += 1
        if steps > options.max_structures + 2:
            raise _fail("too many segments")
        if i + 1 >= n:
            raise _fail("output ends without EOI outside scan data")
        if clean[i] != 0xFF:
            raise _fail(f"non-marker byte at {i}")
        if clean[i + 1] == 0xFF:  # fill byte
            i += 1
            continue
        code = clean[i + 1]
        if code == 0xD9:
            if not all_zero(clean, i + 2):
                raise _fail("non-zero bytes after EOI")
            return
        if 0xD0 <= code <= 0xD7:
            raise _fail(f"restart marker at {i} outside scan data")
        if code < 0xC0 or code == 0xD8:
            raise _fail(f"unexpected marker 0xFF{code:02X} at {i}")
        if i + 4 > n:
            raise _fail("segment header cut off")
        seg_len = (clean[i + 2] << 8) | clean[i + 3]
        stop = i + 2 + seg_len
        if seg_len < 2 or stop > n:
            raise _fail(f"segment 0xFF{code:02X} at {i} has a bad length")
        payload = clean[i + 4:stop]
        if code in (0xC4, 0xCC, 0xDB, 0xDD, 0xDA) or (0xC0 <= code <= 0xCF and code != 0xC8):
            if not _tables_fit(code, payload):
                raise _fail(f"segment 0xFF{code:02X} at {i} is not a well-formed table")
            if code in (0xDB, 0xC4) and not _table_ids_ok(code, payload):
                raise _fail(f"segment 0xFF{code:02X} at {i} names a table no decoder has")
            if code == 0xCC:
                if not _dac_entries_ok(payload):
                    raise _fail(f"DAC segment at {i} holds impossible conditioning values")
                dac_at.append(i)
            elif code in (0xC4, 0xDB):
                ledger.define(code, i, payload)
            elif code == 0xDA:
                if not frames:
                    raise _fail(f"scan at {i} comes before any frame header")
                ledger.scan(payload)
                ledger.restart_at = None
            elif code == 0xDD:
                if ledger.restart_at is not None:
                    raise _fail(f"restart interval at {ledger.restart_at} is redefined before any scan uses it")
                ledger.restart_at = i
            elif code != 0xDD:
                frames.append(code)
                ledger.frame(code, payload)
        elif code == 0xDC:
            if seg_len != 4:
                raise _fail(f"DNL segment at {i} has an unexpected length")
            if not ledger.started or ledger.lines != 0 or ledger.dnl_seen:
                raise _fail(f"DNL segment at {i} is not the one a 0-line frame needs after its scan")
            ledger.dnl_seen = True
        elif code == 0xE0:
            if payload[:5] != b"JFIF\0" or len(payload) < 14 or jfif_seen:
                raise _fail(f"APP0 at {i} is not the one JFIF segment")
            jfif_seen = True
            if not all_zero(payload, 12):
                raise _fail(f"JFIF segment at {i} still declares or holds a thumbnail")
        elif code == 0xE1:
            if exif_seen:
                raise _fail(f"a second APP1 at {i}")
            exif_seen = True
            _check_exif(payload, i)
        elif code == 0xE2:
            if not options.keep_icc:
                raise _fail(f"APP2 at {i} survived although ICC is not kept")
            if payload[:12] != b"ICC_PROFILE\0":
                raise _fail(f"APP2 at {i} is not an ICC profile")
            if ledger.started:
                raise _fail(f"ICC segment at {i} comes after the first scan, where no decoder reads it")
            icc.append(payload)
        elif code == 0xEE:
            if payload[:5] != b"Adobe" or len(payload) < 12 or not all_zero(payload, 12) or adobe_seen:
                raise _fail(f"APP14 at {i} is not the one plain Adobe segment")
            adobe_seen = True
        elif code == 0xEF:
            if not all_zero(payload):
                raise _fail(f"APP15 at {i} has a non-zero payload")
        else:
            raise _fail(f"segment 0xFF{code:02X} at {i} is not allowed")
        i = stop
        if code == 0xDA:
            # skip scan data: the next marker is FF followed by a code byte that is
            # neither 00 (stuffing), RSTn nor FF (fill: the run's last FF is the marker's)
            hit = _SCAN_END.search(clean, i)
            if hit is None:
                return  # scan data runs to the end (truncated input, accepted)
            i = hit.start()
