"""Images not at byte 0 of a body, inside wrappers we do not parse: cleaned in place or blocked.

Regression tests for issue 11 ("Fail closed everywhere"): a raw body starting with two
junk bytes or a CRLF before a JPEG, an image inside a protobuf bytes field or a gRPC-web
frame, text followed by a PNG, a stored zip holding IMG_….jpg, a PDF whose DCTDecode
stream is a phone photo all arrived at the service with GPS, serials and names.  Each
must now be cleaned in place (the wrapper's own lengths and checksums stay valid) or
produce an error finding, which the policy blocks.  Things that merely contain two magic
bytes (a video, random data) must not be blocked.
"""

from __future__ import annotations

import importlib
import io
import os
import struct
import time
import zipfile
import zlib

import piexif
import pytest
from PIL import Image, PngImagePlugin, TiffImagePlugin
from support import canary, oracle

from exifguard.carriers import CarrierOptions, embedded, rewrite_request
from exifguard.carriers.scan import signature_in
from exifguard.engine import ScrubOptions
from exifguard.proxy import policy

MARK = b"EMBEDDEDcanary77"
OCTET = [("content-type", "application/octet-stream")]


def jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    exif = piexif.dump({"0th": {piexif.ImageIFD.Artist: MARK, piexif.ImageIFD.Make: b"CanonMARK"},
                        "Exif": {piexif.ExifIFD.BodySerialNumber: MARK},
                        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N",
                                piexif.GPSIFD.GPSLatitude: ((51, 1), (30, 1), (0, 1))}})
    buf = io.BytesIO()
    Image.new("RGB", size, (180, 40, 40)).save(buf, "JPEG", exif=exif, quality=90)
    return buf.getvalue()


def png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", MARK.decode())
    buf = io.BytesIO()
    Image.new("RGB", (20, 14), (1, 2, 3)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def tiff() -> bytes:
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[315] = MARK.decode()  # Artist
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (9, 9, 9)).save(buf, "TIFF", tiffinfo=ifd)
    return buf.getvalue()


def webp() -> bytes:
    exif = piexif.dump({"0th": {piexif.ImageIFD.Artist: MARK}})
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (5, 6, 7)).save(buf, "WEBP", exif=exif, lossless=True)
    return buf.getvalue()


def gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, "GIF", comment=MARK)
    return buf.getvalue()


def rewrite(body: bytes, headers=OCTET, options: CarrierOptions = CarrierOptions()):
    return rewrite_request("POST", "https://claude.ai/api/upload", headers, body, options)


def forwarded(rw) -> bool:
    """Would the proxy (strip mode, on_error=block) forward this request?"""
    states = [policy.ImageState(ok=i.result is not None and not i.error, error=i.error) for i in rw.images]
    d = policy.decide(policy.Mode.STRIP, policy.OnError.BLOCK, states, rw.blockers)
    return d.outcome is not policy.Outcome.RESPOND


def assert_cleaned_in_place(body: bytes, rw, n_images: int = 1) -> None:
    assert not rw.blockers and all(i.error is None for i in rw.images), rw
    assert len(rw.images) == n_images
    assert len(rw.body) == len(body)
    assert canary.find(rw.body, MARK) == []
    assert forwarded(rw)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


# ---- the reproductions --------------------------------------------------------------------

@pytest.mark.parametrize("prefix", [b"\x00\x01", b"\r\n", b"junk", b"hello, here is my photo: "])
@pytest.mark.parametrize("make", [jpeg, png, tiff, webp, gif], ids=["jpeg", "png", "tiff", "webp", "gif"])
def test_image_after_a_prefix_is_cleaned_in_place(prefix, make):
    img = make()
    assert canary.find(img, MARK), "the test image must carry the canary"
    body = prefix + img + b"\r\ntrailing text"
    rw = rewrite(body)
    assert_cleaned_in_place(body, rw)
    assert rw.body[:len(prefix)] == prefix and rw.body.endswith(b"\r\ntrailing text")
    cleaned = rw.body[len(prefix):len(prefix) + len(img)]
    assert Image.open(io.BytesIO(cleaned)).tobytes() == Image.open(io.BytesIO(img)).tobytes()


