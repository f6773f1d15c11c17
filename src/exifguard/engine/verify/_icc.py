"""The verifiers' own check that a kept colour profile is an ICC profile and nothing else.

Written apart from `engine.icc` on purpose (a checker that shared the walker's parser
would share its blind spots).  Rules, from ICC.1 §7: header `acsp` at 36, a known
major version and profile class, a declared size equal to the blob (at most 3 zero
bytes of container padding after it), a tag table that fits, every tag's data after
the table and inside the profile, zero reserved header bytes and zero bytes wherever
no tag points.
"""

from __future__ import annotations

from ..errors import ScrubError

_KNOWN_CLASSES = {b"scnr", b"mntr", b"prtr", b"link", b"spac", b"abst", b"nmcl",
                  b"cenc", b"mid ", b"mlnk", b"mvis"}


def _be(b: bytes, at: int) -> int:
    return int.from_bytes(b[at:at + 4], "big")


def _printable4(b: bytes) -> bool:
    return len(b) == 4 and min(b) >= 0x20 and max(b) <= 0x7E


def check(blob: bytes, where: str) -> None:
    """Raise ScrubError unless `blob` is one structurally sound ICC profile."""
    size = len(blob)
    if size < 132:
        raise ScrubError(f"{where}: colour profile is too short to be ICC")
    declared = _be(blob, 0)
    if not 132 <= declared <= size or size - declared > 3 or blob[declared:].count(0) != size - declared:
        raise ScrubError(f"{where}: colour profile size does not match its header")
    if blob[36:40] != b"acsp" or blob[8] not in (2, 4, 5) or bytes(blob[12:16]) not in _KNOWN_CLASSES:
        raise ScrubError(f"{where}: colour profile header is not an ICC header")
    if not (_printable4(blob[16:20]) and _printable4(blob[20:24])):
        raise ScrubError(f"{where}: colour profile declares no colour space")
    if blob[100:128].count(0) != 28:
        raise ScrubError(f"{where}: colour profile reserved bytes are set")
    tags = _be(blob, 128)
    first_free = 132 + tags * 12
    if tags > 1024 or first_free > declared:
        raise ScrubError(f"{where}: colour profile tag table runs past its end")
    spans = [(0, first_free)]
    for k in range(tags):
        entry = 132 + 12 * k
        sig, off, length = blob[entry:entry + 4], _be(blob, entry + 4), _be(blob, entry + 8)
        if not _printable4(sig) or off < first_free or length < 8 or off + length > declared \
                or not _printable4(blob[off:off + 4]):
            raise ScrubError(f"{where}: colour profile tag {k} is out of bounds or untyped")
        spans.append((off, off + length))
    # every byte nothing accounts for must be zero
    spans.sort(reverse=True)
    reach = 0
    while spans:
        lo, hi = spans.pop()
        if lo > reach and blob.count(0, reach, lo) != lo - reach:
            raise ScrubError(f"{where}: colour profile holds bytes outside its tags")
        reach = max(reach, hi)
    if blob.count(0, reach, declared) != declared - reach:
        raise ScrubError(f"{where}: colour profile holds bytes after its last tag")


def jpeg_profile(payloads: list[bytes], where: str) -> bytes:
    """Join the `ICC_PROFILE` APP2 payloads of one JPEG into its single profile.

    The chunk count must be the same in every segment and equal to the number of
    segments, and each sequence number 1..count must occur exactly once.
    """
    head = 14
    numbers = [p[12] for p in payloads if len(p) >= head]
    counts = {p[13] for p in payloads if len(p) >= head}
    if len(numbers) != len(payloads):
        raise ScrubError(f"{where}: an ICC segment is cut short")
    if counts != {len(payloads)} or sorted(numbers) != list(range(1, len(payloads) + 1)):
        raise ScrubError(f"{where}: the ICC segments do not make up exactly one profile")
    by_number = {p[12]: p[head:] for p in payloads}
    return b"".join(by_number[k] for k in range(1, len(payloads) + 1))
