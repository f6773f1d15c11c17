"""Seed images: small generated images with a canary in every metadata carrier, plus the corpus.

Why generated seeds carry one shared canary (`MARK`): the invariant "no canary that the
input carried survives" needs a string that is private by construction, and one string
keeps the per-execution search cheap.  The canary is never put in an ICC profile or in
pixel data, where keeping it would be correct.

Corpus images (../shared/corpus, read-only) carry real metadata; their "canaries" are the
manifest's own privacy values (GPS, serials, names) of six characters or more, as the
corpus tests use them.  Corpus bytes are never written into the repository.
"""

from __future__ import annotations

import os

import io
import json
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for _p in (REPO / "tests", REPO):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

MARK = b"EGFUZZCANARY31415"
"""The canary every generated seed carries."""

DEFAULT_CORPUS = Path(os.environ.get("EXIFGUARD_CORPUS") or REPO.parent / "shared" / "corpus")


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    markers: tuple[bytes, ...]
    from_corpus: bool = False


# -- shared metadata payloads ------------------------------------------------------------------

def exif_tiff(orientation: int | None = 6) -> bytes:
    """A little-endian TIFF (no "Exif\\0\\0") with the canary in IFD0, Exif and GPS IFDs."""
    from engine import jpeg_builders as jb  # tests/engine/jpeg_builders.py
    return jb.exif_tiff(MARK, orientation=orientation)


def xmp_packet() -> bytes:
    from engine import jpeg_builders as jb
    return jb.xmp_packet(MARK, orientation=None)


def _gradient(mode: str = "RGB", size: tuple[int, int] = (24, 16)):
    from PIL import Image
    w, h = size
    img = Image.new("RGB", size)
    img.putdata([((x * 11) % 256, (y * 13) % 256, (x * y) % 256) for y in range(h) for x in range(w)])
    return img.convert(mode) if mode != "RGB" else img


def _save(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# -- per format --------------------------------------------------------------------------------

def jpeg_seeds() -> list[tuple[str, bytes]]:
    from engine import jpeg_builders as jb
    base = jb.base_jpeg((24, 16))
    thumb = jb.base_jpeg((8, 8))
    full = jb.splice(base, [jb.jfif_app0(), jb.exif_app1(MARK, thumbnail=thumb), jb.xmp_app1(MARK),
                            jb.ext_xmp_app1(MARK), jb.iptc_app13(MARK),
                            jb.segment(0xFE, b"Comment-" + MARK),
                            jb.segment(0xEF, b"Vendor\0" + MARK),
                            jb.segment(0xEB, b"JP\0\0\0\x01\0\0\0\x10jumbc2pa" + MARK)],
                     trailer=jb.mp4_blob(MARK))
    prog = jb.splice(jb.base_jpeg((16, 16), progressive=True),
                     [jb.exif_app1(MARK, orientation=3), jb.segment(0xFE, MARK)])
    small = jb.splice(jb.base_jpeg((8, 8), mode="L"),
                      [jb.jfif_app0(b"\x10" * 12, 2, 2), jb.segment(0xFE, b"x" + MARK)], trailer=MARK)
    return [("jpeg_all_carriers", full), ("jpeg_progressive", prog), ("jpeg_gray_small", small)]


def _png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _png_insert(png: bytes, chunks: list[bytes], *, after_ihdr: bool = True, trailer: bytes = b"") -> bytes:
    at = 8 + 12 + 13 if after_ihdr else png.rindex(b"IEND") - 4
    return png[:at] + b"".join(chunks) + png[at:] + trailer


def png_seeds() -> list[tuple[str, bytes]]:
    base = _save(_gradient(), "PNG")
    xmp = xmp_packet()
    itxt = b"XML:com.adobe.xmp\0\x01\0\0\0" + zlib.compress(xmp)
    full = _png_insert(base, [
        _png_chunk(b"tEXt", b"Author\0" + MARK),
        _png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"zt-" + MARK)),
        _png_chunk(b"iTXt", itxt),
        _png_chunk(b"eXIf", exif_tiff()),
        _png_chunk(b"tIME", b"\x07\xe8\x05\x0c\x0e\x22\x21"),
        _png_chunk(b"prVt", b"private-" + MARK),
    ], trailer=b"after-iend-" + MARK)
    late = _png_insert(base, [_png_chunk(b"tEXt", b"Comment\0late-" + MARK),
                              _png_chunk(b"eXIf", exif_tiff(orientation=None))], after_ihdr=False)
    pal = _save(_gradient("P"), "PNG", transparency=0)
    pal = _png_insert(pal, [_png_chunk(b"iTXt", b"Title\0\0\0en\0\0" + MARK)], after_ihdr=False)
    frames = [_gradient(), _gradient().rotate(180)]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:], duration=50)
    apng = _png_insert(buf.getvalue(), [_png_chunk(b"tEXt", b"Software\0" + MARK)])
    return [("png_all_carriers", full), ("png_text_after_idat", late), ("png_palette_trns", pal),
            ("apng_text", apng)]


