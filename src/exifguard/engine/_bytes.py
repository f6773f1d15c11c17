"""Byte-level primitives shared by the format walkers and the verifiers."""

from __future__ import annotations


def all_zero(data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> bool:
    """True when ``data[start:end]`` holds only zero bytes (or nothing).

    Why not ``not any(data[start:end])``: padding, trailers and blanked boxes can be
    megabytes long, and `bytes.count` runs in C without copying the slice.  This is a
    fact about bytes, not about any format, so sharing it keeps the verifiers
    independent of the walkers' parsing.
    """
    a, b, _ = slice(start, end).indices(len(data))
    if b <= a:
        return True
    if isinstance(data, memoryview):  # no count(): copy just the slice
        return bytes(data[a:b]).count(0) == b - a
    return data.count(0, a, b) == b - a
