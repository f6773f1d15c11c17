"""Colour profiles for tests: a real one (littlecms via Pillow) and look-alikes that are not.

The look-alikes are what issue 11 found travelling verbatim: text where a profile
should be, a profile with a second payload appended, two profiles in one image.
"""

from __future__ import annotations

import struct
from functools import lru_cache

from PIL import ImageCms

ICC_ID = b"ICC_PROFILE\0"


@lru_cache(maxsize=None)
def srgb() -> bytes:
    """A genuine ICC profile (Pillow's built-in sRGB, a few hundred bytes)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def text_posing_as_profile(marker: bytes) -> bytes:
    """Plain text with nothing of an ICC header (what a careless or hostile writer puts)."""
    return b"Name: Jane Doe, phone +1 555 0100, " + marker + b"\n" * 200


def profile_with_payload(marker: bytes) -> bytes:
    """A real profile whose declared size is stretched over an appended payload."""
    base = srgb()
    body = base + marker + bytes(16)
    return struct.pack(">I", len(body)) + body[4:]


def jpeg_chunks(profile: bytes, pieces: int = 1, *, count: int | None = None,
                first_seq: int = 1) -> list[bytes]:
    """`ICC_PROFILE` APP2 payloads splitting `profile` into `pieces` parts."""
    step = -(-len(profile) // pieces)
    parts = [profile[k:k + step] for k in range(0, len(profile), step)]
    total = len(parts) if count is None else count
    return [ICC_ID + bytes([first_seq + k, total]) + p for k, p in enumerate(parts)]
