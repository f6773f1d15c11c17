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


def type_code(code: bytes | bytearray | memoryview) -> str:
    """A 4-byte type code (chunk, box, fourcc) as text safe for reports and logs.

    Registered codes are letters, digits and spaces (`VP8L`, `xml `, `iCCP`), and those
    are shown as they are.  Anything else is shown in hex: the code sits in the file,
    so a writer could use its bytes to carry something, and carrier names reach the
    event log, the audit log and `inspect`.
    """
    raw = bytes(code)
    if raw and raw.strip(b" ") and all(b == 0x20 or 0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A
                                       or 0x61 <= b <= 0x7A for b in raw):
        return raw.decode("ascii")
    return "0x" + raw.hex().upper()