def test_image_in_a_protobuf_bytes_field_keeps_the_varint_valid():
    img = jpeg()
    body = b"\x0a\x05hello" + b"\x12" + varint(len(img)) + img + b"\x1a\x03end"
    rw = rewrite(body, [("content-type", "application/x-protobuf")])
    assert_cleaned_in_place(body, rw)
    at = 1 + 1 + 5 + 1
    n = 0
    shift = 0
    while True:  # the declared length still describes the (cleaned) image exactly
        b = rw.body[at]
        n |= (b & 0x7F) << shift
        at += 1
        shift += 7
        if not b & 0x80:
            break
    assert n == len(img) and rw.body[at + n:] == b"\x1a\x03end"


def test_image_in_a_grpc_web_frame():
    img = png()
    message = b"\x0a" + varint(len(img)) + img
    body = b"\x00" + struct.pack(">I", len(message)) + message + b"\x80" + struct.pack(">I", 0)
    rw = rewrite(body, [("content-type", "application/grpc-web+proto")])
    assert_cleaned_in_place(body, rw)
    assert struct.unpack(">I", rw.body[1:5])[0] == len(message)


def test_stored_zip_entry_is_cleaned_and_its_crc_recomputed():
    img = jpeg()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("notes.txt", "holiday")
        z.writestr("IMG_20240512_142233.jpg", img)
    body = buf.getvalue()
    rw = rewrite(body, [("content-type", "application/zip")])
    assert_cleaned_in_place(body, rw)
    with zipfile.ZipFile(io.BytesIO(rw.body)) as z:
        assert z.testzip() is None  # every CRC-32 matches its (cleaned) data
        assert canary.find(z.read("IMG_20240512_142233.jpg"), MARK) == []


def test_stored_zip_with_data_descriptors_crc_recomputed():
    img = jpeg()
    buf = io.BytesIO()

    class Unseekable(io.RawIOBase):  # zipfile writes data descriptors to unseekable streams
        def writable(self):
            return True

        def write(self, b):
            return buf.write(b)

    with zipfile.ZipFile(Unseekable(), "w", zipfile.ZIP_STORED) as z:
        with z.open("IMG_1234.jpg", "w") as f:
            f.write(img)
    body = buf.getvalue()
    assert struct.unpack_from("<H", body, 6)[0] & 8, "the zip must use a data descriptor"
    rw = rewrite(body, [("content-type", "application/zip")])
    assert_cleaned_in_place(body, rw)
    with zipfile.ZipFile(io.BytesIO(rw.body)) as z:
        assert z.testzip() is None


def test_deflated_zip_entry_with_an_image_is_blocked():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("IMG_20240512_142233.jpg", jpeg())
    rw = rewrite(buf.getvalue(), [("content-type", "application/zip")])
    assert not forwarded(rw)
    assert any("compressed zip entry" in (i.error or "") for i in rw.images)


def test_deflated_zip_without_images_passes():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("notes.txt", "nothing to see " * 100)
    body = buf.getvalue()
    rw = rewrite(body, [("content-type", "application/zip")])
    assert rw.images == () and rw.blockers == () and rw.body == body


def pdf_with(stream: bytes, filters: str) -> bytes:
    head = b"%PDF-1.4\n1 0 obj\n<< /Type /XObject /Subtype /Image /Width 64 /Height 48 " \
           + f"/Filter {filters} /Length {len(stream)} >>\nstream\n".encode()
    obj = head + stream + b"\nendstream\nendobj\n"
    xref = f"xref\n0 2\n0000000000 65535 f \n{9:010d} 00000 n \n".encode()
    return obj + xref + f"trailer\n<< /Size 2 >>\nstartxref\n{len(obj)}\n%%EOF\n".encode()


def test_pdf_dctdecode_stream_is_cleaned_keeping_length_and_offsets():
    img = jpeg()
    body = pdf_with(img, "/DCTDecode")
    rw = rewrite(body, [("content-type", "application/pdf")])
    assert_cleaned_in_place(body, rw)
    # /Length, the xref offsets and startxref are untouched and still true
    assert rw.body.replace(rw.body[body.index(img):body.index(img) + len(img)], b"") == \
        body.replace(img, b"")


