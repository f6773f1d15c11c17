"""Read just enough of an EXIF/TIFF block to say what it holds, and write a minimal one.

The engine never re-serialises an original EXIF block (that is how other tools
re-leak serial numbers).  This module only *reads* tag names (and, on request,
printable values) for the report, reads Orientation, and *writes* a fresh block
that contains nothing but Orientation.

All reads are bounded: at most `MAX_IFDS` directories and `MAX_ENTRIES` entries per
directory, offsets checked against the buffer, loops in IFD chains detected.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_IFDS = 64
MAX_ENTRIES = 4096

# (IFD kind, tag) -> name.  "0" covers IFD0/IFD1 and TIFF image directories.
_IFD0_TAGS: dict[int, str] = {
    0x00FE: "SubfileType", 0x0100: "ImageWidth", 0x0101: "ImageHeight", 0x0102: "BitsPerSample",
    0x0103: "Compression", 0x0106: "PhotometricInterpretation", 0x010D: "DocumentName",
    0x010E: "ImageDescription", 0x010F: "Make", 0x0110: "Model", 0x0111: "StripOffsets",
    0x0112: "Orientation", 0x0115: "SamplesPerPixel", 0x0116: "RowsPerStrip", 0x0117: "StripByteCounts",
    0x011A: "XResolution", 0x011B: "YResolution", 0x011C: "PlanarConfiguration", 0x011D: "PageName",
    0x0128: "ResolutionUnit", 0x0129: "PageNumber", 0x012D: "TransferFunction", 0x0131: "Software",
    0x0132: "ModifyDate", 0x013B: "Artist", 0x013C: "HostComputer", 0x013D: "Predictor",
    0x013E: "WhitePoint", 0x013F: "PrimaryChromaticities", 0x0140: "ColorMap", 0x0142: "TileWidth",
    0x0143: "TileLength", 0x0144: "TileOffsets", 0x0145: "TileByteCounts", 0x014A: "SubIFDs",
    0x0152: "ExtraSamples", 0x0153: "SampleFormat", 0x0201: "ThumbnailOffset",
    0x0202: "ThumbnailLength", 0x0211: "YCbCrCoefficients", 0x0212: "YCbCrSubSampling",
    0x0213: "YCbCrPositioning", 0x0214: "ReferenceBlackWhite", 0x02BC: "ApplicationNotes",
    0x4746: "Rating", 0x4749: "RatingPercent", 0x8298: "Copyright", 0x83BB: "IPTC-NAA",
    0x8649: "PhotoshopSettings", 0x8769: "ExifOffset", 0x8773: "ICC_Profile", 0x8825: "GPSInfo",
    0x9C9B: "XPTitle", 0x9C9C: "XPComment", 0x9C9D: "XPAuthor", 0x9C9E: "XPKeywords",
    0x9C9F: "XPSubject", 0xA480: "GDALMetadata", 0xA481: "GDALNoData", 0xC4A5: "PrintIM",
    0xC612: "DNGVersion", 0xC614: "UniqueCameraModel", 0xC62F: "CameraSerialNumber",
    0x830E: "ModelPixelScale", 0x8482: "ModelTiePoint", 0x85D8: "ModelTransform",
    0x87AF: "GeoTiffDirectory", 0x87B0: "GeoTiffDoubleParams", 0x87B1: "GeoTiffAsciiParams",
    0x9003: "DateTimeOriginal", 0x9286: "UserComment", 0xEA1C: "Padding", 0x0000: "GPSVersionID",
}
_EXIF_TAGS: dict[int, str] = {
    0x829A: "ExposureTime", 0x829D: "FNumber", 0x8822: "ExposureProgram", 0x8824: "SpectralSensitivity",
    0x8827: "ISO", 0x8830: "SensitivityType", 0x9000: "ExifVersion", 0x9003: "DateTimeOriginal",
    0x9004: "CreateDate", 0x9010: "OffsetTime", 0x9011: "OffsetTimeOriginal",
    0x9012: "OffsetTimeDigitized", 0x9101: "ComponentsConfiguration", 0x9102: "CompressedBitsPerPixel",
    0x9201: "ShutterSpeedValue", 0x9202: "ApertureValue", 0x9203: "BrightnessValue",
    0x9204: "ExposureCompensation", 0x9205: "MaxApertureValue", 0x9206: "SubjectDistance",
    0x9207: "MeteringMode", 0x9208: "LightSource", 0x9209: "Flash", 0x920A: "FocalLength",
    0x9214: "SubjectArea", 0x927C: "MakerNote", 0x9286: "UserComment", 0x9290: "SubSecTime",
    0x9291: "SubSecTimeOriginal", 0x9292: "SubSecTimeDigitized", 0xA000: "FlashpixVersion",
    0xA001: "ColorSpace", 0xA002: "ExifImageWidth", 0xA003: "ExifImageHeight",
    0xA004: "RelatedSoundFile", 0xA005: "InteropOffset", 0xA20E: "FocalPlaneXResolution",
    0xA20F: "FocalPlaneYResolution", 0xA210: "FocalPlaneResolutionUnit", 0xA217: "SensingMethod",
    0xA300: "FileSource", 0xA301: "SceneType", 0xA302: "CFAPattern", 0xA401: "CustomRendered",
    0xA402: "ExposureMode", 0xA403: "WhiteBalance", 0xA404: "DigitalZoomRatio",
    0xA405: "FocalLengthIn35mmFormat", 0xA406: "SceneCaptureType", 0xA407: "GainControl",
    0xA408: "Contrast", 0xA409: "Saturation", 0xA40A: "Sharpness", 0xA40C: "SubjectDistanceRange",
    0xA420: "ImageUniqueID", 0xA430: "OwnerName", 0xA431: "BodySerialNumber", 0xA432: "LensInfo",
    0xA433: "LensMake", 0xA434: "LensModel", 0xA435: "LensSerialNumber", 0xA460: "CompositeImage",
    0xA500: "Gamma", 0xEA1C: "Padding", 0xEA1D: "OffsetSchema",
}
_GPS_TAGS: dict[int, str] = {
    0x00: "GPSVersionID", 0x01: "GPSLatitudeRef", 0x02: "GPSLatitude", 0x03: "GPSLongitudeRef",
    0x04: "GPSLongitude", 0x05: "GPSAltitudeRef", 0x06: "GPSAltitude", 0x07: "GPSTimeStamp",
    0x08: "GPSSatellites", 0x09: "GPSStatus", 0x0A: "GPSMeasureMode", 0x0B: "GPSDOP",
    0x0C: "GPSSpeedRef", 0x0D: "GPSSpeed", 0x0E: "GPSTrackRef", 0x0F: "GPSTrack",
    0x10: "GPSImgDirectionRef", 0x11: "GPSImgDirection", 0x12: "GPSMapDatum",
    0x13: "GPSDestLatitudeRef", 0x14: "GPSDestLatitude", 0x15: "GPSDestLongitudeRef",
    0x16: "GPSDestLongitude", 0x17: "GPSDestBearingRef", 0x18: "GPSDestBearing",
    0x19: "GPSDestDistanceRef", 0x1A: "GPSDestDistance", 0x1B: "GPSProcessingMethod",
    0x1C: "GPSAreaInformation", 0x1D: "GPSDateStamp", 0x1E: "GPSDifferential",
    0x1F: "GPSHPositioningError",
}
_INTEROP_TAGS: dict[int, str] = {0x0001: "InteropIndex", 0x0002: "InteropVersion",
                                 0x1000: "RelatedImageFileFormat", 0x1001: "RelatedImageWidth",
                                 0x1002: "RelatedImageHeight"}

TAG_NAMES = {"IFD0": _IFD0_TAGS, "IFD1": _IFD0_TAGS, "ExifIFD": _EXIF_TAGS, "GPS": _GPS_TAGS,
             "InteropIFD": _INTEROP_TAGS, "SubIFD": _IFD0_TAGS}

# Pointer tags: which sub-directory each one opens.
_POINTERS = {0x8769: "ExifIFD", 0x8825: "GPS", 0xA005: "InteropIFD", 0x014A: "SubIFD"}

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
               16: 8, 17: 8, 18: 8}


def tag_name(ifd: str, tag: int) -> str:
    """ExifTool-style name for a tag, or `Tag0xNNNN` when we do not know it."""
    return TAG_NAMES.get(ifd, _IFD0_TAGS).get(tag) or f"{ifd}:Tag0x{tag:04X}"


@dataclass(frozen=True, slots=True)
class ExifEntry:
    ifd: str
    tag: int
    name: str
    type: int
    count: int
    value: str | None  # only filled when asked for values


@dataclass(frozen=True, slots=True)
class ExifSummary:
    entries: tuple[ExifEntry, ...]
    orientation: int | None
    has_thumbnail: bool
    truncated: bool
    """True when the block ended early or was malformed; what was read is still listed."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.name for e in self.entries))


