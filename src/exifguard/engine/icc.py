"""Is this blob really an ICC colour profile?  (Used by the walkers before keeping one.)

A colour profile is the one opaque blob the walkers keep by default, so it is the
obvious place to hide text: an APP2 `ICC_PROFILE` segment, a PNG iCCP chunk or a WebP
ICCP chunk whose "profile" is a letter or an XMP packet would otherwise travel
verbatim.  A blob is kept only when it is what it claims to be, checked structurally
(ICC.1:2022 §7, no colour maths):

* a 128-byte header whose declared size is the blob's size (up to 3 trailing zero
  bytes of container padding are tolerated: a real Samsung HEIC pads its profile so),
  the `acsp` signature at offset 36, a known major version (2, 4 or 5), a known
  profile/device class, printable colour-space codes and an all-zero reserved area;
* a tag count whose table fits, each tag's signature and type signature printable,
  each tag's data inside the profile and after the table;
* every byte that neither the header, the tag table nor some tag's data covers is zero
  (alignment padding), so nothing rides along between the tags.

The verifiers carry their own, separately written copy of these rules
(`engine.verify._icc`); this module must not be imported from there.
"""

from __future__ import annotations

import struct

HEADER_LEN = 128
MAX_TAGS = 1024
"""More tags than any real profile has (the largest in the wild hold a few dozen)."""
MAX_SLACK = 3
"""Zero bytes a container may append after the profile's declared end."""

_CLASSES = frozenset({b"scnr", b"mntr", b"prtr", b"link", b"spac", b"abst", b"nmcl",
                      b"cenc", b"mid ", b"mlnk", b"mvis"})
_VERSIONS = frozenset({2, 4, 5})


def _sig_ok(sig: bytes) -> bool:
    """A 4-byte signature: printable ASCII (letters, digits, space and a few marks)."""
    return len(sig) == 4 and all(0x20 <= b < 0x7F for b in sig)


def problem(profile: bytes) -> str | None:
    """None when `profile` is a structurally sound ICC profile, else a reason.

    The reason names the broken rule only (never bytes of the blob), so it can go to a
    log or an error message.
    """
    n = len(profile)
    if n < HEADER_LEN + 4:
        return "too short for an ICC header and tag count"
    declared = struct.unpack_from(">I", profile, 0)[0]
    if declared < HEADER_LEN + 4 or declared > n:
        return "declared profile size does not match the data"
    if n - declared > MAX_SLACK or any(profile[declared:]):
        return "data follows the declared end of the profile"
    if profile[36:40] != b"acsp":
        return "no 'acsp' profile signature"
    if profile[8] not in _VERSIONS:
        return "unknown ICC major version"
    if profile[12:16] not in _CLASSES:
        return "unknown profile class"
    if not (_sig_ok(profile[16:20]) and _sig_ok(profile[20:24])):
        return "colour space signature is not a signature"
    if any(profile[100:HEADER_LEN]):
        return "reserved header bytes are not zero"
    count = struct.unpack_from(">I", profile, HEADER_LEN)[0]
    table_end = HEADER_LEN + 4 + 12 * count
    if count > MAX_TAGS or table_end > declared:
        return "tag table does not fit in the profile"
    spans: list[tuple[int, int]] = [(0, table_end)]
    for k in range(count):
        sig, off, size = struct.unpack_from(">4sII", profile, HEADER_LEN + 4 + 12 * k)
        if not _sig_ok(sig):
            return "a tag signature is not a signature"
        if off < table_end or size < 8 or off + size > declared:
            return "a tag's data lies outside the profile"
        if not _sig_ok(profile[off:off + 4]):
            return "a tag's type signature is not a signature"
        spans.append((off, off + size))
    pos = 0
    for a, b in sorted(spans):
        if a > pos and any(profile[pos:a]):
            return "bytes between the tags are not zero"
        pos = max(pos, b)
    if pos < declared and any(profile[pos:declared]):
        return "bytes after the last tag are not zero"
    return None


def is_profile(profile: bytes) -> bool:
    return problem(profile) is None


JPEG_ICC_ID = b"ICC_PROFILE\0"
JPEG_CHUNK_HEAD = len(JPEG_ICC_ID) + 2  # identifier + sequence number + chunk count


def assemble_jpeg(chunks: list[bytes]) -> tuple[bytes | None, str | None]:
    """Reassemble the payloads of a JPEG's `ICC_PROFILE` APP2 segments (file order).

    Each payload is `ICC_PROFILE\\0`, a 1-based sequence number, the chunk count and a
    piece of the profile.  One profile per image: every chunk must declare the same
    count, that many chunks must be present, and each number 1..count exactly once.
    Returns (profile, None) or (None, reason).
    """
    if not chunks:
        return None, "no ICC chunks"
    total = chunks[0][len(JPEG_ICC_ID) + 1] if len(chunks[0]) >= JPEG_CHUNK_HEAD else 0
    if total == 0 or total != len(chunks):
        return None, "ICC chunk count does not match the segments present (more than one profile?)"
    parts: dict[int, bytes] = {}
    for c in chunks:
        if len(c) < JPEG_CHUNK_HEAD or not c.startswith(JPEG_ICC_ID):
            return None, "an ICC segment is too short"
        seq, count = c[len(JPEG_ICC_ID)], c[len(JPEG_ICC_ID) + 1]
        if count != total or not 1 <= seq <= total or seq in parts:
            return None, "ICC chunk sequence numbers are inconsistent (more than one profile?)"
        parts[seq] = c[JPEG_CHUNK_HEAD:]
    return b"".join(parts[k] for k in range(1, total + 1)), None
