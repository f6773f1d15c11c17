"""Generated photos with private metadata in every format, for tests that run without the corpus.

Each image looks like what a phone or camera uploads: Exif with a GPS position, camera make
and model, a body serial number, the owner's name and a date, plus XMP (and IPTC in JPEG)
naming a creator.  Every text value carries MARKER so a test can search the cleaned bytes
for it; the GPS position is a fixed point (coordinates of no one).  The images are built
in memory (Pillow, pillow-heif and the JPEG/ICC builders of tests/engine), never read from
the corpus, so these tests run on a fresh clone.

Formats: JPEG, MPO (JPEG + MPF + a second JPEG with its own Exif), PNG, WEBP, GIF (comment
and XMP: GIF has no Exif), TIFF, HEIC, AVIF, JXL (container with Exif and XMP boxes around a
stand-in codestream: no encoder is needed and the engine never decodes pixels) and BMP
(no metadata fields: an Exif block after the pixel array).
"""

from __future__ import annotations

import io
import struct
from functools import lru_cache

from PIL import Image

MARKER = b"EGgenPRIVATE7731"
GPS_LAT = (48.0, 51.0, 29.88)   # any fixed point; the tests check the tags are gone, not the place
GPS_LON = (2.0, 17.0, 40.2)

#: formats, in the spelling of `exifguard.sniff` ("MPO" sniffs as JPEG)
FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "TIFF", "HEIC", "AVIF", "JXL", "BMP")
#: formats with an ExifTool allowlist (tests/support/allowlists); BMP has none
ORACLE = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "TIFF", "HEIC", "AVIF", "JXL")
EXT = {"JPEG": ".jpg", "MPO": ".mpo", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "TIFF": ".tif",
       "HEIC": ".heic", "AVIF": ".avif", "JXL": ".jxl", "BMP": ".bmp"}
#: the format name the ExifTool allowlists (tests/support/allowlists) use
ORACLE_FORMAT = {"MPO": "JPEG"}


