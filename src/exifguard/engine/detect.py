"""Recognise image formats from their magic bytes — never from names or labels.

`sniff()` answers "is this an image, and which kind?" for the engine and for the
carrier layer (which looks for images inside request bodies).  It recognises more
formats than the engine can clean, on purpose: an image we cannot clean must be
reported as such (and blocked by the proxy's policy), never mistaken for opaque
bytes and forwarded.
"""

from __future__ import annotations

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_HEIF_GENERIC = {b"mif1", b"msf1", b"mif2", b"miaf"}
_AVIF_BRANDS = {b"avif", b"avis", b"avio"}
_JP2_SIG = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"

#: Formats the engine knows how to scrub (see `exifguard.engine.formats`).
SCRUBBABLE = frozenset({"JPEG", "PNG", "WEBP", "GIF", "HEIC", "HEIF", "AVIF", "TIFF", "JXL",
                        "BMP"})


def _isobmff_kind(data: bytes) -> str | None:
    if len(data) < 12 or data[4:8] != b"ftyp":
        return None
    size = int.from_bytes(data[0:4], "big")
    end = min(len(data), size if 16 <= size <= 4096 else 64)
    brands = {data[8:12]} | {data[i:i + 4] for i in range(16, end - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _HEIF_BRANDS:
        return "HEIC"
    if b"jxl " in brands:
        return "JXL"
    if brands & _HEIF_GENERIC:
        return "HEIF"
    if b"crx " in brands:
        return "CR3"
    return None


def sniff(data: bytes | bytearray | memoryview) -> str | None:
    """Return the image format name for these bytes, or None if they are not an image.

    Names: JPEG, PNG, GIF, WEBP, HEIC, HEIF, AVIF, TIFF, JXL (scrubbable) and BMP,
    ICO, CUR, JP2, PSD, CR3, DDS, QOI, EXR, SVG (recognised, not scrubbable).
    """
    head = bytes(data[:64])
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:12] == _JXL_CONTAINER or head[:2] == b"\xff\x0a":
        return "JXL"
    kind = _isobmff_kind(head if len(data) <= 64 else bytes(data[:4096]))
    if kind:
        return kind
    if head[:12] == _JP2_SIG or head[:4] == b"\xff\x4f\xff\x51":
        return "JP2"
    if head[:2] == b"BM" and len(head) >= 14 and int.from_bytes(head[2:6], "little") in (0, len(data)):
        return "BMP"
    if head[:4] == b"8BPS":
        return "PSD"
    if head[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00") and len(head) >= 6 and 0 < head[4] < 64:
        return "ICO" if head[2] == 1 else "CUR"
    if head[:4] == b"qoif":
        return "QOI"
    if head[:4] == b"DDS ":
        return "DDS"
    if head[:4] == b"\x76\x2f\x31\x01":
        return "EXR"
    return None


def is_image(data: bytes | bytearray | memoryview) -> bool:
    return sniff(data) is not None
