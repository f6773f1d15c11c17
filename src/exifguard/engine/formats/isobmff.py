"""A bounded ISOBMFF box reader shared by the HEIF/AVIF and JPEG XL walkers.

ISOBMFF (ISO/IEC 14496-12) is a tree of length-prefixed boxes: a 32-bit size, a
4-byte type, an optional 64-bit "largesize" (size == 1), and for `uuid` boxes a
16-byte user type.  Size 0 means "to the end of the file" and is only legal for a
top-level box.  Every size is checked against the enclosing range before it is
used, and a shared `Budget` caps the number of boxes and entries walked, so a
hostile file fails with `ScrubError` quickly and in bounded memory.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ScrubError
from .._bytes import type_code


@dataclass(frozen=True, slots=True)
class Box:
    """One box: `start` is where its size field begins, `body` where its payload begins."""

    type: bytes
    start: int
    body: int
    end: int
    largesize: bool = False

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def name(self) -> str:
        """The type as text for reports (non-printable bytes escaped)."""
        return printable_type(self.type)


def printable_type(t: bytes) -> str:
    """A box type for reports and errors: letters, digits and spaces as they are, else hex."""
    return type_code(t)


def is_fourcc(t: bytes) -> bool:
    """Plausible box type: four printable ASCII bytes (what every registered type is)."""
    return len(t) == 4 and all(0x20 <= b < 0x7F for b in t)


class Budget:
    """Counts structures walked across one file; raises once the limit is passed."""

    __slots__ = ("fmt", "left")

    def __init__(self, fmt: str, limit: int) -> None:
        self.fmt = fmt
        self.left = limit

    def spend(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise ScrubError(f"{self.fmt}: too many boxes or entries; refusing a file built to exhaust the cleaner")


def read_header(data: bytes | bytearray, pos: int, end: int, *, fmt: str, top_level: bool) -> Box:
    """Parse the box header at `pos` inside [pos, end).  Raises ScrubError when it does not fit."""
    if pos + 8 > end:
        raise ScrubError(f"{fmt}: truncated box header at offset {pos}")
    size, btype = struct.unpack_from(">I4s", data, pos)
    body = pos + 8
    large = False
    if size == 1:
        if pos + 16 > end:
            raise ScrubError(f"{fmt}: truncated 64-bit box size at offset {pos}")
        size = struct.unpack_from(">Q", data, pos + 8)[0]
        body = pos + 16
        large = True
        if size < 16:
            raise ScrubError(f"{fmt}: box '{printable_type(btype)}' at offset {pos} has an impossible 64-bit size")
    elif size == 0:
        if not top_level:
            raise ScrubError(f"{fmt}: nested box '{printable_type(btype)}' at offset {pos} claims to run to the "
                             "end of the file")
        size = end - pos
    elif size < 8:
        raise ScrubError(f"{fmt}: box '{printable_type(btype)}' at offset {pos} has an impossible size ({size})")
    if pos + size > end:
        raise ScrubError(f"{fmt}: box '{printable_type(btype)}' at offset {pos} runs past the end of its "
                         f"container ({size} bytes declared, {end - pos} available)")
    if btype == b"uuid":
        body += 16
        if body > pos + size:
            raise ScrubError(f"{fmt}: uuid box at offset {pos} is too short for its user type")
    return Box(btype, pos, body, pos + size, large)


def iter_boxes(data: bytes | bytearray, start: int, end: int, budget: Budget, *,
               top_level: bool = False) -> Iterator[Box]:
    """Yield the boxes that exactly tile [start, end).  Raises ScrubError on any overrun."""
    pos = start
    while pos < end:
        budget.spend()
        box = read_header(data, pos, end, fmt=budget.fmt, top_level=top_level)
        yield box
        pos = box.end


class Reader:
    """Big-endian field reader over one box payload that never reads past its end."""

    __slots__ = ("data", "pos", "end", "fmt", "what")

    def __init__(self, data: bytes | bytearray, pos: int, end: int, fmt: str, what: str) -> None:
        self.data, self.pos, self.end, self.fmt, self.what = data, pos, end, fmt, what

    def _need(self, n: int) -> None:
        if self.pos + n > self.end:
            raise ScrubError(f"{self.fmt}: '{self.what}' box is truncated")

    def uint(self, nbytes: int) -> int:
        if nbytes == 0:
            return 0
        self._need(nbytes)
        v = int.from_bytes(self.data[self.pos:self.pos + nbytes], "big")
        self.pos += nbytes
        return v

    def u8(self) -> int:
        return self.uint(1)

    def u16(self) -> int:
        return self.uint(2)

    def u32(self) -> int:
        return self.uint(4)

    def fourcc(self) -> bytes:
        self._need(4)
        v = bytes(self.data[self.pos:self.pos + 4])
        self.pos += 4
        return v

    def cstring(self) -> tuple[int, bytes]:
        """A NUL-terminated string: (offset where it starts, its bytes).  A missing NUL at the
        very end of the box is tolerated (some writers omit it)."""
        at = self.pos
        nul = self.data.find(b"\0", self.pos, self.end)
        if nul < 0:
            self.pos = self.end
            return at, bytes(self.data[at:self.end])
        self.pos = nul + 1
        return at, bytes(self.data[at:nul])

    def full_header(self) -> tuple[int, int]:
        """(version, flags) of a FullBox."""
        return self.u8(), self.uint(3)

    def left(self) -> int:
        return self.end - self.pos

    def require_count(self, count: int, min_each: int) -> None:
        """Reject an entry count that cannot fit in what is left of the box (hostile counts)."""
        if count * min_each > self.left():
            raise ScrubError(f"{self.fmt}: '{self.what}' box declares {count} entries but is too short "
                             "to hold them")
