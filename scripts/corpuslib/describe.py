"""Rebuild manifest.json and exiftool_g1.json for a fetched corpus, on the reader's machine.

The tests read more than provenance from the manifest: each file's format, whether Pillow
decodes it, its orientation, its top-level structure and a summary of the private metadata
it carries (which tests use to decide what must be reported and what must be gone).  Those
values are real personal data from public test images, so they are never committed here;
this module derives them again from the fetched bytes, the way the corpus README says the
original manifest was made: ExifTool (`-j -a -G1 -n`, and `-G0:1` for family-0 groups),
Pillow, and a small structure lister.  Results can differ in detail from the original where
the local ExifTool or Pillow version differs; the fields the tests read were compared with
the original (tests/scripts/test_fetch_corpus.py does it when the original is present).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from .sources import Source

GENERATOR = "scripts/fetch-corpus"
EXIFTOOL_TIMEOUT = 600
THUMB_TAGS = {"ThumbnailImage", "ThumbnailOffset", "ThumbnailTIFF", "PreviewImage", "PhotoshopThumbnail",
              "JpgFromRaw", "OtherImage"}
COMMENT_TAGS = {"Comment", "UserComment", "XPComment"}
PEOPLE = {"Artist", "OwnerName", "Copyright", "CopyrightNotice", "Rights", "By-line", "By-lineTitle", "Creator",
          "CreatorAddress", "CreatorCity", "CreatorCountry", "CreatorPostalCode", "CreatorRegion",
          "CreatorWorkEmail", "CreatorWorkTelephone", "CreatorWorkURL", "CreatorContactInfo", "Author",
          "XPAuthor", "Credit", "Source", "Writer-Editor", "CaptionWriter", "AuthorsPosition", "Contact",
          "PersonInImage", "RegionName", "ImageCreatorName", "LicensorName", "CopyrightOwnerName",
          "PersonInImageName", "Byline", "BylineTitle"}
LOCATION = {"City", "Country", "Country-PrimaryLocationName", "Country-PrimaryLocationCode", "CountryCode",
            "Sub-location", "Sublocation", "Province-State", "State", "Location"}
SERIAL_PARTS = ("Serial", "UniqueID", "CameraID", "SensorID", "BodyID", "DocumentID", "InstanceID",
                "ContentIdentifier", "UUID", "DeviceID", "OwnerID")
DEVICE = {"Make", "Model", "Software", "LensMake", "LensModel", "Lens", "LensInfo", "LensID", "CreatorTool",
          "HostComputer", "Firmware", "FirmwareVersion", "CameraType", "UniqueCameraModel",
          "CameraModelName", "ProcessingSoftware", "CameraModel", "DeviceModel", "DeviceManufacturer",
          "HandlerDescription"}
DATE_PARTS = ("Date", "DateTime", "TimeCreated", "TimeStamp")
DATE_SETTINGS = {"DateStampMode", "DateDisplayFormat"}
LOCATION_PARTS = ("City", "CountryName", "Sublocation", "ProvinceState", "LocationName")
FAMILY0_FLAGS = {"XMP": "xmp", "IPTC": "iptc", "ICC_Profile": "icc", "MakerNotes": "makernotes"}


class DescribeError(RuntimeError):
    """The corpus cannot be described here (the message says what to install or fix)."""


# -- format and decoding -----------------------------------------------------------------------

_HEIC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}


def sniff(data: bytes) -> str | None:
    """The format by magic bytes, spelled as the corpus manifest spells it."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] in (b"GIF8",):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"II*\0", b"MM\0*"):
        return "TIFF"
    if data[:2] == b"\xff\x0a" or data[:12] == b"\0\0\0\x0cJXL \r\n\x87\n":
        return "JXL"
    if data[:2] == b"BM":
        return "BMP"
    if data[4:8] == b"ftyp":
        size = int.from_bytes(data[:4], "big")
        major = data[8:12]
        brands = {data[i:i + 4] for i in range(16, min(size, len(data)), 4)}
        if major in (b"avif", b"avis"):
            return "AVIF"
        if major in _HEIC_BRANDS or (brands & _HEIC_BRANDS):
            return "HEIC"
        if b"avif" in brands or b"avis" in brands:
            return "AVIF"
        if major in (b"mif1", b"msf1"):
            return "HEIF"
    return None