def test_pdf_flate_stream_holding_an_image_file_is_blocked():
    body = pdf_with(zlib.compress(jpeg()), "/FlateDecode")
    rw = rewrite(body, [("content-type", "application/pdf")])
    assert not forwarded(rw)
    assert any("PDF stream" in (i.error or "") for i in rw.images)


def test_pdf_flate_stream_of_pixels_passes():
    body = pdf_with(zlib.compress(bytes(range(256)) * 40), "/FlateDecode")
    rw = rewrite(body, [("content-type", "application/pdf")])
    assert rw.images == () and rw.blockers == ()


def test_image_in_a_multipart_part_after_junk_is_cleaned():
    img = jpeg()
    body = (b"--B\r\nContent-Disposition: form-data; name=\"blob\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + b"\x08\x01" + img + b"\r\n--B--\r\n")
    rw = rewrite(body, [("content-type", "multipart/form-data; boundary=B")])
    assert_cleaned_in_place(body, rw)


def test_two_images_back_to_back_after_a_prefix():
    a, b = jpeg(), png()
    body = b"::" + a + b + b"::"
    rw = rewrite(body)
    assert_cleaned_in_place(body, rw, n_images=2)


@pytest.mark.skipif(not oracle.exiftool_available(), reason="exiftool not installed")
def test_exiftool_reads_no_privacy_tag_from_an_embedded_cleaned_image():
    img = jpeg()
    body = b"\x00\x01" + img
    rw = rewrite(body)
    tags = oracle.exiftool_bytes(rw.body[2:], ".jpg")
    assert oracle.leaks("JPEG", tags) == []


# ---- fail closed where the image cannot be delimited or rewritten -------------------------

def test_truncated_embedded_jpeg_is_blocked():
    img = jpeg()
    cut = img[:len(img) * 2 // 3]  # no EOI
    rw = rewrite(b"\x00\x01" + cut)
    assert not forwarded(rw)
    assert any("cannot be cleaned" in (i.error or "") for i in rw.images)


def test_embedded_png_without_iend_is_blocked():
    img = png()
    rw = rewrite(b"xx" + img[:-12] + b"more bytes")
    assert not forwarded(rw)


def test_embedded_image_in_compact_mode_is_reported_not_rewritten():
    img = jpeg()
    body = b"xx" + img
    rw = rewrite(body, options=CarrierOptions(scrub=ScrubOptions(preserve_length=False)))
    assert not forwarded(rw) and rw.body == body


def test_continuation_chunk_of_a_non_image_upload_holding_an_image_is_blocked():
    opts = CarrierOptions()
    url = "https://claude.ai/upload/resumable/abc"
    first = b"PK\x03\x04" + b"\x00" * 200
    total = len(first) + 5000
    r1 = rewrite_request("PUT", url, [("content-range", f"bytes 0-{len(first) - 1}/{total}")], first, opts)
    assert forwarded(r1) and r1.images == ()
    chunk = b"\x00\x01" + jpeg()
    r2 = rewrite_request("PUT", url, [("content-range", f"bytes {len(first)}-{len(first) + len(chunk) - 1}/"
                                       f"{total}")], chunk, opts)
    assert not forwarded(r2)


def test_body_over_the_inspection_limit_with_a_tiff_is_blocked():
    body = os.urandom(3000) + tiff() + os.urandom(3000)
    rw = rewrite(body, options=CarrierOptions(max_body_bytes=4096))
    assert not forwarded(rw)
    assert "larger than 4096 bytes" in rw.images[0].error


def test_body_over_the_limit_without_images_passes():
    body = b"plain text, nothing else. " * 400
    rw = rewrite(body, options=CarrierOptions(max_body_bytes=4096))
    assert forwarded(rw) and rw.images == ()


def test_passed_deadline_blocks_instead_of_forwarding():
    body = b"\x00\x01" + jpeg()
    rw = rewrite(body, options=CarrierOptions(deadline=time.monotonic() - 1))
    assert not forwarded(rw)
    assert "deadline" in " ".join(rw.blockers)


# ---- plausibility: two magic bytes are not an image ---------------------------------------

def test_random_bytes_with_magic_numbers_are_not_blocked():
    rnd = bytearray(os.urandom(200_000))
    # sprinkle every format's first bytes with garbage after them
    for at, magic in ((1000, b"\xff\xd8\xff\xe0"), (5000, b"II*\x00"), (9000, b"MM\x00*"), (13000, b"BM"),
                      (17000, b"RIFF\x10\x00\x00\x00WEBP"), (21000, b"\x89PNG\r\n\x1a\n"),
                      (25000, b"GIF89a"), (29000, b"\x00\x00\x00\x18ftypisom")):
        rnd[at:at + len(magic)] = magic
    body = bytes(rnd)
    rw = rewrite(body, [("content-type", "video/mp4")])
    assert rw.body == body and not rw.blockers
    assert [c for c in embedded.candidates(body) if c.format not in ("PNG", "GIF", "WEBP")] == []


def test_mp4_ftyp_is_not_an_image():
    body = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00\x00\x00\x08free" + os.urandom(5000)
    assert embedded.first_candidate(body) is None


def test_candidates_delimit_each_format_exactly():
    for make, fmt in ((jpeg, "JPEG"), (png, "PNG"), (tiff, "TIFF"), (webp, "WEBP"), (gif, "GIF")):
        img = make()
        body = b"\x01\x02\x03" + img + b"\x04\x05\x06"
        c = embedded.first_candidate(body)
        assert c is not None and (c.format, c.start, c.end) == (fmt, 3, 3 + len(img)), fmt


def test_signature_search_is_windowed_and_finds_a_late_signature():
    body = bytes(embedded.WINDOW * 2 + 100) + b"iVBORw0KGgoAAAANSUhEUg"
    assert signature_in(body) == "base64 image signature"
    body = bytes(embedded.WINDOW - 3) + b"\x89PNG\r\n\x1a\n"  # straddles a window border
    assert signature_in(body) == "raw image signature"
    assert signature_in(bytes(embedded.WINDOW * 2)) is None


# ---- trailers: what follows an image inside a wrapper -------------------------------------

SAMSUNG_TAIL = (b"\x00\x00\x01\x0a\x0e\x00\x00\x00Image_UTC_Data1593487679058" + b"SEFH" + bytes(20) + b"SEFT")


def test_metadata_trailer_after_an_embedded_image_blocks():
    body = b"\x00\x01" + jpeg() + SAMSUNG_TAIL + b"wrapper continues"
    rw = rewrite(body)
    assert not forwarded(rw)
    assert any("trailer" in (i.error or "") for i in rw.images)


def test_motion_photo_video_after_an_embedded_image_blocks():
    mp4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00\x00\x00\x08free" + os.urandom(64)
    rw = rewrite(b"\x00\x01" + jpeg() + mp4)
    assert not forwarded(rw)


def test_stored_zip_entry_with_a_trailer_is_cleaned_whole():
    img = jpeg() + SAMSUNG_TAIL
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("IMG_1234.jpg", img)
    body = buf.getvalue()
    rw = rewrite(body, [("content-type", "application/zip")])
    assert_cleaned_in_place(body, rw)
    with zipfile.ZipFile(io.BytesIO(rw.body)) as z:
        assert z.testzip() is None
        assert b"Image_UTC_Data" not in z.read("IMG_1234.jpg")


@pytest.fixture(scope="module")
def corpus_images():
    from support import corpus
    files = corpus.files()
    if not files:
        pytest.skip(corpus.missing())
    return files


def test_every_corpus_image_embedded_is_cleaned_like_a_file_or_blocked(corpus_images):
    """Inside a wrapper, each real image comes out exactly as `scrub` cleans the file alone,
    or (MPF pairs, trailers) cleaned part by part with no privacy tag left, or blocked."""
    from exifguard import ScrubError, scrub
    same = other = blocked = 0
    for f in corpus_images:
        body = b"\x00\x01" + f.data + b"\x00\x01tail"
        rw = rewrite(body)
        try:
            direct = scrub(f.data).data
        except ScrubError:
            direct = None
        if not forwarded(rw):
            blocked += 1
            continue
        out = rw.body[2:2 + len(f.data)]
        assert rw.body[2 + len(f.data):] == b"\x00\x01tail"
        if out == direct:
            same += 1
            continue
        other += 1
        if oracle.exiftool_available():
            ext = "." + f.name.rsplit(".", 1)[-1]
            assert oracle.leaks(f.format, oracle.exiftool_bytes(out, ext)) == [], f.name
    assert same >= len(corpus_images) * 0.9, (same, other, blocked)


# ---- wrappers inside base64: a PDF or zip as a JSON string, data URL or form field --------

def _b64(data: bytes) -> str:
    import base64
    return base64.b64encode(data).decode()


def test_base64_pdf_in_json_has_its_photo_cleaned_in_place():
    import json
    pdf = pdf_with(jpeg(), "/DCTDecode")
    body = json.dumps({"model": "claude", "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": _b64(pdf)}}]}]}).encode()
    rw = rewrite(body, [("content-type", "application/json")])
    assert_cleaned_in_place(body, rw)
    import base64
    out = base64.b64decode(json.loads(rw.body)["messages"][0]["content"][0]["source"]["data"])
    assert len(out) == len(pdf) and canary.find(out, MARK) == []
    assert "JSON base64" in rw.images[0].carrier


