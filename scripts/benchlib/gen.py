"""Generate large JPEG "photos" with full metadata in a temporary folder (never committed).

Pixels are random noise encoded at high quality (noise does not compress, so a given
byte size needs the fewest pixels, which is kind to the peers that decode them).  Every
metadata carrier a camera or editor writes is present, each holding CANARY so the
thoroughness check can see what a tool left behind:
Exif IFD0 (Make, Model, Artist), Exif IFD (serial numbers, dates, UserComment), GPS IFD,
IFD1 with a JPEG thumbnail, an XMP packet, a COM segment, and a trailer after EOI.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

CANARY = b"EGBENCH-canary-5b1d9e"
QUALITY = 95
SUBSAMPLING = 0  # 4:4:4: more bytes per pixel, so fewer pixels for the same file size


def _noise_image(w: int, h: int):
    from PIL import Image
    return Image.frombytes("RGB", (w, h), os.urandom(w * h * 3))


def _exif_bytes() -> bytes:
    import piexif
    thumb = io.BytesIO()
    _noise_image(160, 120).save(thumb, "JPEG", quality=75)
    c = CANARY.decode()
    exif = {
        "0th": {piexif.ImageIFD.Make: f"BenchCam {c}", piexif.ImageIFD.Model: "Model X100",
                piexif.ImageIFD.Software: "bench 1.0", piexif.ImageIFD.Artist: f"Jane Doe {c}",
                piexif.ImageIFD.DateTime: "2024:05:01 10:11:12", piexif.ImageIFD.Orientation: 1},
        "Exif": {piexif.ExifIFD.DateTimeOriginal: "2024:05:01 10:11:12",
                 piexif.ExifIFD.BodySerialNumber: f"SN{c}",
                 piexif.ExifIFD.LensSerialNumber: "LS0012345",
                 piexif.ExifIFD.CameraOwnerName: f"Owner {c}",
                 piexif.ExifIFD.UserComment: b"ASCII\0\0\0" + CANARY},
        "GPS": {piexif.GPSIFD.GPSLatitudeRef: "N", piexif.GPSIFD.GPSLatitude: ((48, 1), (51, 1), (2406, 100)),
                piexif.GPSIFD.GPSLongitudeRef: "E", piexif.GPSIFD.GPSLongitude: ((2, 1), (17, 1), (4015, 100)),
                piexif.GPSIFD.GPSAltitude: (35, 1), piexif.GPSIFD.GPSDateStamp: "2024:05:01"},
        "1st": {piexif.ImageIFD.Compression: 6},
        "thumbnail": thumb.getvalue(),
    }
    return piexif.dump(exif)


def _xmp_bytes() -> bytes:
    c = CANARY.decode()
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/">'
        f'<dc:creator><rdf:Seq><rdf:li>Jane Doe {c}</rdf:li></rdf:Seq></dc:creator>'
        f'<photoshop:City>Paris {c}</photoshop:City>'
        '<exif:GPSLatitude>48,51.401N</exif:GPSLatitude>'
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def bytes_per_pixel() -> float:
    """Calibrate the encoder once on a 1 MP sample."""
    buf = io.BytesIO()
    _noise_image(1000, 1000).save(buf, "JPEG", quality=QUALITY, subsampling=SUBSAMPLING)
    return len(buf.getvalue()) / 1_000_000


def make_photo(path: Path, target_bytes: int, bpp: float | None = None) -> int:
    """Write a JPEG of about target_bytes with every carrier holding CANARY; returns its size."""
    bpp = bpp or bytes_per_pixel()
    pixels = max(target_bytes / bpp, 64 * 64)
    w = max(64, int(math.sqrt(pixels * 4 / 3)) // 16 * 16)
    h = max(48, int(pixels / w) // 16 * 16)
    buf = io.BytesIO()
    _noise_image(w, h).save(buf, "JPEG", quality=QUALITY, subsampling=SUBSAMPLING, exif=_exif_bytes(),
                            xmp=_xmp_bytes(), comment=b"comment " + CANARY)
    data = buf.getvalue() + b"TRAILER:" + CANARY + b"\0" * 4096
    path.write_bytes(data)
    return len(data)


def make_photos(folder: Path, sizes_mb: list[float]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    bpp = bytes_per_pixel()
    out = []
    for mb in sizes_mb:
        p = folder / f"photo_{mb:g}MB.jpg"
        if not p.exists():
            make_photo(p, int(mb * 1_000_000), bpp)
        out.append(p)
    return out