def decodes_with_pillow(data: bytes) -> bool | None:
    """Whether Pillow (with pillow-heif when installed) fully decodes the image; None without Pillow."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        import pillow_heif
        pillow_heif.register_heif_opener()
    except ImportError:
        pass
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001 (any decoder complaint means "does not decode")
        return False


# -- structure ---------------------------------------------------------------------------------

def _collapse(items: list[str]) -> list[str]:
    out: list[str] = []
    count = 0
    for i, item in enumerate(items):
        count += 1
        if i + 1 == len(items) or items[i + 1] != item:
            out.append(item if count == 1 else f"{item}x{count}")
            count = 0
    return out


def _app_ident(payload: bytes) -> str:
    """The segment's identifier: the printable run at its start (first 16 bytes)."""
    if payload.startswith(b"Exif\0"):
        return "Exif"
    if payload.startswith(b"http://ns.adobe.com/xap/1.0/"):
        return "XMP"
    if payload.startswith(b"http://ns.adobe.com/xmp/extension/"):
        return "ExtendedXMP"
    head = payload[:16].lstrip(bytes(c for c in range(256) if not 32 <= c < 127))
    end = next((i for i, c in enumerate(head) if not 32 <= c < 127), len(head))
    return head[:end].decode("ascii").strip()


def jpeg_structure(d: bytes) -> list[str]:
    out: list[str] = []
    i, n = 2, len(d)
    while True:
        if i >= n:
            out.append("no-EOI")
            break
        if d[i] != 0xFF:
            out += [f"garbage@{i}", "no-EOI"]
            break
        while i < n and d[i] == 0xFF:
            i += 1
        if i >= n:
            out.append("truncated")
            break
        m = d[i]
        i += 1
        if m == 0xD9:
            out.append("EOI")
            if n - i:
                out.append(f"after-EOI:{n - i}-bytes")
            break
        if 0xD0 <= m <= 0xD7 or m == 0x01:
            out.append(f"RST{m - 0xD0}" if m != 0x01 else "TEM")
            continue
        if i + 2 > n:
            out.append("truncated")
            break
        length = int.from_bytes(d[i:i + 2], "big")
        if length < 2 or i + length > n:
            out.append("truncated")
            break
        payload = d[i + 2:i + length]
        i += length
        if 0xE0 <= m <= 0xEF:
            out.append(f"APP{m - 0xE0}:{_app_ident(payload)}")
        elif m == 0xFE:
            out.append("COM")
        elif m in (0xC4, 0xDB, 0xDD):
            out.append({0xC4: "DHT", 0xDB: "DQT", 0xDD: "DRI"}[m])
        elif 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            comps = payload[5] if len(payload) > 5 else 0
            out.append(f"SOF{m - 0xC0}/{comps}ch")
        elif m == 0xDA:
            out.append("SOS")
            # entropy-coded data runs to the next marker that is not a stuffed 00 or a restart
            j = i
            while True:
                j = d.find(b"\xff", j)
                if j < 0 or j + 1 >= n:
                    j = -1
                    break
                if d[j + 1] == 0 or 0xD0 <= d[j + 1] <= 0xD7 or d[j + 1] == 0xFF:
                    j += 1
                    continue
                break
            if j < 0:
                out.append("truncated")
                break
            i = j
        else:
            out.append(f"0xFF{m:02X}")
    return _collapse(out)


def gif_structure(d: bytes) -> list[str]:
    out: list[str] = []
    if len(d) < 13:
        return ["truncated"]
    i = 13
    if d[10] & 0x80:
        i += 3 * (2 << (d[10] & 7))

    def skip_blocks(j: int) -> int:
        while j < len(d) and d[j]:
            j += d[j] + 1
        return j + 1

    while i < len(d):
        b = d[i]
        if b == 0x3B:
            out.append("trailer")
            break
        if b == 0x21 and i + 1 < len(d):
            label = d[i + 1]
            if label == 0xFF and i + 2 < len(d) and d[i + 2] == 11:
                ident = d[i + 3:i + 14].decode("latin-1")
                out.append("App:" + "".join(c if c.isprintable() else "?" for c in ident))
                i = skip_blocks(i + 14)
            else:
                out.append({0xF9: "GCE", 0xFE: "Comment", 0x01: "PlainText"}.get(label, f"Ext{label:02X}"))
                i = skip_blocks(i + 2)
        elif b == 0x2C and i + 10 <= len(d):
            out.append("Image")
            flags = d[i + 9]
            i += 10
            if flags & 0x80:
                i += 3 * (2 << (flags & 7))
            i = skip_blocks(i + 1)
        else:
            out.append(f"garbage@{i}")
            break
    else:
        out.append("truncated")
    return _collapse(out)