def test_base64_zip_data_url_with_json_escaped_slashes():
    import json
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("IMG_0001.jpg", jpeg())
    doc = {"file": "data:application/zip;base64," + _b64(buf.getvalue())}
    body = json.dumps(doc).replace("/", "\\/").encode()  # PHP-style escaping
    rw = rewrite(body, [("content-type", "application/json")])
    # every '/' stays escaped as it was written, so the JSON text may change length (the
    # base64 of the cleaned archive holds a different number of '/'); the archive does not
    assert not rw.blockers and [i.error for i in rw.images] == [None]
    assert canary.find(rw.body, MARK) == [] and forwarded(rw)
    import base64
    out = base64.b64decode(json.loads(rw.body)["file"].split(",", 1)[1])
    assert len(out) == len(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(out)) as z:
        assert z.testzip() is None


def test_base64_pdf_in_a_form_field():
    from urllib.parse import quote
    pdf = pdf_with(jpeg(), "/DCTDecode")
    body = b"name=doc.pdf&file=" + quote(_b64(pdf), safe="").encode()
    rw = rewrite(body, [("content-type", "application/x-www-form-urlencoded")])
    # '+' and '/' are percent-encoded as written, so the form text may change length
    assert not rw.blockers and [i.error for i in rw.images] == [None]
    assert canary.find(rw.body, MARK) == [] and forwarded(rw)
    import base64
    from urllib.parse import unquote
    out = base64.b64decode(unquote(rw.body.split(b"&file=")[1].decode()))
    assert len(out) == len(pdf) and canary.find(out, MARK) == []


