"""Integrity headers: recomputed values verify independently; signatures become blockers."""

from __future__ import annotations

import base64
import gzip
import hashlib
import zlib

import pytest

from carriers.helpers import corpus_image
from exifguard.carriers import rewrite_request
from exifguard.carriers.hashes import crc32c, crc64nvme


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def test_crc_vectors() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc64nvme(b"123456789") == 0xAE8B14860A799888


def headers_for(body: bytes) -> list[tuple[str, str]]:
    return [("Content-MD5", b64(hashlib.md5(body).digest())),
            ("x-ms-blob-content-md5", b64(hashlib.md5(body).digest())),
            ("x-amz-checksum-crc32", b64(zlib.crc32(body).to_bytes(4, "big"))),
            ("x-amz-checksum-sha1", b64(hashlib.sha1(body).digest())),
            ("x-amz-checksum-sha256", b64(hashlib.sha256(body).digest())),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("Content-Digest", f"sha-256=:{b64(hashlib.sha256(body).digest())}:"),
            ("X-Goog-Hash", "md5=" + b64(hashlib.md5(body).digest()))]


def test_all_hashes_recomputed_and_verify() -> None:
    img = corpus_image("PNG")
    r = rewrite_request("PUT", "https://bucket.s3.amazonaws.com/k", headers_for(img), img)
    assert not r.blockers and r.images[0].ok
    new = r.body
    assert r.set_headers == {
        "Content-MD5": b64(hashlib.md5(new).digest()), "x-ms-blob-content-md5": b64(hashlib.md5(new).digest()),
        "x-amz-checksum-crc32": b64(zlib.crc32(new).to_bytes(4, "big")),
        "x-amz-checksum-sha1": b64(hashlib.sha1(new).digest()),
        "x-amz-checksum-sha256": b64(hashlib.sha256(new).digest()),
        "Content-Digest": f"sha-256=:{b64(hashlib.sha256(new).digest())}:",
        "X-Goog-Hash": "md5=" + b64(hashlib.md5(new).digest())}


def test_crc32c_and_goog_hash_both_parts() -> None:
    img = corpus_image("WEBP")
    h = [("x-goog-hash", f"crc32c={b64(crc32c(img).to_bytes(4, 'big'))},md5={b64(hashlib.md5(img).digest())}"),
         ("x-amz-checksum-crc32c", b64(crc32c(img).to_bytes(4, "big")))]
    r = rewrite_request("PUT", "https://storage.googleapis.com/b/o", h, img)
    new = r.body
    assert r.set_headers["x-goog-hash"] == (f"crc32c={b64(crc32c(new).to_bytes(4, 'big'))},"
                                            f"md5={b64(hashlib.md5(new).digest())}")
    assert r.set_headers["x-amz-checksum-crc32c"] == b64(crc32c(new).to_bytes(4, "big"))


@pytest.mark.parametrize("extra,url", [
    ([("x-amz-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
      ("Authorization", "AWS4-HMAC-SHA256 Credential=A/20300101/us-east-1/s3/aws4_request, "
                        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=ab")], "https://b.s3.amazonaws.com/k"),
    ([("Content-MD5", "__OLD__")], "https://b.s3.amazonaws.com/k?X-Amz-SignedHeaders=content-md5%3Bhost&X-Amz-Signature=1"),
    ([("Content-MD5", "__OLD__"), ("Authorization", "SharedKey acct:c2ln")], "https://a.blob.core.windows.net/c/b"),
    ([("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")], "https://b.s3.amazonaws.com/k"),
], ids=["sigv4-payload", "presigned-signed-md5", "azure-sharedkey", "streaming-signed"])
def test_signature_over_body_is_blocker(extra, url) -> None:
    img = corpus_image("JPEG")
    old_md5 = b64(hashlib.md5(img).digest())
    headers = [(k, old_md5 if v == "__OLD__" else v) for k, v in extra]
    r = rewrite_request("PUT", url, headers, img)
    assert r.has_errors
    assert r.blockers or (r.body == img and r.images[0].error)  # streaming: not rewritten at all
    assert not any(k.lower() == "content-md5" for k in r.set_headers)


def test_hash_of_compressed_body_is_blocker() -> None:
    img = corpus_image("JPEG")
    headers = [("Content-Encoding", "gzip"), ("Content-MD5", b64(hashlib.md5(gzip.compress(img)).digest()))]
    r = rewrite_request("PUT", "https://x.blob.core.windows.net/c/b", headers, img)
    assert r.blockers and "does not hash the body" in r.blockers[0]


def test_unchanged_body_keeps_headers() -> None:
    body = b"not an image at all" * 10
    r = rewrite_request("PUT", "https://x.test/", headers_for(body), body)
    assert r.set_headers == {} and r.body is body


def test_s3_post_form_checksum_field_is_blocker() -> None:
    from carriers.builders import field_part, file_part, multipart
    img = corpus_image("JPEG")
    body = multipart([field_part("key", "k"), field_part("Content-MD5", b64(hashlib.md5(img).digest())),
                      file_part("file", img)], "B")
    r = rewrite_request("POST", "https://b.s3.amazonaws.com/", {"Content-Type": "multipart/form-data; boundary=B"}, body)
    assert r.images[0].ok and any("Content-MD5" in b for b in r.blockers)


def test_aws_chunked_image_is_error() -> None:
    img = corpus_image("JPEG")
    body = f"{len(img):x};chunk-signature={'a' * 64}\r\n".encode() + img + b"\r\n0;chunk-signature=" + b"b" * 64 + b"\r\n\r\n"
    r = rewrite_request("PUT", "https://b.s3.amazonaws.com/k",
                        {"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "Content-Encoding": "aws-chunked"},
                        body)
    assert r.body == body and r.has_errors


def test_crc32c_fast_path_matches_the_pure_python_oracle() -> None:
    import os

    from exifguard.carriers import hashes
    assert hashes.crc32c_pure(b"123456789") == 0xE3069283  # the published check value
    for n in (0, 1, 7, 4096, 100_003):
        data = os.urandom(n)
        assert hashes.crc32c(data) == hashes.crc32c_pure(data)