def png_structure(d: bytes) -> list[str]:
    out: list[str] = []
    i = 8
    while i + 8 <= len(d):
        length = int.from_bytes(d[i:i + 4], "big")
        ctype = d[i + 4:i + 8].decode("latin-1")
        if i + 12 + length > len(d):
            out.append("truncated")
            break
        if ctype in ("tEXt", "zTXt", "iTXt"):
            key = d[i + 8:i + 8 + min(length, 79)].split(b"\0", 1)[0][:18].decode("latin-1")
            ctype = f"{ctype}:{key}"
        out.append(ctype)
        i += 12 + length
        if ctype == "IEND":
            break
    return _collapse(out)


def riff_structure(d: bytes) -> list[str]:
    out: list[str] = []
    i = 12
    while i + 8 <= len(d):
        out.append("".join(chr(c) if 32 <= c < 127 else f"\\x{c:02x}" for c in d[i:i + 4]))
        i += 8 + int.from_bytes(d[i + 4:i + 8], "little")
        i += i & 1
    return _collapse(out)


def box_structure(d: bytes) -> list[str]:
    out: list[str] = []
    i = 0
    while i + 8 <= len(d):
        size = int.from_bytes(d[i:i + 4], "big")
        kind = "".join(chr(c) if 32 <= c < 127 else f"\\x{c:02x}" for c in d[i + 4:i + 8])
        if size == 1 and i + 16 <= len(d):
            size = int.from_bytes(d[i + 8:i + 16], "big")
        elif size == 0:
            size = len(d) - i
        out.append(kind)
        if size < 8:
            break
        i += size
    return _collapse(out)


def structure(fmt: str | None, data: bytes) -> list[str]:
    if fmt == "JPEG":
        return jpeg_structure(data)
    if fmt == "GIF":
        return gif_structure(data)
    if fmt == "PNG":
        return png_structure(data)
    if fmt == "WEBP":
        return riff_structure(data)
    if fmt in ("HEIC", "HEIF", "AVIF") or (fmt == "JXL" and data[:2] != b"\xff\x0a"):
        return box_structure(data)
    return []


# -- ExifTool and the privacy summary ----------------------------------------------------------

def run_exiftool(paths: list[Path], group_args: list[str], exiftool: str) -> dict[str, dict]:
    """One ExifTool process over all files; {file name: tags}."""
    proc = subprocess.run([exiftool, "-j", "-a", *group_args, "-n", *map(str, paths)],
                          capture_output=True, timeout=EXIFTOOL_TIMEOUT)
    if not proc.stdout.strip():
        raise DescribeError(f"exiftool printed nothing (exit {proc.returncode})")
    return {Path(d["SourceFile"]).name: d for d in json.loads(proc.stdout)}


def _short(value: object) -> object:
    if isinstance(value, str):
        return value[:200]
    if isinstance(value, list):
        return [_short(v) for v in value[:20]]
    return value


def g1_view(tags: dict) -> dict:
    """exiftool_g1.json's form: ExifTool/System pseudo-tags and SourceFile dropped."""
    return {k: v for k, v in tags.items()
            if k != "SourceFile" and not k.startswith(("ExifTool:", "System:"))}


def privacy(g1: dict, g01: dict) -> tuple[dict, dict]:
    """The corpus README's privacy summary, and the comment tags, from ExifTool output."""
    out: dict = {"gps": {}, "datetime": {}, "device": {}, "serials": {}, "people": {},
                 "location_text": {}, "thumbnail": False, "xmp": False, "iptc": False, "icc": False,
                 "makernotes": False, "comment": False}
    comments: dict = {}
    for key, value in g1.items():
        group, _, tag = key.rpartition(":")
        if group in ("ExifTool", "System", "Composite", "SourceFile", "") or (
                group == "File" and tag != "Comment"):
            continue
        if group.startswith("ICC"):
            continue
        if (tag.startswith("GPS") or any(p in tag for p in ("Latitude", "Longitude", "Altitude"))) \
                and tag != "GlobalAltitude":
            out["gps"][key] = _short(value)
        elif any(t in tag for t in THUMB_TAGS):
            out["thumbnail"] = True
        elif tag in COMMENT_TAGS:
            if not _empty(value):
                out["comment"] = True
                comments[key] = _short(value)
        elif _empty(value):
            continue  # an empty field says nothing about anyone
        elif tag in PEOPLE:
            out["people"][key] = _short(value)
        elif tag in LOCATION or (tag.startswith(("LocationCreated", "LocationShown"))
                                 and tag.endswith(LOCATION_PARTS)):
            out["location_text"][key] = _short(value)
        elif any(p in tag for p in SERIAL_PARTS):
            out["serials"][key] = _short(value)
        elif tag in DEVICE:
            out["device"][key] = _short(value)
        elif any(p in tag for p in DATE_PARTS) and not tag.startswith(("OffsetTime", "TimeZone", "SubSec")) \
                and tag not in DATE_SETTINGS:
            out["datetime"][key] = _short(value)
    for key in g01:
        fam0 = key.split(":", 1)[0]
        if fam0 in FAMILY0_FLAGS:
            out[FAMILY0_FLAGS[fam0]] = True
    return out, comments


