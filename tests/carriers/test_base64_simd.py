"""The SIMD base64 fast path must accept and refuse exactly what the strict decoder does."""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exifguard.carriers import base64text

ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _strict(src: bytes) -> bytes | str:
    try:
        return binascii.a2b_base64(src, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        return type(exc).__name__


def _ours(src: bytes) -> bytes | str:
    try:
        return base64text.strict_decode(src, simd=src.rstrip(b"=").find(b"=") < 0)
    except (binascii.Error, ValueError) as exc:
        return type(exc).__name__


def test_fast_path_is_present() -> None:
    """pybase64 is a runtime dependency; without it big data URLs decode 5x slower."""
    assert base64text._b64decode_fast is not None  # noqa: SLF001


@given(st.binary(max_size=300))
def test_encoded_bytes_decode_identically(raw: bytes) -> None:
    enc = base64.b64encode(raw)
    assert _ours(enc) == _strict(enc) == raw


@given(st.lists(st.sampled_from(list(ALPHABET + b"=-_ \n*\x00\xff")), max_size=40).map(bytes))
def test_arbitrary_text_same_verdict(text: bytes) -> None:
    text += b"=" * (-len(text) % 4)
    assert _ours(text) == _strict(text)


@pytest.mark.parametrize("text", [b"AB==CD==", b"AB=C", b"=ABC", b"ABCD=", b"AB\nCD==", b"ABC*", b"QR==", b"QUJD"])
def test_edge_cases_same_verdict(text: bytes, monkeypatch) -> None:
    expected = _strict(text)
    assert _ours(text) == expected
    monkeypatch.setattr(base64text, "_b64decode_fast", None)
    assert _ours(text) == expected