def test_base64_deflated_zip_with_a_photo_is_blocked():
    import json
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("IMG_0001.jpg", jpeg())
    body = json.dumps({"file": _b64(buf.getvalue())}).encode()
    rw = rewrite(body, [("content-type", "application/json")])
    assert not forwarded(rw)


def test_long_base64_without_images_passes_untouched():
    import json
    body = json.dumps({"blob": _b64(os.urandom(30_000)), "text": "x" * 5000}).encode()
    rw = rewrite(body, [("content-type", "application/json")])
    assert rw.body == body and rw.images == () and rw.blockers == ()


# ---- compressed wrappers: searched by streamed inflation, blocked when they hold an image --

def test_tar_gz_holding_a_photo_is_blocked():
    import gzip
    import tarfile
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        notes = b"trip notes " * 50
        info = tarfile.TarInfo("notes.txt")
        info.size = len(notes)
        t.addfile(info, io.BytesIO(notes))
        img = jpeg()
        info = tarfile.TarInfo("IMG_20240512_142233.jpg")
        info.size = len(img)
        t.addfile(info, io.BytesIO(img))
    rw = rewrite(gzip.compress(raw.getvalue()), [("content-type", "application/gzip")])
    assert not forwarded(rw)
    assert any("gzip stream" in (i.error or "") for i in rw.images)


def test_plain_tar_holding_a_photo_is_cleaned_in_place():
    import tarfile
    raw = io.BytesIO()
    img = jpeg()
    with tarfile.open(fileobj=raw, mode="w") as t:
        info = tarfile.TarInfo("IMG_1.jpg")
        info.size = len(img)
        t.addfile(info, io.BytesIO(img))
    body = raw.getvalue()
    rw = rewrite(body, [("content-type", "application/x-tar")])
    assert_cleaned_in_place(body, rw)
    with tarfile.open(fileobj=io.BytesIO(rw.body)) as t:  # header checksums still valid
        assert canary.find(t.extractfile("IMG_1.jpg").read(), MARK) == []


