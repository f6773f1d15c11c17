"""Synthesise small JPEGs with a unique canary string in every metadata carrier.

Pillow makes the base image (real, decodable scan data); everything else is spliced
in with struct, so each carrier is exactly what the test says it is.
"""

from __future__ import annotations

import io
import struct

from PIL import Image

XMP_ID = b"http://ns.adobe.com/xap/1.0/\0"
EXT_XMP_ID = b"http://ns.adobe.com/xmp/extension/\0"


def base_jpeg(size: tuple[int, int] = (48, 32), *, progressive: bool = False, exif: bytes = b"",
              mode: str = "RGB") -> bytes:
    """A small real JPEG with a gradient (so the scan data is not trivial)."""
    w, h = size
    img = Image.new(mode, size)
    if mode == "RGB":
        img.putdata([((x * 5) % 256, (y * 7) % 256, (x * y) % 256) for y in range(h) for x in range(w)])
    buf = io.BytesIO()
    kw = {"exif": exif} if exif else {}
    img.save(buf, "JPEG", quality=90, progressive=progressive, **kw)
    return buf.getvalue()


def segment(marker: int, payload: bytes) -> bytes:
    assert len(payload) + 2 <= 0xFFFF
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def strip_app_segments(jpeg: bytes) -> bytes:
    """Drop the APPn/COM segments Pillow wrote, keeping SOI and everything from DQT on."""
    assert jpeg[:2] == b"\xff\xd8"
    i = 2
    while jpeg[i + 1] >= 0xE0 or jpeg[i + 1] == 0xFE:
        i += 2 + struct.unpack_from(">H", jpeg, i + 2)[0]
    return jpeg[:2] + jpeg[i:]


def splice(jpeg: bytes, segments: list[bytes], trailer: bytes = b"") -> bytes:
    """Insert segments right after SOI (after removing Pillow's own APPn) and append a trailer."""
    body = strip_app_segments(jpeg)
    return body[:2] + b"".join(segments) + body[2:] + trailer


# -- TIFF / Exif ---------------------------------------------------------------------------

_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1}


def _ifd(entries: list[tuple[int, int, int, bytes]], start: int, next_ifd: int = 0) -> tuple[bytes, bytes]:
    """One little-endian IFD at `start`: (directory bytes, value area appended right after)."""
    entries = sorted(entries)
    dir_len = 2 + 12 * len(entries) + 4
    area = b""
    d = struct.pack("<H", len(entries))
    for tag, typ, count, raw in entries:
        if len(raw) <= 4:
            d += struct.pack("<HHI", tag, typ, count) + raw.ljust(4, b"\0")
        else:
            d += struct.pack("<HHII", tag, typ, count, start + dir_len + len(area))
            area += raw + (b"\0" if len(raw) % 2 else b"")
    d += struct.pack("<I", next_ifd)
    return d, area


def ascii_(tag: int, text: bytes) -> tuple[int, int, int, bytes]:
    return (tag, 2, len(text) + 1, text + b"\0")


def short(tag: int, value: int) -> tuple[int, int, int, bytes]:
    return (tag, 3, 1, struct.pack("<H", value))


def long_(tag: int, value: int) -> tuple[int, int, int, bytes]:
    return (tag, 4, 1, struct.pack("<I", value))


def undefined(tag: int, raw: bytes) -> tuple[int, int, int, bytes]:
    return (tag, 7, len(raw), raw)


def rational(tag: int, pairs: list[tuple[int, int]]) -> tuple[int, int, int, bytes]:
    return (tag, 5, len(pairs), b"".join(struct.pack("<II", a, b) for a, b in pairs))


