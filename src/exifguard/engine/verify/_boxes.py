"""A small, separately written ISOBMFF box walker for the HEIF and JPEG XL verifiers.

It repeats none of `engine.formats.isobmff` on purpose: a verifier that shared the
writer's parser would share its bugs.  It returns plain tuples and raises
`ScrubError` for anything it cannot account for.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import ScrubError
from .._bytes import all_zero, type_code  # noqa: F401 - re-exported for the box verifiers


class B(NamedTuple):
    kind: bytes
    at: int       # first byte of the size field
    head: int     # header length (8 or 16; a uuid's 16-byte user type counts as payload)
    end: int

    @property
    def payload(self) -> int:
        return self.at + self.head


class Counter:
    """Caps the work one verification may do."""

    def __init__(self, limit: int) -> None:
        self.n = limit

    def tick(self, k: int = 1) -> None:
        self.n -= k
        if self.n < 0:
            raise ScrubError("too many structures to verify")


def u(buf: bytes, at: int, size: int, limit: int) -> int:
    """Unsigned big-endian integer of `size` bytes at `at`, which must end by `limit`."""
    if at + size > limit:
        raise ScrubError("a structure is cut short")
    return int.from_bytes(buf[at:at + size], "big")


def plausible_type(t: bytes) -> bool:
    return len(t) == 4 and min(t) >= 0x20 and max(t) <= 0x7E


def walk(buf: bytes, start: int, end: int, counter: Counter, *, top: bool = False) -> list[B]:
    """Boxes that exactly fill [start, end)."""
    out: list[B] = []
    at = start
    while at < end:
        counter.tick()
        size = u(buf, at, 4, end)
        kind = buf[at + 4:at + 8]
        if len(kind) < 4:
            raise ScrubError("a box header is cut short")
        head = 8
        if size == 1:
            size = u(buf, at + 8, 8, end)
            head = 16
        elif size == 0 and top:
            size = end - at
        if size < head or at + size > end:
            raise ScrubError(f"box '{type_code(kind)}' does not fit its container")
        out.append(B(kind, at, head, at + size))
        at += size
    return out


def top_level(buf: bytes, counter: Counter) -> tuple[list[B], int]:
    """Top-level boxes and where trailing non-box bytes begin (len(buf) if none)."""
    out: list[B] = []
    at, n = 0, len(buf)
    while at < n:
        if n - at < 8 or (out and not plausible_type(buf[at + 4:at + 8])):
            return out, at
        out.extend(walk(buf, at, at + _top_size(buf, at, n), counter, top=True))
        at = out[-1].end
    return out, n


def _top_size(buf: bytes, at: int, n: int) -> int:
    size = u(buf, at, 4, n)
    if size == 1:
        size = u(buf, at + 8, 8, n)
    elif size == 0:
        size = n - at
    if size < 8 or at + size > n:
        raise ScrubError("a top-level box runs past the end of the file")
    return size