def test_gzip_of_text_passes():
    import gzip
    body = gzip.compress(b"just some log lines\n" * 1000)
    rw = rewrite(body, [("content-type", "application/gzip")])
    assert rw.body == body and rw.images == () and rw.blockers == ()


def test_image_deep_inside_a_deflated_zip_entry_is_found():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("report.pdf", pdf_with(jpeg(), "/DCTDecode"))
    rw = rewrite(buf.getvalue(), [("content-type", "application/zip")])
    assert not forwarded(rw)


def test_inflation_is_capped_and_fails_closed():
    from exifguard.carriers import wrappers
    bomb = zlib.compress(bytes(8 << 20), 9)
    fmt, why = wrappers.inflated_image(bomb, 0, len(bomb), 15, cap=1 << 20)
    assert fmt is None and "more than 1048576 bytes" in why
    fmt, why = wrappers.inflated_image(bomb, 0, len(bomb), 15)
    assert (fmt, why) == (None, None)


# ---- fuzz findings C1-C3 (scripts/fuzz, carriers target) ----------------------------------

def _tiff_out_of_order() -> bytes:
    """A little-endian TIFF whose IFD entries are not in tag order (readers accept it)."""
    text = MARK + b"\x00"
    data_at = 8 + 2 + 5 * 12 + 4
    entries = [(0x013B, 2, len(text), data_at),  # Artist, first
               (0x0100, 3, 1, 1), (0x0101, 3, 1, 1), (0x0111, 4, 1, data_at + len(text)), (0x0117, 4, 1, 1)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0" * 4
    return b"II*\x00" + struct.pack("<I", 8) + ifd + text + b"\x00"


def test_c1_tiff_with_entries_out_of_tag_order_is_found():
    img = _tiff_out_of_order()
    body = b"here is the scan you asked for: " + img
    c = embedded.first_candidate(body)
    assert c is not None and c.format == "TIFF" and c.end == len(body)
    rw = rewrite(body, [("content-type", "text/plain")])
    assert MARK not in rw.body or not forwarded(rw)


def test_c2_bare_jxl_codestream_does_not_cover_what_follows():
    img = jpeg()
    body = b"\xff\x0a\x1f" + img
    rw = rewrite(body)
    assert canary.find(rw.body, MARK) == [] or not forwarded(rw)
    assert rw.images  # never a silent pass


def _jxl_container() -> bytes:
    def box(t: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + t + payload
    return (b"\x00\x00\x00\x0cJXL \r\n\x87\n" + box(b"ftyp", b"jxl \x00\x00\x00\x00jxl ")
            + box(b"Exif", b"\x00\x00\x00\x00" + MARK) + box(b"jxlc", b"\xff\x0a" + bytes(40)))


def _bmp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "BMP")
    return buf.getvalue()


@pytest.mark.parametrize("make", [_jxl_container, _bmp], ids=["jxl-container", "bmp"])
def test_c3_base64_jxl_or_bmp_outside_a_parsed_field_is_blocked(make):
    import base64
    url = "data:image/x;base64," + base64.b64encode(make()).decode()
    body = ("name=report&note=" + "see%20attached" + url).encode()  # the '&' before it is missing
    rw = rewrite(body, [("content-type", "application/x-www-form-urlencoded")])
    assert not forwarded(rw)


def test_c1b_tiff_whose_first_entries_have_unknown_types_is_found():
    img = bytearray(_tiff_out_of_order())
    # make the first entry's tag unknown and its type one no reader knows
    struct.pack_into("<HH", img, 10, 0x612E, 0x00EE)
    body = b"scan: " + bytes(img)
    c = embedded.first_candidate(body)
    assert c is not None and c.format == "TIFF"


def test_c4_jpeg_whose_first_segment_is_an_extension_marker_is_found():
    img = jpeg()
    odd = img[:2] + b"\xff\xf0" + struct.pack(">H", 2 + len(MARK)) + MARK + img[2:]
    body = b"\x00\x01" + odd
    c = embedded.first_candidate(body)
    assert c is not None and (c.format, c.start, c.end) == ("JPEG", 2, len(body))
    rw = rewrite(body)
    assert canary.find(rw.body, MARK) == [] or not forwarded(rw)


def test_timed_out_rewrite_says_so():
    rw = rewrite(b"\x00\x01" + jpeg(), options=CarrierOptions(deadline=time.monotonic() - 1))
    assert rw.timed_out and rw.blockers


def test_hash_of_the_compressed_bytes_blocks_instead_of_being_recomputed_wrongly():
    """The proxy hands us the decoded body; a Content-MD5 over the gzip bytes does not match
    it, so it cannot be recomputed and blocks.  One over the decoded body is recomputed."""
    import base64
    import gzip
    import hashlib
    img = jpeg()
    over_gzip = base64.b64encode(hashlib.md5(gzip.compress(img)).digest()).decode()
    rw = rewrite(img, [("content-type", "image/jpeg"), ("content-encoding", "gzip"), ("content-md5", over_gzip)])
    assert not forwarded(rw)
    assert any("compressed" in b for b in rw.blockers)
    over_plain = base64.b64encode(hashlib.md5(img).digest()).decode()
    rw = rewrite(img, [("content-type", "image/jpeg"), ("content-encoding", "gzip"), ("content-md5", over_plain)])
    assert forwarded(rw)
    assert {k.lower(): v for k, v in rw.set_headers.items()}["content-md5"] == \
        base64.b64encode(hashlib.md5(rw.body).digest()).decode()


def test_c6_embedded_heif_extent_covers_a_vendor_box_after_mdat():
    """A well-formed top-level box of any type after an embedded HEIF belongs to the file
    (Samsung writes 'sefd' there), so the engine cleans it rather than the wrapper keeping it."""
    def box(t: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + t + payload
    heif = box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic") + box(b"meta", bytes(20)) + box(b"mdat", bytes(16))
    vendor = box(b"sefd", b"Camera_Info" + MARK)
    body = b"\x00\x01" + heif + vendor + b"\x1a\x03end"
    c = embedded.first_candidate(body)
    assert c is not None and c.format == "HEIC" and c.end == 2 + len(heif) + len(vendor)


def test_c7_embedded_bmp_with_a_zero_file_size_is_delimited_by_its_headers():
    img = bytearray(_bmp())
    n = len(img)
    struct.pack_into("<I", img, 2, 0)  # bfSize 0: readers ignore it
    body = b"see: " + bytes(img) + b" (end)"
    c = embedded.first_candidate(body)
    assert c is not None and (c.format, c.start, c.end) == ("BMP", 5, 5 + n)


@pytest.mark.parametrize("tail", [b"Exif\x00\x00MM\x00*" + MARK, b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>" + MARK])
def test_raw_exif_or_xmp_behind_an_embedded_image_blocks(tail):
    rw = rewrite(b"\x00\x01" + tiff() + bytes(3000) + tail + b"wrapper")
    assert not forwarded(rw)


def test_big_text_part_is_not_copied_but_an_image_after_junk_in_it_is_still_cleaned():
    scan_mod = importlib.import_module("exifguard.carriers.scan")
    img = jpeg()
    big = b"lorem ipsum dolor sit amet " * 50_000 + b"\x00\x01" + img + b" tail"
    body = (b"--B\r\nContent-Disposition: form-data; name=\"note\"\r\nContent-Type: text/plain\r\n\r\n" + big
            + b"\r\n--B--\r\n")
    assert not scan_mod._part_may_hold_a_carrier(body, body.index(b"lorem"), body.index(b"\r\n--B--"), "text/plain")
    rw = rewrite(body, [("content-type", "multipart/form-data; boundary=B")])
    assert_cleaned_in_place(body, rw)


def test_big_form_or_base64_part_is_still_scanned():
    import base64
    from urllib.parse import quote

    scan_mod = importlib.import_module("exifguard.carriers.scan")
    img = jpeg() + bytes(2 << 20)
    for payload in (b"a=1&file=" + quote(base64.b64encode(img)).encode(), base64.b64encode(img)):
        assert scan_mod._part_may_hold_a_carrier(payload, 0, len(payload), "application/octet-stream")
