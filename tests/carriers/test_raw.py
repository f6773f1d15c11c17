"""Raw bodies under any label, chunked uploads, bounds, engine errors, non-image requests."""

from __future__ import annotations

import pytest

from carriers.helpers import corpus_image, fake_scrubber
from exifguard import ScrubError, scrub
from exifguard.carriers import CarrierOptions, UploadTracker, rewrite_request
from support import corpus


@pytest.mark.parametrize("ctype", ["application/x-www-form-urlencoded;charset=UTF-8", "application/octet-stream",
                                   "text/plain", "application/json", "multipart/form-data; boundary=x", None])
def test_raw_image_found_whatever_the_label(ctype) -> None:
    img = corpus_image("JPEG")
    headers = {"Content-Type": ctype} if ctype else {}
    r = rewrite_request("PUT", "https://files.oaiusercontent.com/f/raw", headers, img)
    assert [f.carrier for f in r.images] == ["raw body"] and r.images[0].ok
    assert r.body == scrub(img).data


@pytest.mark.parametrize("f", corpus.params(broken=True))
def test_broken_corpus_image_is_error_or_clean(f) -> None:
    r = rewrite_request("POST", "https://x.test/", {}, f.data)
    assert len(r.images) == 1
    img = r.images[0]
    if img.error is None:
        assert r.body == img.result.data
    else:
        assert r.body == f.data and r.has_errors


def test_engine_error_message_is_kept() -> None:
    def failing(data, options):
        raise ScrubError("JPEG: segment length runs past the end of the file")
    r = rewrite_request("POST", "https://x.test/", {}, corpus_image("JPEG"), CarrierOptions(scrubber=failing))
    assert r.images[0].error == "JPEG: segment length runs past the end of the file" and r.images[0].result is None
    assert r.has_errors and r.body == corpus_image("JPEG")


def test_cleaner_bug_is_contained() -> None:
    def buggy(data, options):
        raise RuntimeError("boom")
    r = rewrite_request("POST", "https://x.test/", {}, corpus_image("PNG"), CarrierOptions(scrubber=buggy))
    assert r.has_errors and "internal error" in r.images[0].error


@pytest.mark.parametrize("body", [b"", b"{}", b"hello", b"\x00" * 100, b"--x\r\n", b"a=b&c=d", b"[" * 5000,
                                  b'{"a": "' + b"\\" * 99 + b'"', bytes(range(256)) * 4])
def test_non_image_bodies_identical(body: bytes) -> None:
    for ctype in ("application/json", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "x/y"):
        r = rewrite_request("POST", "https://x.test/", [("content-type", ctype)], body)
        assert r.body == body and not r.images and not r.blockers and not r.changed


def test_never_raises_on_odd_input() -> None:
    r = rewrite_request("POST", "https://x.test/", [(b"Content-Type", b"multipart/form-data; boundary=\xff")],
                        bytearray(b"--\xff\r\n"))
    assert isinstance(r.body, bytes)


def test_body_size_limit() -> None:
    img = corpus_image("PNG")
    r = rewrite_request("POST", "https://x.test/", {}, img, CarrierOptions(max_body_bytes=1000))
    assert r.body == img and r.has_errors and "larger than" in r.images[0].error
    r = rewrite_request("POST", "https://x.test/", {}, b"x" * 5000, CarrierOptions(max_body_bytes=1000))
    assert not r.has_errors


def test_max_images_bound() -> None:
    import base64, json
    tiny = b"\xff\xd8\xff\xe0" + bytes(100)
    body = json.dumps({"imgs": [base64.b64encode(tiny).decode()] * 5}).encode()
    r = rewrite_request("POST", "https://x.test/", {}, body, CarrierOptions(scrubber=fake_scrubber, max_images=3))
    assert [f.error is None for f in r.images] == [True, True, True, False, False]


# --- chunked / resumable uploads ---------------------------------------------------------

def test_first_chunk_of_image_is_error_and_continuations_too() -> None:
    img = corpus_image("JPEG")
    tracker = UploadTracker()
    opts = CarrierOptions(uploads=tracker)
    url = "https://tenant.sharepoint.com/_api/uploadSession?guid=1"
    half = len(img) // 2
    r1 = rewrite_request("PUT", url, {"Content-Range": f"bytes 0-{half - 1}/{len(img)}"}, img[:half], opts)
    assert r1.body == img[:half] and r1.has_errors and "chunked" in r1.images[0].error
    r2 = rewrite_request("PUT", url, {"Content-Range": f"bytes {half}-{len(img) - 1}/{len(img)}"}, img[half:], opts)
    assert r2.body == img[half:] and r2.has_errors


def test_continuation_of_non_image_upload_passes() -> None:
    opts = CarrierOptions(uploads=UploadTracker())
    url = "https://push.clients6.google.com/upload/?upload_id=XYZ&upload_protocol=resumable"
    pdf = b"%PDF-1.7\n" + bytes(1000)
    r1 = rewrite_request("POST", url, {"x-goog-upload-command": "upload", "x-goog-upload-offset": "0"}, pdf, opts)
    assert not r1.images
    r2 = rewrite_request("POST", url, {"x-goog-upload-command": "upload, finalize",
                                       "x-goog-upload-offset": "1009"}, b"\x00" * 100, opts)
    assert not r2.images and not r2.has_errors


def test_unknown_continuation_fails_closed() -> None:
    r = rewrite_request("POST", "https://rupload.meta.ai/x/1", {"offset": "4096", "x-entity-length": "9000"},
                        b"\x00" * 100, CarrierOptions(uploads=None))
    assert r.has_errors and r.images[0].format is None


def test_single_chunk_resumable_is_cleaned_and_declared_sizes_hold() -> None:
    img = corpus_image("HEIC")
    r = rewrite_request("POST", "https://rupload.meta.ai/gen_ai_document_gen_ai_tenant/u",
                        {"offset": "0", "x-entity-length": str(len(img))}, img)
    assert r.images[0].ok and len(r.body) == len(img) and not r.blockers
    r = rewrite_request("PUT", "https://t.sharepoint.com/uploadSession",
                        {"Content-Range": f"bytes 0-{len(img) - 1}/{len(img)}"}, img)
    assert r.images[0].ok and not r.blockers


def test_rename_sets_neutral_entity_name() -> None:
    img = corpus_image("JPEG")
    r = rewrite_request("POST", "https://rupload.meta.ai/x", {"x-entity-name": "IMG_20240512_142233.jpg"}, img,
                        CarrierOptions(rename_files=True))
    assert r.set_headers == {"x-entity-name": "image.jpg"}
