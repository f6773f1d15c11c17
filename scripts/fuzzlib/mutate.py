"""Structure-aware mutators: change lengths, types, offsets and the order of structures.

Why structure-aware: random byte flips in a 2 kB JPEG mostly hit scan data or break the
first length and get refused at once; the bugs we look for (an Exif block kept because its
marker became DAC, a second iCCP, a chunk whose length points past its neighbour) need a
*whole* structure moved, renamed or re-sized.  `structure.parse` says where the
structures are; each operator picks one and changes exactly that.  Byte-level operators
remain, at a lower weight, for what no parser anticipates.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable, Sequence

from . import structure
from .structure import Region

INTERESTING_8 = (0, 1, 0x7F, 0x80, 0xFE, 0xFF)
INTERESTING_32 = (0, 1, 2, 7, 8, 12, 16, 0x7F, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
                  0xFFFFFFFE, 0xFFFFFFFF)

JPEG_MARKERS = [0xC0, 0xC1, 0xC2, 0xC4, 0xCC, 0xC8, 0xCF, 0xD8, 0xD9, 0xDA, 0xDB, 0xDD, 0xDC, 0xDE,
                0xDF, 0xF0, 0xF7, 0xFD, 0xFE, 0x01] + list(range(0xE0, 0xF0))
PNG_TYPES = [b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"tEXt",
             b"zTXt", b"iTXt", b"eXIf", b"tIME", b"pHYs", b"acTL", b"fcTL", b"fdAT", b"bKGD", b"sBIT",
             b"cICP", b"mDCv", b"caBX", b"vpAg", b"prVt", b"IDAt", b"idat", b"CgBI"]
RIFF_TYPES = [b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF", b"ICCP", b"EXIF", b"XMP ", b"UNKN",
              b"exif", b"iccp", b"FRGM"]
BOX_TYPES = [b"ftyp", b"meta", b"hdlr", b"pitm", b"iinf", b"infe", b"iloc", b"iprp", b"ipco", b"ipma",
             b"iref", b"idat", b"mdat", b"free", b"skip", b"uuid", b"Exif", b"xml ", b"jumb", b"jumd",
             b"brob", b"jxlc", b"jxlp", b"jxll", b"jxli", b"colr", b"ispe", b"moov", b"sefd", b"mpvd",
             b"dinf", b"grpl", b"thmb", b"cdsc", b"auxl", b"dimg"]
ITEM_TYPES = [b"hvc1", b"av01", b"Exif", b"mime", b"grid", b"iden", b"jpeg", b"uri ", b"tmap", b"unci"]
GIF_LABELS = [0x01, 0xF9, 0xFE, 0xFF, 0x00, 0x2C, 0x3B]
TIFF_TAGS = [0x0100, 0x0101, 0x0103, 0x0106, 0x010E, 0x010F, 0x0110, 0x0111, 0x0112, 0x0117, 0x013B,
             0x014A, 0x0201, 0x0202, 0x02BC, 0x8298, 0x83BB, 0x8649, 0x8769, 0x8773, 0x8825, 0x927C,
             0x9286, 0xA005, 0xA431, 0xC612, 0x9C9B, 0x9C9C, 0x0000, 0xFFFF]

TOKENS = (b"Exif\0\0", b"http://ns.adobe.com/xap/1.0/\0", b"ICC_PROFILE\0\x01\x01", b"Photoshop 3.0\0",
          b"8BIM\x04\x04", b"MPF\0", b"JFIF\0", b"JFXX\0", b"Adobe", b"XMP DataXMP", b"NETSCAPE2.0",
          b"<x:xmpmeta", b"\xff\xd8\xff\xe1", b"\xff\xd9", b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82",
          b"II*\0\x08\0\0\0", b"MM\0*\0\0\0\x08", b"RIFF", b"WEBP", b"ftyp", b"\0\0\0\x08free",
          b"\xff\x0a", b"GIF89a", b"BM")


class Mutator:
    """Applies 1..`max_stack` random operators; `splice_pool` gives other inputs to splice from."""

    def __init__(self, rng: random.Random, splice_pool: Callable[[], bytes] | None = None,
                 max_stack: int = 4, max_len: int = 4 * 1024 * 1024) -> None:
        self.rng = rng
        self.splice_pool = splice_pool
        self.max_stack = max_stack
        self.max_len = max_len
        structured: list[tuple[Callable[[bytearray, list[Region]], bool], int]] = [
            (self.length_field, 14), (self.type_bytes, 12), (self.truncate, 5), (self.duplicate, 7),
            (self.remove, 7), (self.reorder, 6), (self.splice, 6), (self.tiff_field, 8),
            (self.isobmff_field, 5), (self.gif_subblock, 3), (self.payload_edit, 6), (self.insert_structure, 5),
        ]
        raw: list[tuple[Callable[[bytearray, list[Region]], bool], int]] = [
            (self.bit_flip, 3), (self.byte_set, 3), (self.insert_bytes, 2), (self.token, 3),
            (self.copy_range, 2), (self.raw_truncate, 1),
        ]
        self.ops = structured + raw
        self.weights = [w for _, w in self.ops]
        self.last_ops: list[str] = []

    # -- driver ---------------------------------------------------------------------------
    def mutate(self, data: bytes) -> bytes:
        buf = bytearray(data)
        self.last_ops = []
        for _ in range(self.rng.randint(1, self.max_stack)):
            regions = structure.parse(bytes(buf)) if buf else []
            for _try in range(4):
                op = self.rng.choices(self.ops, self.weights)[0][0]
                if op(buf, regions):
                    self.last_ops.append(op.__name__)
                    break
            if len(buf) > self.max_len:
                del buf[self.max_len:]
        if buf[:8] == b"\x89PNG\r\n\x1a\n" and self.rng.random() < 0.75:
            fix_png_crcs(buf)
        if buf[:4] == b"RIFF" and self.rng.random() < 0.5:
            buf[4:8] = struct.pack("<I", max(0, len(buf) - 8) & 0xFFFFFFFF)
        return bytes(buf)

    def _pick(self, regions: Sequence[Region], pred: Callable[[Region], bool] = lambda r: True) -> Region | None:
        cand = [r for r in regions if pred(r)]
        return self.rng.choice(cand) if cand else None

    # -- structured operators -------------------------------------------------------------
    def length_field(self, buf: bytearray, regions: list[Region]) -> bool:
        r = self._pick(regions, lambda r: r.len_at is not None and r.len_at + r.len_size <= len(buf))
        if r is None:
            return False
        assert r.len_at is not None
        fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[r.len_size]
        e = ">" if r.big_endian else "<"
        cur = struct.unpack_from(e + fmt, buf, r.len_at)[0]
        mx = (1 << (8 * r.len_size)) - 1
        choice = self.rng.randrange(6)
        if choice == 0:
            new = cur + self.rng.choice((-1, 1, -2, 2, -4, 4, 8, -8, 16, -16))
        elif choice == 1:
            new = self.rng.choice(INTERESTING_32)
        elif choice == 2:
            new = len(buf) - r.start - r.len_adjust + self.rng.randint(-2, 2)  # up to the end
        elif choice == 3:
            new = cur * 2
        elif choice == 4:
            new = cur // 2
        else:
            new = self.rng.randrange(0, min(mx, 4 * len(buf) + 64) + 1)
        struct.pack_into(e + fmt, buf, r.len_at, new & mx)
        return True

    def type_bytes(self, buf: bytearray, regions: list[Region]) -> bool:
        r = self._pick(regions, lambda r: r.type_at is not None and r.type_len > 0)
        if r is None or r.type_at is None:
            return False
        at, n = r.type_at, r.type_len
        if n == 1 and buf[:2] == b"\xff\xd8":
            buf[at] = self.rng.choice(JPEG_MARKERS)
        elif n == 1:
            buf[at] = self.rng.choice(GIF_LABELS) if self.rng.random() < 0.7 else self.rng.randrange(256)
        elif n == 2:  # GIF extension: introducer + label
            buf[at + 1] = self.rng.choice(GIF_LABELS)
        elif n == 4:
            roll = self.rng.random()
            if roll < 0.25:  # flip the PNG ancillary/private/safe-to-copy case bits
                k = self.rng.randrange(4)
                buf[at + k] ^= 0x20
            else:
                pool = PNG_TYPES if buf[:4] == b"\x89PNG" else RIFF_TYPES if buf[:4] == b"RIFF" else BOX_TYPES
                other = [x.kind.encode("latin-1") for x in regions if x.type_len == 4]
                if other and roll < 0.45:
                    buf[at:at + 4] = self.rng.choice(other)[:4].ljust(4, b" ")
                else:
                    buf[at:at + 4] = self.rng.choice(pool)
        else:
            return False
        return True

    def truncate(self, buf: bytearray, regions: list[Region]) -> bool:
        r = self._pick(regions)
        if r is None:
            return False
        cut = self.rng.choice((r.start, r.end, self.rng.randint(r.start, max(r.start, r.end - 1))))
        if cut <= 2 or cut >= len(buf):
            return False
        del buf[cut:]
        return True

    def duplicate(self, buf: bytearray, regions: list[Region]) -> bool:
        r = self._pick(regions, lambda r: 0 < r.end - r.start <= 1 << 16 and r.kind != "scan")
        if r is None:
            return False
        piece = bytes(buf[r.start:r.end])
        where = self.rng.choice((r.end, r.start, self.rng.choice(regions).start))
        buf[where:where] = piece
        return True

    def remove(self, buf: bytearray, regions: list[Region]) -> bool:
        r = self._pick(regions, lambda r: r.start > 0 and r.end > r.start)
        if r is None:
            return False
        del buf[r.start:r.end]
        return True

    def reorder(self, buf: bytearray, regions: list[Region]) -> bool:
        lvl = [r for r in regions if r.start > 0 and r.end > r.start]
        if len(lvl) < 2:
            return False
        a, b = sorted(self.rng.sample(lvl, 2), key=lambda r: r.start)
        if a.level != b.level or a.end > b.start:
            return False
        buf[a.start:b.end] = buf[b.start:b.end] + buf[a.end:b.start] + buf[a.start:a.end]
        return True

    def splice(self, buf: bytearray, regions: list[Region]) -> bool:
        """Insert a structure from another input (same format mostly: a JPEG APP1 into a JPEG)."""
        if self.splice_pool is None:
            return False
        other = self.splice_pool()
        oregs = [r for r in structure.parse(other) if 0 < r.end - r.start <= 1 << 16 and r.kind != "scan"]
        if not oregs:
            return False
        piece = other[(o := self.rng.choice(oregs)).start:o.end]
        where = self.rng.choice([r.start for r in regions if r.start > 0] + [r.end for r in regions] or [len(buf)])
        buf[where:where] = piece
        return True

    def insert_structure(self, buf: bytearray, regions: list[Region]) -> bool:
        """A fresh structure of this format with a canary-ish payload (a second iCCP, an extra VP8L...)."""
        from .seeds import MARK
        payload = self.rng.choice((b"", MARK, b"Exif\0\0" + MARK, bytes(self.rng.randrange(40)),
                                   zlib.compress(b"<x:xmpmeta>" + MARK)))
        if buf[:8] == b"\x89PNG\r\n\x1a\n":
            t = self.rng.choice(PNG_TYPES)
            piece = struct.pack(">I", len(payload)) + t + payload + struct.pack(">I", zlib.crc32(t + payload))
        elif buf[:4] == b"RIFF":
            piece = self.rng.choice(RIFF_TYPES) + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)
        elif buf[:3] == b"\xff\xd8\xff":
            piece = bytes([0xFF, self.rng.choice(JPEG_MARKERS)]) + struct.pack(">H", len(payload) + 2) + payload
        elif buf[4:8] == b"ftyp" or buf[:4] == b"\0\0\0\x0c":
            piece = struct.pack(">I", len(payload) + 8) + self.rng.choice(BOX_TYPES) + payload
        elif buf[:3] == b"GIF":
            piece = bytes([0x21, self.rng.choice(GIF_LABELS)]) + bytes([len(payload[:255])]) + payload[:255] + b"\0"
        else:
            return False
        where = self.rng.choice([r.start for r in regions if r.start > 0] + [r.end for r in regions] or [len(buf)])
        buf[where:where] = piece
        return True

    def tiff_field(self, buf: bytearray, regions: list[Region]) -> bool:
        """IFD entry counts, value offsets (incl. loops back to an IFD), types and tags."""
        r = self._pick(regions, lambda r: bool(r.extra) and r.kind.startswith(("tag", "IFD", "TIFF")))
        if r is None:
            return False
        name = self.rng.choice(sorted(r.extra))
        at, size = r.extra[name]
        if at + size > len(buf):
            return False
        e = ">" if r.big_endian else "<"
        fmt = {2: "H", 4: "I", 8: "Q"}.get(size)
        if fmt is None:
            return False
        mx = (1 << (8 * size)) - 1
        ifds = [x for x in regions if x.kind == "IFD"]
        tiff_base = next((x.start for x in regions if x.kind == "TIFF header"), 0)
        if name == "tag":
            new = self.rng.choice(TIFF_TAGS)
        elif name == "type":
            new = self.rng.choice((1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 13, 16, 17, 18, 0, 19, 0xFFFF))
        elif name in ("value", "next", "first_ifd") and ifds and self.rng.random() < 0.5:
            new = self.rng.choice(ifds).start - tiff_base  # point at an IFD: loops, sharing
        else:
            cur = struct.unpack_from(e + fmt, buf, at)[0]
            new = self.rng.choice((cur + self.rng.choice((-1, 1, 2, -12, 12)), self.rng.choice(INTERESTING_32),
                                   len(buf) - tiff_base + self.rng.randint(-8, 8), cur * 2))
        struct.pack_into(e + fmt, buf, at, new & mx)
        return True

    def isobmff_field(self, buf: bytearray, regions: list[Region]) -> bool:
        """Item types in infe, offsets/lengths in iloc, and box version/flags."""
        r = self._pick(regions, lambda r: bool(r.extra) and ("item_type" in r.extra or "iloc_fields" in r.extra))
        if r is None:
            return False
        if "item_type" in r.extra:
            at, n = r.extra["item_type"]
            if n == 4 and at + 4 <= len(buf):
                buf[at:at + 4] = self.rng.choice(ITEM_TYPES)
                return True
            return False
        at, n = r.extra["iloc_fields"]
        k = at + self.rng.randrange(max(1, n))
        if k < len(buf):
            buf[k] = self.rng.choice(INTERESTING_8 + (buf[k] ^ 1, (buf[k] + 1) & 0xFF))
            return True
        return False

    def gif_subblock(self, buf: bytearray, regions: list[Region]) -> bool:
        r = self._pick(regions, lambda r: bool(r.extra.get("subblocks")))
        if r is None:
            return False
        at = self.rng.choice(r.extra["subblocks"])
        if at >= len(buf):
            return False
        buf[at] = self.rng.choice(INTERESTING_8 + (max(0, buf[at] - 1), min(255, buf[at] + 1)))
        return True

    def payload_edit(self, buf: bytearray, regions: list[Region]) -> bool:
        """Change the first bytes of a payload: identifiers (Exif\\0\\0, ICC_PROFILE, XMP) live there."""
        r = self._pick(regions, lambda r: r.end - r.start > 4)
        if r is None:
            return False
        hdr = (r.len_at + r.len_size - r.start) if r.len_at is not None else (r.type_len or 0)
        at = r.start + max(hdr, 0) + self.rng.randrange(0, 12)
        if at >= len(buf):
            return False
        if self.rng.random() < 0.5:
            tok = self.rng.choice(TOKENS)
            buf[at:at + len(tok)] = tok
        else:
            buf[at] = self.rng.randrange(256)
        return True

    # -- byte-level operators -------------------------------------------------------------
    def bit_flip(self, buf: bytearray, regions: list[Region]) -> bool:
        if not buf:
            return False
        at = self.rng.randrange(len(buf))
        buf[at] ^= 1 << self.rng.randrange(8)
        return True

    def byte_set(self, buf: bytearray, regions: list[Region]) -> bool:
        if not buf:
            return False
        buf[self.rng.randrange(len(buf))] = self.rng.choice(INTERESTING_8)
        return True

    def insert_bytes(self, buf: bytearray, regions: list[Region]) -> bool:
        at = self.rng.randrange(len(buf) + 1)
        buf[at:at] = self.rng.choice((b"\0", b"\xff", bytes(self.rng.randrange(1, 17)),
                                      self.rng.randbytes(self.rng.randrange(1, 9))))
        return True

    def token(self, buf: bytearray, regions: list[Region]) -> bool:
        at = self.rng.randrange(len(buf) + 1)
        tok = self.rng.choice(TOKENS)
        if self.rng.random() < 0.5:
            buf[at:at + len(tok)] = tok
        else:
            buf[at:at] = tok
        return True

    def copy_range(self, buf: bytearray, regions: list[Region]) -> bool:
        if len(buf) < 4:
            return False
        a = self.rng.randrange(len(buf))
        n = self.rng.randrange(1, min(256, len(buf) - a) + 1)
        b = self.rng.randrange(len(buf))
        buf[b:b + n] = buf[a:a + n]
        return True

    def raw_truncate(self, buf: bytearray, regions: list[Region]) -> bool:
        if len(buf) < 8:
            return False
        del buf[self.rng.randrange(4, len(buf)):]
        return True


def fix_png_crcs(buf: bytearray) -> None:
    """Recompute every chunk CRC so a mutation reaches past the CRC check (a real attacker would)."""
    i, n = 8, len(buf)
    count = 0
    while i + 12 <= n and count < 10000:
        ln = struct.unpack_from(">I", buf, i)[0]
        if i + 12 + ln > n:
            break
        struct.pack_into(">I", buf, i + 8 + ln, zlib.crc32(bytes(buf[i + 4:i + 8 + ln])))
        i += 12 + ln
        count += 1
