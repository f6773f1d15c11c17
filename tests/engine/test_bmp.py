"""BMP: no metadata carriers, but linked-profile paths, appended data and gaps are cleaned."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from exifguard import ScrubError, ScrubResult
from exifguard import scrub as public_scrub
from exifguard.engine.detect import SCRUBBABLE
from exifguard.engine.formats import bmp as walker
from exifguard.engine.report import Findings, ScrubOptions
from exifguard.engine.verify import bmp as verify_bmp
from support import canary

from . import icc_builders as ib


def scrub(data: bytes, **kw: bool) -> ScrubResult:
    """The engine's path (walker, length check, verifier) for BMP.

    Runs through the public API once BMP is registered in the engine; until then the
    same steps are taken here so the cleaner is tested either way."""
    if "BMP" in SCRUBBABLE:
        return public_scrub(data, **kw)
    opts = ScrubOptions(**kw)
    findings = Findings()
    out = walker.scrub(data, opts, findings)
    assert len(out) == len(data)
    verify_bmp.verify(out, opts)
    return ScrubResult(out, "BMP", tuple(findings.removed), tuple(findings.kept), len(data))

MARK = b"EGBMPMARK42"


def pillow_bmp(mode: str = "RGB") -> bytes:
    im = Image.new(mode, (13, 7))
    im.putdata([((x * 19) % 256, (y * 37) % 256, 99) if mode == "RGB" else (x * y) % 256
                for y in range(7) for x in range(13)])
    buf = io.BytesIO()
    im.save(buf, "BMP")
    return buf.getvalue()


def v5_bmp(cstype: bytes, profile: bytes, *, trailer: bytes = b"") -> bytes:
    """A 4x3 24-bit BMP with a BITMAPV5HEADER whose profile (path or ICC) follows the pixels."""
    w, h = 4, 3
    row = (w * 24 + 31) // 32 * 4
    pixels = bytes((i * 7) % 256 for i in range(row * h))
    pix_off = 14 + 124
    prof_off = 124 + len(pixels)  # relative to the start of the V5 header
    header = struct.pack("<IiiHHIIiiII", 124, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    header += bytes(16)                                    # colour masks (unused for BI_RGB)
    header += struct.unpack("<I", cstype[::-1])[0].to_bytes(4, "little")
    header += bytes(36 + 12)                               # endpoints, gammas
    header += struct.pack("<IIII", 4, prof_off, len(profile), 0)  # intent, profile data/size
    assert len(header) == 124
    body = header + pixels + profile + trailer
    total = 14 + len(body)
    return b"BM" + struct.pack("<IHHI", total, 0, 0, pix_off) + body


def decoded(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.mode, im.size, im.tobytes()


@pytest.mark.parametrize("mode", ["RGB", "L", "1"])
def test_plain_bmp_passes_unchanged(mode: str) -> None:
    data = pillow_bmp(mode)
    res = scrub(data)
    assert res.format == "BMP" and res.data == data and res.removed == ()


def test_linked_profile_path_is_neutralised() -> None:
    path = b"C:\\Users\\" + MARK + b"\\profiles\\monitor.icm\0"
    data = v5_bmp(b"LINK", path)
    res = scrub(data)
    assert len(res.data) == len(data)
    assert canary.find(res.data, MARK) == []
    assert decoded(res.data) == decoded(data)
    assert any(r.carrier == "BMP linked profile path" for r in res.removed)
    assert scrub(res.data).removed == ()


def test_embedded_profile_kept_or_removed() -> None:
    data = v5_bmp(b"MBED", ib.srgb())
    kept = scrub(data)
    assert kept.data == data
    gone = scrub(data, keep_icc=False)
    assert b"acsp" not in gone.data
    assert decoded(gone.data) == decoded(data)


def test_embedded_profile_that_is_not_icc_is_removed() -> None:
    """Issue 11 §5: a kept colour profile must parse as ICC; text posing as one is removed."""
    fake_icc = b"\0\0\0\x80" + MARK + bytes(128 - 4 - len(MARK))
    data = v5_bmp(b"MBED", fake_icc)
    res = scrub(data)
    assert canary.find(res.data, MARK) == []
    assert "BMP ICC profile" in [r.carrier for r in res.removed]
    assert decoded(res.data) == decoded(data)
    with pytest.raises(ScrubError, match="colour profile"):
        verify_bmp.verify(data, ScrubOptions())


def test_trailing_and_reserved_bytes_zeroed() -> None:
    data = bytearray(pillow_bmp())
    data[6:10] = b"XYZW"
    data += b"appended " + MARK
    data[2:6] = struct.pack("<I", len(data))
    res = scrub(bytes(data))
    assert canary.find(res.data, MARK) == [] and res.data[6:10] == bytes(4)
    assert decoded(res.data) == decoded(bytes(data))
    assert {"BMP data outside the image", "BMP reserved header fields"} <= {r.carrier for r in res.removed}


def test_verifier_rejects_link_and_trailer() -> None:
    with pytest.raises(ScrubError):
        verify_bmp.verify(v5_bmp(b"LINK", b"C:\\x.icm\0"), ScrubOptions())
    with pytest.raises(ScrubError):
        verify_bmp.verify(pillow_bmp() + b"x", ScrubOptions())
    verify_bmp.verify(pillow_bmp(), ScrubOptions())


@pytest.mark.parametrize("cut", [20, 40, 60])
def test_truncated_bmp_raises(cut: int) -> None:
    data = pillow_bmp()[:cut]
    data = data[:2] + struct.pack("<I", len(data)) + data[6:]
    with pytest.raises(ScrubError):
        scrub(data)


def test_embedded_jpeg_bmp_refused() -> None:
    data = bytearray(pillow_bmp())
    data[30:34] = struct.pack("<I", 4)
    with pytest.raises(ScrubError):
        scrub(bytes(data))


def test_v5_header_fields_nothing_reads_are_zeroed() -> None:
    """Issue 11 §5: calibration endpoints/gammas with an sRGB colour space, and the V5
    reserved word, are read by no decoder, so they must not carry anything."""
    data = bytearray(v5_bmp(b"sRGB", b""))
    data[14 + 60:14 + 60 + len(MARK)] = MARK
    data[14 + 120:14 + 124] = MARK[:4]
    data = bytes(data)
    res = scrub(data)
    assert canary.find(res.data, MARK) == [] and MARK[:4] not in res.data
    assert "BMP unused header fields" in [r.carrier for r in res.removed]
    assert decoded(res.data) == decoded(data)
    verify_bmp.verify(res.data, ScrubOptions())
    with pytest.raises(ScrubError, match="calibration|nothing reads"):
        verify_bmp.verify(data, ScrubOptions())
