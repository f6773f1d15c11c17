"""Byte-exact multipart splitting: framing edge cases, email-parser oracle, malformed bodies."""

from __future__ import annotations

import email.parser
import email.policy

import pytest

from carriers.builders import field_part, file_part, multipart as build_mp
from carriers.helpers import assert_outside_spans_equal, corpus_image, fake_scrubber, found_spans
from exifguard.carriers import CarrierOptions, rewrite_request
from exifguard.carriers import multipart as mp

FAKE = CarrierOptions(scrubber=fake_scrubber, uploads=None)
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
TINY = JPEG_HEAD + b"\r\n--not-the-boundary\r\n" + bytes(range(256)) + b"\xff\xd9"


def rw(body: bytes, ctype: str, options: CarrierOptions = FAKE):
    return rewrite_request("POST", "https://example.test/upload", [("Content-Type", ctype)], body, options)


@pytest.mark.parametrize("crlf", [b"\r\n", b"\n"], ids=["crlf", "lf"])
@pytest.mark.parametrize("ctype", [
    'multipart/form-data; boundary=XyZ',
    'multipart/form-data; boundary="XyZ"',
    'Multipart/Form-Data; charset=utf-8; BOUNDARY="XyZ"; foo=bar',
    'multipart/mixed;boundary=XyZ'])
def test_framing_preserved_only_payload_replaced(crlf: bytes, ctype: str) -> None:
    body = build_mp([field_part("a", "hello\r\nworld"), file_part("file", TINY),
                     ("content-disposition: FORM-DATA; NAME=\"c\"\ncontent-type: text/plain", b"x" * 50)],
                    "XyZ", crlf=crlf, preamble=b"this is the preamble" + crlf, epilogue=b"epilogue bytes")
    r = rw(body, ctype)
    assert len(r.images) == 1 and r.images[0].ok
    assert r.images[0].carrier == "multipart part 'file'"
    assert r.images[0].filename == "IMG_20240512_142233.jpg"
    a, b = r.images[0].span
    assert body[a:b] == TINY and r.body[a:b] == TINY[:4] + bytes(len(TINY) - 4)
    assert_outside_spans_equal(body, r.body, found_spans(r.images))


def test_nested_multipart_mixed() -> None:
    inner = build_mp([file_part("file1", TINY), field_part("n", "1")], "inner-b")
    body = build_mp([field_part("meta", "{}"),
                     ('Content-Disposition: form-data; name="files"\nContent-Type: multipart/mixed; boundary=inner-b',
                      inner)], "outer-b")
    r = rw(body, "multipart/form-data; boundary=outer-b")
    assert [f.carrier for f in r.images] == ["multipart part 'files' > multipart part 'file1'"]
    assert_outside_spans_equal(body, r.body, found_spans(r.images))
    assert r.body != body


def test_unlabelled_multipart_is_sniffed() -> None:
    body = build_mp([file_part("file", TINY)], "----abc")
    r = rw(body, "application/octet-stream")
    assert len(r.images) == 1 and r.images[0].ok


def test_image_payload_containing_delimiter_is_not_rewritten() -> None:
    def evil(data, options):
        out = fake_scrubber(data, options)
        return type(out)(data=data[:4] + b"\r\n--B\r\n" + bytes(len(data) - 11), format="JPEG")
    body = build_mp([file_part("file", TINY)], "B")
    r = rw(body, "multipart/form-data; boundary=B", CarrierOptions(scrubber=evil))
    assert r.body == body and r.has_errors and "boundary" in r.images[0].error


@pytest.mark.parametrize("mutilate", [
    lambda b: b[:-20],                                   # truncated: no closing delimiter
    lambda b: b.replace(b"--B", b"--C"),                 # the labelled boundary never appears
    lambda b: b.replace(b"\r\n\r\n", b"\r\n", 1),       # header block never ends properly
], ids=["truncated", "no-opening", "broken-headers"])
def test_malformed_with_image_is_error_never_half_rewritten(mutilate) -> None:
    body = mutilate(build_mp([field_part("x", "1"), file_part("file", corpus_image("JPEG"))], "B"))
    r = rw(body, "multipart/form-data; boundary=B")
    assert r.body == body
    assert r.has_errors and any("cannot parse multipart" in (f.error or "") for f in r.images)


def test_malformed_without_image_passes_untouched() -> None:
    body = b"--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nhello"
    r = rw(body, "multipart/form-data; boundary=B")
    assert r.body is body and not r.images and not r.has_errors


def test_boundary_prefix_inside_payload_is_not_a_delimiter() -> None:
    payload = b"line\r\n--Bnot-a-delimiter\r\nmore"
    body = build_mp([field_part("t", payload), file_part("file", TINY)], "B")
    m = mp.parse(body, b"B")
    assert body[m.parts[0].body_start:m.parts[0].body_end] == payload
    assert len(m.parts) == 2


def test_rename_files_opt_in() -> None:
    body = build_mp([file_part("file", TINY, "John passport 2024-05-12.jpg"), field_part("x", "1")], "B")
    plain = rw(body, "multipart/form-data; boundary=B")
    assert b"John passport" in plain.body and plain.images[0].identifying_name
    r = rw(body, "multipart/form-data; boundary=B", CarrierOptions(scrubber=fake_scrubber, rename_files=True))
    assert b"John passport" not in r.body and b'filename="image.jpg"' in r.body
    assert b'name="x"\r\n\r\n1\r\n' in r.body


def test_too_many_parts_is_bounded() -> None:
    body = build_mp([field_part(f"f{i}", "v") for i in range(30)] + [file_part("file", TINY)], "B")
    r = rw(body, "multipart/form-data; boundary=B", CarrierOptions(scrubber=fake_scrubber, max_parts=10))
    assert r.body == body and r.has_errors


# --- oracle: the stdlib email parser agrees on well-formed bodies -------------------------

def _email_parts(body: bytes, boundary: str) -> list[tuple[list[tuple[str, str]], bytes]]:
    head = f"Content-Type: multipart/form-data; boundary=\"{boundary}\"\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    out = []
    for part in msg.iter_parts():
        out.append(([(k, str(v)) for k, v in part.items()], part.get_payload(decode=True)))
    return out


@pytest.mark.parametrize("payloads", [
    [b"a", b"", b"text with\r\nlines\r\n", b"\x00\x01binary\xff\xfe"],
    [bytes(range(256)) * 3],
    [b"--almost\r\n", b"trailing newline\r\n\r\n"],
])
def test_agrees_with_email_parser(payloads: list[bytes]) -> None:
    parts = [(f'Content-Disposition: form-data; name="p{i}"\nContent-Type: application/octet-stream', p)
             for i, p in enumerate(payloads)]
    body = build_mp(parts, "b0undary", preamble=b"pre\r\n", epilogue=b"\r\n")
    ours = mp.parse(body, b"b0undary")
    theirs = _email_parts(body, "b0undary")
    assert len(ours.parts) == len(theirs)
    for p, (headers, payload) in zip(ours.parts, theirs):
        assert [(k.lower(), v) for k, v in p.headers] == [(k.lower(), v) for k, v in headers]
        assert body[p.body_start:p.body_end] == payload