def _riff_chunk(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) % 2 else b"")


def _riff_append(webp: bytes, chunks: list[bytes], trailing: bytes = b"") -> bytes:
    end = 8 + struct.unpack_from("<I", webp, 4)[0]
    body = webp[:end] + b"".join(chunks)
    return body[:4] + struct.pack("<I", len(body) - 8) + body[8:] + trailing


def webp_seeds() -> list[tuple[str, bytes]]:
    exif = b"Exif\0\0" + exif_tiff()
    lossy = _save(_gradient(), "WEBP", exif=exif, xmp=xmp_packet(), quality=80)
    lossy = _riff_append(lossy, [_riff_chunk(b"PRIV", b"x" + MARK)], trailing=MARK)
    lossless = _save(_gradient("RGBA"), "WEBP", lossless=True, exif=exif)
    buf = io.BytesIO()
    _gradient().save(buf, "WEBP", save_all=True, append_images=[_gradient().rotate(180)], duration=60,
                     exif=exif, xmp=xmp_packet())
    return [("webp_lossy_all", lossy), ("webp_lossless_exif", lossless), ("webp_animated", buf.getvalue())]


def _sub_blocks(payload: bytes) -> bytes:
    return b"".join(bytes([len(payload[i:i + 255])]) + payload[i:i + 255]
                    for i in range(0, len(payload), 255)) + b"\0"


def gif_seeds() -> list[tuple[str, bytes]]:
    frames = [_gradient("P"), _gradient("P").rotate(180)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=70, loop=0,
                   comment=b"Comment-" + MARK)
    g = buf.getvalue()
    blocks = (b"\x21\xff\x0bXMP DataXMP" + xmp_packet() + b"\x01" + bytes(range(255, -1, -1)) + b"\0"
              + b"\x21\x01\x0c" + bytes(12) + _sub_blocks(b"plain-" + MARK)
              + b"\x21\xff\x0bVENDOR01abc" + _sub_blocks(MARK))
    i = g.index(b"\x21\xf9")  # before the first graphic control extension
    return [("gif_all_carriers", g[:i] + blocks + g[i:] + MARK)]


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def heif_seeds() -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    from PIL import Image
    ex = Image.Exif()
    ex[0x010F] = "Make-" + MARK.decode()
    ex[0x013B] = "Artist-" + MARK.decode()
    ex.get_ifd(0x8825)[2] = (51.0, 10.0, 42.0)
    exif = ex.tobytes()
    vendor = (_box(b"sefd", b"\0\0\0\0Image_UTC_Data" + MARK) + _box(b"uuid", bytes(16) + MARK))
    try:
        import pillow_heif
        hf = pillow_heif.from_pillow(_gradient(size=(32, 24)))
        hf.info["exif"] = exif
        hf.info["xmp"] = xmp_packet()
        buf = io.BytesIO()
        hf.save(buf, quality=60)
        out.append(("heic_exif_xmp", buf.getvalue() + vendor))
    except Exception:  # pillow-heif missing or without an encoder: fewer seeds, not a failure
        pass
    try:
        out.append(("avif_exif_xmp", _save(_gradient(size=(32, 24)), "AVIF", exif=exif,
                                           xmp=xmp_packet()) + vendor))
    except Exception:
        pass
    return out


def tiff_seeds() -> list[tuple[str, bytes]]:
    from PIL import TiffImagePlugin
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[315] = "Artist-" + MARK.decode()
    info[271] = "Make-" + MARK.decode()
    info[270] = "Desc-" + MARK.decode()
    info[305] = "Software-" + MARK.decode()
    info[274] = 6
    plain = _save(_gradient(size=(16, 12)), "TIFF", tiffinfo=info)
    ex = _gradient(size=(8, 8))
    exif = ex.getexif()
    exif[0x013B] = "Artist-" + MARK.decode()
    exif.get_ifd(0x8825)[2] = (51.0, 10.0, 42.0)
    exif.get_ifd(0x8769)[0xA431] = "Serial-" + MARK.decode()
    withexif = _save(ex, "TIFF", exif=exif, compression="tiff_lzw")
    return [("tiff_text_tags", plain + MARK), ("tiff_exif_gps", withexif)]