def exif_tiff(marker: bytes, *, orientation: int | None = 6, thumbnail: bytes = b"") -> bytes:
    """Little-endian TIFF: IFD0 (Make, Artist, XPComment UTF-16, Orientation), ExifIFD
    (UserComment, MakerNote), GPS IFD (latitude + map datum) and, optionally, IFD1 with a
    JPEG thumbnail.  Every text field carries `marker`."""
    text = marker.decode()
    ifd0_entries = [ascii_(0x010F, b"Make-" + marker), ascii_(0x013B, b"Artist-" + marker),
                    (0x9C9C, 1, len((text + "\0").encode("utf-16le")), (text + "\0").encode("utf-16le"))]
    if orientation is not None:
        ifd0_entries.append(short(0x0112, orientation))
    exif_entries = [undefined(0x9286, b"ASCII\0\0\0UserComment-" + marker),
                    undefined(0x927C, b"MakerNote-" + marker + b"\0" * 8)]
    gps_entries = [ascii_(0x0001, b"N"), rational(0x0002, [(52, 1), (31, 1), (1234, 100)]),
                   ascii_(0x0012, b"Datum-" + marker)]

    # Lay out: header(8) | IFD0 | ExifIFD | GPS | IFD1 | thumbnail.  Two passes: sizes first.
    def build(exif_at: int, gps_at: int, ifd1_at: int, thumb_at: int) -> bytes:
        e0 = ifd0_entries + [long_(0x8769, exif_at), long_(0x8825, gps_at)]
        d0, a0 = _ifd(e0, 8, ifd1_at if thumbnail else 0)
        de, ae = _ifd(exif_entries, exif_at)
        dg, ag = _ifd(gps_entries, gps_at)
        out = b"II*\0" + struct.pack("<I", 8) + d0 + a0
        out = out.ljust(exif_at, b"\0") + de + ae
        out = out.ljust(gps_at, b"\0") + dg + ag
        if thumbnail:
            d1, a1 = _ifd([short(0x0103, 6), long_(0x0201, thumb_at), long_(0x0202, len(thumbnail))],
                          ifd1_at)
            out = out.ljust(ifd1_at, b"\0") + d1 + a1
            out = out.ljust(thumb_at, b"\0") + thumbnail
        return out

    d0, a0 = _ifd(ifd0_entries + [long_(0x8769, 0), long_(0x8825, 0)], 8)
    exif_at = 8 + len(d0) + len(a0)
    de, ae = _ifd(exif_entries, exif_at)
    gps_at = exif_at + len(de) + len(ae)
    dg, ag = _ifd(gps_entries, gps_at)
    ifd1_at = gps_at + len(dg) + len(ag)
    d1, a1 = _ifd([short(0x0103, 6), long_(0x0201, 0), long_(0x0202, 0)], ifd1_at)
    thumb_at = ifd1_at + len(d1) + len(a1)
    return build(exif_at, gps_at, ifd1_at, thumb_at)


def exif_app1(marker: bytes, **kw: object) -> bytes:
    return segment(0xE1, b"Exif\0\0" + exif_tiff(marker, **kw))  # type: ignore[arg-type]


# -- other carriers ------------------------------------------------------------------------

def xmp_packet(marker: bytes, orientation: int | None = None) -> bytes:
    orient = f'<tiff:Orientation>{orientation}</tiff:Orientation>' if orientation else ""
    return (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
            b'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
            b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" exif:GPSLatitude="52,31.2N">'
            + orient.encode() + b'<dc:creator><rdf:Seq><rdf:li>Creator-' + marker
            + b'</rdf:li></rdf:Seq></dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>'
            b'<?xpacket end="w"?>')


def xmp_app1(marker: bytes, orientation: int | None = None) -> bytes:
    return segment(0xE1, XMP_ID + xmp_packet(marker, orientation))


def ext_xmp_app1(marker: bytes) -> bytes:
    text = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><GImage:Data>' + marker + b"</GImage:Data></x:xmpmeta>"
    return segment(0xE1, EXT_XMP_ID + b"0123456789ABCDEF0123456789ABCDEF"
                   + struct.pack(">II", len(text), 0) + text)


def iptc_app13(marker: bytes, dataset: int = 80) -> bytes:
    """Photoshop IRB with one IPTC dataset (2:80 By-line by default)."""
    value = b"IPTC-" + marker
    iptc = b"\x1c\x02" + bytes([dataset]) + struct.pack(">H", len(value)) + value
    irb = b"8BIM" + struct.pack(">H", 0x0404) + b"\0\0" + struct.pack(">I", len(iptc)) + iptc
    if len(iptc) % 2:
        irb += b"\0"
    return segment(0xED, b"Photoshop 3.0\0" + irb)


def jfif_app0(thumb: bytes = b"", thumb_w: int = 0, thumb_h: int = 0) -> bytes:
    assert len(thumb) == 3 * thumb_w * thumb_h
    return segment(0xE0, b"JFIF\0\x01\x02\x01\x00\x48\x00\x48" + bytes([thumb_w, thumb_h]) + thumb)


def mp4_blob(marker: bytes) -> bytes:
    """Something shaped like a Motion Photo MP4 trailer (ftyp + mdat with the marker)."""
    mdat = b"MotionPhoto-" + marker + bytes(64)
    return (struct.pack(">I", 24) + b"ftypmp42" + b"\0\0\0\0mp42isom"
            + struct.pack(">I", 8 + len(mdat)) + b"mdat" + mdat)