def _empty(value: object) -> bool:
    return value is None or value == [] or (isinstance(value, str) and not value.strip(" \0"))


def _orientation(g1: dict) -> tuple[int | None, str | None]:
    if isinstance(g1.get("IFD0:Orientation"), int):
        return g1["IFD0:Orientation"], "IFD0"
    for key, value in g1.items():
        group, _, tag = key.rpartition(":")
        if tag == "Orientation" and group not in ("Composite",) and isinstance(value, int):
            return value, group
    return None, None


# -- the whole corpus --------------------------------------------------------------------------

def find_exiftool() -> str | None:
    return shutil.which("exiftool")


def describe(dest: Path, sources: Iterable[Source], exiftool: str | None = None) -> tuple[list[dict], dict]:
    """(manifest entries, exiftool_g1 mapping) for the files of `sources` present under `dest`."""
    exiftool = exiftool or find_exiftool()
    if not exiftool:
        raise DescribeError("ExifTool is not installed: the tests' manifest is built from its output")
    srcs = list(sources)
    paths = [dest / s.file for s in srcs]
    missing = [s.file for s, p in zip(srcs, paths) if not p.is_file()]
    if missing:
        raise DescribeError(f"{len(missing)} file(s) missing (first: {missing[0]}); fetch them first")
    g1_all = run_exiftool(paths, ["-G1"], exiftool)
    g01_all = run_exiftool(paths, ["-G0:1"], exiftool)
    manifest: list[dict] = []
    g1_out: dict = {}
    for src, path in zip(srcs, paths):
        data = path.read_bytes()
        fmt = sniff(data)
        g1 = g1_all.get(path.name, {})
        orientation, orientation_source = _orientation(g1)
        priv, comments = privacy(g1, g01_all.get(path.name, {}))
        rotation = g1.get("QuickTime:Rotation")
        struct = structure(fmt, data)
        decodes = decodes_with_pillow(data)
        warnings = [v for k, v in g1.items() if k in ("ExifTool:Warning", "ExifTool:Error")]
        manifest.append({
            **src.as_record(),
            "format": fmt or "unknown",
            "size_bytes": len(data),
            "orientation": orientation,
            "orientation_source": orientation_source,
            "privacy": priv,
            "comment_tags": comments,
            "heif_rotation": rotation if fmt in ("HEIC", "HEIF", "AVIF") else None,
            "mpf": any(s.startswith("APP2:MPF") for s in struct),
            "structure": struct,
            "exiftool_warnings": warnings,
            "decodes_with_pillow": decodes if decodes is not None else not src.name.startswith("broken_"),
            "description": "",
            "generated_by": GENERATOR,
        })
        g1_out[path.name] = g1_view(g1)
    return manifest, g1_out


def is_generated(manifest_path: Path) -> bool:
    """True when manifest.json was written by this tool (then it may be rewritten; never otherwise)."""
    try:
        entries = json.loads(manifest_path.read_text(encoding="utf-8"))
        return bool(entries) and all(isinstance(e, dict) and e.get("generated_by") == GENERATOR
                                     for e in entries)
    except (OSError, ValueError):
        return False


def complete(manifest_path: Path, sources: Iterable[Source]) -> bool:
    """True when manifest.json lists every source file with the same hash (nothing to redo)."""
    try:
        entries = json.loads(manifest_path.read_text(encoding="utf-8"))
        have = {e["file"]: e.get("sha256") for e in entries}
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all(have.get(s.file) == s.sha256 for s in sources)