def jxl_seeds() -> list[tuple[str, bytes]]:
    sig = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
    exif = b"\0\0\0\0" + exif_tiff()
    parts = [sig, _box(b"ftyp", b"jxl \0\0\0\0jxl "), _box(b"jxll", b"\x05"), _box(b"Exif", exif),
             _box(b"xml ", xmp_packet()), _box(b"jumb", _box(b"jumd", b"c2pa" + MARK))]
    try:
        import brotli
        parts.append(_box(b"brob", b"Exif" + brotli.compress(exif)))
    except ImportError:
        pass
    parts.append(_box(b"jxlc", b"\xff\x0a" + bytes(range(200))))
    return [("jxl_container", b"".join(parts) + MARK)]


def bmp_seeds() -> list[tuple[str, bytes]]:
    w, h = 4, 3
    row = (w * 24 + 31) // 32 * 4
    pixels = bytes((i * 7) % 256 for i in range(row * h))
    profile = b"C:\\Users\\" + MARK + b"\\profile.icc\0"
    header = struct.pack("<IiiHHIIiiII", 124, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    header += bytes(16) + b"KNIL" + bytes(48) + struct.pack("<IIII", 4, 124 + len(pixels), len(profile), 0)
    body = header + pixels + profile + MARK
    return [("bmp_linked_profile", b"BM" + struct.pack("<IHHI", 14 + len(body), 0, 0, 14 + 124) + body)]


GENERATORS = (jpeg_seeds, png_seeds, webp_seeds, gif_seeds, heif_seeds, tiff_seeds, jxl_seeds, bmp_seeds)


def generated() -> list[Seed]:
    """Every generated seed whose builder works on this machine (a missing codec just drops one)."""
    out: list[Seed] = []
    for gen in GENERATORS:
        try:
            for name, data in gen():
                out.append(Seed(name, data, (MARK,)))
        except Exception as exc:  # noqa: BLE001 - report and keep the others
            print(f"fuzz: seed builder {gen.__name__} failed ({type(exc).__name__}: {exc}); skipped",
                  file=sys.stderr)
    return out


def _corpus_markers(entry: dict) -> tuple[bytes, ...]:
    """Serial numbers and names only: makes ("Google") and dates recur in ICC profiles and
    pixel-free structures we keep, so they would be false alarms."""
    vals: list[bytes] = []
    for group in ("serials", "people"):
        for value in (entry.get("privacy") or {}).get(group, {}).values():
            if isinstance(value, str) and len(value.strip()) >= 6 and value.strip("0 .,:-"):
                vals.append(value.strip().encode())
    return tuple(dict.fromkeys(vals))


def corpus(folder: Path | None, max_bytes: int) -> list[Seed]:
    """Corpus images up to `max_bytes` (read in place, never copied); [] if absent."""
    folder = folder or DEFAULT_CORPUS
    man = folder / "manifest.json"
    if not man.exists():
        if (folder / "images").is_dir():  # a bare folder of images
            return [Seed(p.name, p.read_bytes(), (), True) for p in sorted((folder / "images").iterdir())
                    if p.is_file() and p.stat().st_size <= max_bytes]
        if folder.is_dir():
            return [Seed(p.name, p.read_bytes(), (), True) for p in sorted(folder.iterdir())
                    if p.is_file() and p.stat().st_size <= max_bytes]
        return []
    out = []
    for e in json.loads(man.read_text()):
        p = folder / e["file"]
        if p.is_file() and p.stat().st_size <= max_bytes:
            data = p.read_bytes()
            out.append(Seed(p.name, data, _still_private(data, _corpus_markers(e)), True))
    return out


def _still_private(data: bytes, markers: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """Drop a marker the clean output of the *unmutated* file still holds: it sits in a kept
    structure (an ICC profile's text, say), so finding it later says nothing."""
    if not markers:
        return markers
    from exifguard import ScrubError, scrub
    from support import canary
    try:
        out = scrub(data).data
    except ScrubError:
        return markers
    return tuple(m for m in markers if not canary.find(out, m))
