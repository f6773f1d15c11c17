"""Shared check for the per-format fuzz tests: a damaged file is refused or verifiably clean.

Each format's test builds its own seed file (so the damage lands in that format's
structures); what must hold for the result is the same everywhere and lives here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from exifguard import ScrubError, scrub
from exifguard.engine.report import ScrubOptions

BOTH_MODES = (ScrubOptions(), ScrubOptions(preserve_length=False))


def damage(seed: bytes, edits: Iterable[tuple[int, int]], cut: int) -> bytes:
    """`seed` cut to `cut` bytes with the byte values `edits` (offset, value) written in."""
    data = bytearray(seed[:cut])
    for at, value in edits:
        if at < len(data):
            data[at] = value
    return bytes(data)


def assert_refused_or_verified(data: bytes, verify: Callable[[bytes, ScrubOptions], None]) -> None:
    """In both modes: a ScrubError with a message, or an output the format's verifier accepts,
    of the input's length when length is preserved, and unchanged by a second scrub."""
    for opts in BOTH_MODES:
        try:
            res = scrub(data, options=opts)
        except ScrubError as exc:
            assert str(exc)
            continue
        verify(res.data, opts)
        if opts.preserve_length:
            assert len(res.data) == len(data)
        assert scrub(res.data, options=opts).data == res.data