def _printable(raw: bytes, limit: int = 120) -> str:
    text = raw.rstrip(b"\0").decode("latin-1", "replace")[:limit]
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def read_tiff(tiff: bytes, *, collect_values: bool = False) -> ExifSummary:
    """Summarise a TIFF-structured EXIF block (starting at its `II*\\0`/`MM\\0*` header).

    Never raises on malformed input: a privacy report must still list what it could read,
    and the block is removed wholesale anyway.
    """
    entries: list[ExifEntry] = []
    orientation: int | None = None
    has_thumb = False
    truncated = False
    n = len(tiff)
    if n < 8 or tiff[:4] not in (b"II*\0", b"MM\0*"):
        return ExifSummary((), None, False, True)
    bo = "<" if tiff[:2] == b"II" else ">"
    u16 = struct.Struct(bo + "H").unpack_from
    u32 = struct.Struct(bo + "I").unpack_from

    queue: list[tuple[str, int]] = [("IFD0", u32(tiff, 4)[0])]
    seen: set[int] = set()
    while queue and len(seen) < MAX_IFDS:
        ifd, off = queue.pop(0)
        if off == 0:
            continue
        if off in seen or off + 2 > n:
            truncated = truncated or off + 2 > n
            continue
        seen.add(off)
        count = u16(tiff, off)[0]
        if count > MAX_ENTRIES or off + 2 + 12 * count > n:
            truncated = True
            count = min(count, max(0, (n - off - 2) // 12), MAX_ENTRIES)
        thumb_fields = 0
        for i in range(count):
            p = off + 2 + 12 * i
            tag, typ, cnt = u16(tiff, p)[0], u16(tiff, p + 2)[0], u32(tiff, p + 4)[0]
            name = tag_name(ifd, tag)
            size = _TYPE_SIZES.get(typ, 1) * cnt
            value_at = p + 8 if size <= 4 else u32(tiff, p + 8)[0]
            value: str | None = None
            if tag == 0x0112 and ifd == "IFD0" and typ == 3 and cnt >= 1:
                orientation = u16(tiff, p + 8)[0]
            if tag in _POINTERS and ifd in ("IFD0", "IFD1", "ExifIFD", "SubIFD") and typ in (4, 13):
                sub = _POINTERS[tag]
                if cnt == 1 or size <= 4:
                    queue.append((sub, u32(tiff, p + 8)[0]))
                elif value_at + 4 * min(cnt, 16) <= n:
                    for k in range(min(cnt, 16)):
                        queue.append((sub, u32(tiff, value_at + 4 * k)[0]))
            if ifd == "IFD1" and tag in (0x0201, 0x0202, 0x0111):
                thumb_fields += 1
            if collect_values and tag not in _POINTERS:
                if value_at + size <= n:
                    raw = tiff[value_at:value_at + min(size, 256)]
                    if typ == 2:
                        value = _printable(raw)
                    elif typ == 3:
                        value = " ".join(str(u16(raw, 2 * k)[0]) for k in range(min(cnt, 16)))
                    elif typ == 4:
                        value = " ".join(str(u32(raw, 4 * k)[0]) for k in range(min(cnt, 16)))
                    elif typ in (5, 10):
                        fmt = bo + ("II" if typ == 5 else "ii")
                        parts = []
                        for k in range(min(cnt, 8)):
                            a, b = struct.unpack_from(fmt, raw, 8 * k)
                            parts.append(f"{a}/{b}")
                        value = " ".join(parts)
                    else:
                        value = f"<{size} bytes>"
            entries.append(ExifEntry(ifd, tag, name, typ, cnt, value))
        if thumb_fields:
            has_thumb = True
        link_at = off + 2 + 12 * count
        if ifd in ("IFD0", "IFD1") and link_at + 4 <= n:
            nxt = u32(tiff, link_at)[0]
            if nxt:
                queue.append(("IFD1", nxt))
    if queue:
        truncated = True
    return ExifSummary(tuple(entries), orientation, has_thumb, truncated)


def find_tiff_header(block: bytes) -> int:
    """Offset of the TIFF header inside an EXIF payload that may carry a prefix
    (`Exif\\0\\0`, HEIF's 4-byte offset, or none).  -1 if there is none."""
    for off in (0, 6, 4, 10):
        if block[off:off + 4] in (b"II*\0", b"MM\0*"):
            return off
    i = block.find(b"MM\0*", 0, 64)
    j = block.find(b"II*\0", 0, 64)
    cands = [x for x in (i, j) if x >= 0]
    return min(cands) if cands else -1


def valid_orientation(value: int | None) -> int | None:
    """Orientation worth keeping: 2..8.  1 is the default and 0 or >8 are invalid."""
    return value if value is not None and 2 <= value <= 8 else None


def minimal_tiff(orientation: int | None, *, big_endian: bool = True) -> bytes:
    """A fresh TIFF block: header, IFD0 with only Orientation (or no entry), next-IFD 0.

    26 bytes with Orientation, 14 bytes without.
    """
    bo = ">" if big_endian else "<"
    head = (b"MM\0*" if big_endian else b"II*\0") + struct.pack(bo + "I", 8)
    if orientation is None:
        return head + struct.pack(bo + "HI", 0, 0)
    entry = struct.pack(bo + "HHIHH", 0x0112, 3, 1, orientation, 0)
    return head + struct.pack(bo + "H", 1) + entry + struct.pack(bo + "I", 0)


MINIMAL_TIFF_LEN = len(minimal_tiff(1))
EMPTY_TIFF_LEN = len(minimal_tiff(None))
