"""The shared zero-byte test every walker and verifier relies on."""

from __future__ import annotations

import pytest

from exifguard.engine._bytes import all_zero


@pytest.mark.parametrize("kind", [bytes, bytearray, lambda b: memoryview(bytes(b))])
def test_all_zero_matches_not_any_on_every_slice(kind) -> None:
    raw = b"\0\0\x01\0\0\0\xff\0"
    data = kind(raw)
    for a in range(-10, len(raw) + 3):
        for b in [None, *range(-10, len(raw) + 3)]:
            assert all_zero(data, a, b) == (not any(raw[a:b])), (a, b)
    assert all_zero(kind(b"")) and all_zero(kind(bytes(5000)))
    assert not all_zero(kind(bytes(4999) + b"\x01"))