def _picture(size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A gradient with some structure, so encoders produce real scan data."""
    w, h = size
    im = Image.new("RGB", size)
    im.putdata([((x * 255) // w, (y * 255) // h, ((x ^ y) * 4) % 256) for y in range(h) for x in range(w)])
    return im


def exif(orientation: int | None = 6) -> Image.Exif:
    text = MARKER.decode()
    ex = Image.Exif()
    ex[0x010F] = "Make-" + text                 # Make
    ex[0x0110] = "Model-" + text                # Model
    ex[0x013B] = "Artist-" + text               # Artist
    ex[0x0132] = "2024:05:12 14:22:33"          # DateTime
    if orientation:
        ex[0x0112] = orientation
    sub = ex.get_ifd(0x8769)
    sub[0xA431] = "Serial-" + text              # BodySerialNumber
    sub[0xA430] = "Owner-" + text               # CameraOwnerName
    sub[0x9003] = "2024:05:12 14:22:33"         # DateTimeOriginal
    gps = ex.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", GPS_LAT, "E", GPS_LON
    return ex


def exif_bytes(orientation: int | None = 6) -> bytes:
    """`Exif\\0\\0` + TIFF, as Pillow's encoders take it."""
    return exif(orientation).tobytes()


def xmp() -> bytes:
    return (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
            b'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
            b'exif:GPSLatitude="48,51.498N" exif:GPSLongitude="2,17.67E"><dc:creator><rdf:Seq><rdf:li>Creator-'
            + MARKER + b'</rdf:li></rdf:Seq></dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>'
            b'<?xpacket end="w"?>')


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def jpeg(size: tuple[int, int] = (96, 64)) -> bytes:
    from engine import jpeg_builders as jb
    base = _save(_picture(size), "JPEG", quality=90, exif=exif_bytes())
    return jb.splice(base, [jb.segment(0xE1, exif_bytes()), jb.xmp_app1(MARKER), jb.iptc_app13(MARKER)])


def mpo() -> bytes:
    """A primary JPEG with Exif and an MPF index, followed by a second JPEG with its own Exif/GPS."""
    from engine import jpeg_builders as jb
    second = _save(_picture((48, 32)), "JPEG", quality=80, exif=exif_bytes(orientation=None))
    first = _save(_picture(), "JPEG", quality=90, exif=exif_bytes())
    # MP index IFD (big-endian): version, number of images, MP entry (2 x 16 bytes)
    entries_at = 8 + 2 + 3 * 12 + 4
    ifd = struct.pack(">H", 3)
    ifd += struct.pack(">HHI4s", 0xB000, 7, 4, b"0100")
    ifd += struct.pack(">HHII", 0xB001, 4, 1, 2)
    ifd += struct.pack(">HHII", 0xB002, 7, 32, entries_at)
    ifd += struct.pack(">I", 0)
    placeholder = jb.segment(0xE2, b"MPF\0" + b"MM\0*" + struct.pack(">I", 8) + ifd + bytes(32))
    primary = jb.splice(first, [jb.segment(0xE1, exif_bytes()), placeholder])
    mpf_at = primary.find(b"MPF\0") + 4  # offsets in MP entries count from the MPF TIFF header
    entries = (struct.pack(">IIII", 0x20030000, len(primary), 0, 0)
               + struct.pack(">IIII", 0x00020002, len(second), len(primary) - mpf_at, 0))
    mpf = jb.segment(0xE2, b"MPF\0" + b"MM\0*" + struct.pack(">I", 8) + ifd + entries)
    assert len(mpf) == len(placeholder)
    return primary.replace(placeholder, mpf, 1) + second


def png() -> bytes:
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Author-" + MARKER.decode())
    info.add_itxt("XML:com.adobe.xmp", xmp().decode())
    return _save(_picture(), "PNG", exif=exif_bytes(), pnginfo=info)


def webp() -> bytes:
    return _save(_picture(), "WEBP", quality=85, exif=exif_bytes(), xmp=xmp())


def gif() -> bytes:
    """Comment extension + XMP application extension (GIF has no Exif or GPS fields)."""
    data = _save(_picture().convert("P"), "GIF", comment=b"Comment-" + MARKER)
    flags = data[10]
    at = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
    magic = bytes([1]) + bytes(range(255, -1, -1)) + b"\0"  # XMP's "magic trailer" sub-blocks
    ext = b"\x21\xff\x0bXMP DataXMP" + xmp() + magic
    return data[:at] + ext + data[at:]


def tiff() -> bytes:
    """A little-endian RGB TIFF written field by field: Pillow's TIFF writer keeps IFD0 tags
    only, and a camera TIFF carries an Exif IFD and a GPS IFD as well."""
    from engine import jpeg_builders as jb
    w, h = 32, 24
    pixels = _picture((w, h)).tobytes()
    text = MARKER
    base = [jb.short(256, w), jb.short(257, h), (258, 3, 3, struct.pack("<HHH", 8, 8, 8)), jb.short(259, 1),
            jb.short(262, 2), jb.short(277, 3), jb.short(278, h), jb.long_(279, len(pixels)),
            jb.short(274, 6), jb.ascii_(271, b"Make-" + text), jb.ascii_(272, b"Model-" + text),
            jb.ascii_(315, b"Artist-" + text), jb.ascii_(306, b"2024:05:12 14:22:33")]
    exif_entries = [jb.ascii_(0xA431, b"Serial-" + text), jb.ascii_(0xA430, b"Owner-" + text),
                    jb.ascii_(0x9003, b"2024:05:12 14:22:33")]
    gps_entries = [jb.ascii_(1, b"N"), jb.rational(2, [(48, 1), (51, 1), (2988, 100)]),
                   jb.ascii_(3, b"E"), jb.rational(4, [(2, 1), (17, 1), (4020, 100)])]

    def build(exif_at: int, gps_at: int, strip_at: int) -> bytes:
        d0, a0 = jb._ifd(base + [jb.long_(273, strip_at), jb.long_(0x8769, exif_at), jb.long_(0x8825, gps_at)], 8)
        de, ae = jb._ifd(exif_entries, exif_at)
        dg, ag = jb._ifd(gps_entries, gps_at)
        out = b"II*\0" + struct.pack("<I", 8) + d0 + a0
        out = out.ljust(exif_at, b"\0") + de + ae
        out = out.ljust(gps_at, b"\0") + dg + ag
        return out.ljust(strip_at, b"\0") + pixels

    # directory sizes do not depend on the offsets: lay out once with zeros, then build
    d0, a0 = jb._ifd(base + [jb.long_(273, 0), jb.long_(0x8769, 0), jb.long_(0x8825, 0)], 8)
    exif_at = 8 + len(d0) + len(a0)
    de, ae = jb._ifd(exif_entries, exif_at)
    gps_at = exif_at + len(de) + len(ae)
    dg, ag = jb._ifd(gps_entries, gps_at)
    strip_at = gps_at + len(dg) + len(ag)
    return build(exif_at, gps_at, strip_at)


def heic() -> bytes:
    import pillow_heif
    hf = pillow_heif.from_pillow(_picture())
    hf.info["exif"] = exif_bytes()
    hf.info["xmp"] = xmp()
    b = io.BytesIO()
    hf.save(b, quality=85)
    return b.getvalue()


def avif() -> bytes:
    return _save(_picture(), "AVIF", quality=70, exif=exif_bytes(), xmp=xmp())


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def jxl() -> bytes:
    """A JPEG XL container: Exif (4-byte TIFF offset + TIFF) and xml boxes around a codestream
    stand-in (the engine keeps codestream boxes byte for byte and never decodes them)."""
    sig = b"\0\0\0\x0cJXL \r\n\x87\n"
    tiff_bytes = exif_bytes()[6:]
    codestream = b"\xff\x0a" + bytes(range(256)) * 2
    return (sig + _box(b"ftyp", b"jxl \0\0\0\0jxl ") + _box(b"jxll", b"\x05")
            + _box(b"Exif", b"\0\0\0\0" + tiff_bytes) + _box(b"xml ", xmp()) + _box(b"jxlc", codestream))


def bmp() -> bytes:
    """A BMP with an Exif block after the pixels, inside the size its header declares (BMP has
    no metadata fields, so data outside the pixel array is where it hides)."""
    data = _save(_picture(), "BMP") + exif_bytes()
    return data[:2] + struct.pack("<I", len(data)) + data[6:]


BUILDERS = {"JPEG": jpeg, "MPO": mpo, "PNG": png, "WEBP": webp, "GIF": gif, "TIFF": tiff, "HEIC": heic,
            "AVIF": avif, "JXL": jxl, "BMP": bmp}


@lru_cache(maxsize=None)
def image(fmt: str) -> bytes:
    """The generated image of `fmt` (built once per test process)."""
    return BUILDERS[fmt]()


def oracle_format(fmt: str) -> str:
    return ORACLE_FORMAT.get(fmt, fmt)
