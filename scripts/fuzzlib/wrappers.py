"""Request shapes that carry an image, and mutations of the wrapper around it.

Why these shapes: the carrier layer must find an image wherever a client puts it — the
shapes the services use (multipart, base64 JSON, data URLs, form fields, raw PUTs) and the
ones issue 11 showed were missed (junk before a raw image, text then an image, a protobuf
bytes field, a gRPC-web frame, a stored zip entry, a PDF stream).  Each builder records
the image's span in the body so wrapper mutations can leave the image alone (then a
canary in an accepted body is a carrier bug, not the mutation's doing) or cut into it.
Boundaries and names come from the run's RNG, so a seeded run is reproducible.
"""

from __future__ import annotations

import base64
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

URL = "https://claude.ai/api/organizations/o/upload"
MIME = {b"\xff\xd8": "image/jpeg", b"\x89P": "image/png", b"GI": "image/gif", b"RI": "image/webp",
        b"II": "image/tiff", b"MM": "image/tiff", b"BM": "image/bmp"}


@dataclass
class Req:
    shape: str
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    span: tuple[int, int] | None = None
    """Where the image (or its text encoding) sits in the body."""
    wrapper_ops: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"shape": self.shape, "method": self.method, "url": self.url, "headers": self.headers,
                "span": self.span, "wrapper_ops": self.wrapper_ops}


def _mime(img: bytes) -> str:
    return MIME.get(img[:2], "application/octet-stream")


def _boundary(rng: random.Random) -> str:
    return "----WebKitFormBoundary" + "".join(rng.choice("ABCDEFGHabcdefgh0123456789") for _ in range(16))


def raw(img: bytes, rng: random.Random) -> Req:
    return Req("raw", "PUT", URL, [("Content-Type", _mime(img))], img, (0, len(img)))


def raw_mislabelled(img: bytes, rng: random.Random) -> Req:
    return Req("raw_mislabelled", "POST", URL, [("Content-Type", "application/x-www-form-urlencoded")],
               img, (0, len(img)))


def junk_prefixed(img: bytes, rng: random.Random) -> Req:
    pre = rng.choice((b"\r\n", b"\0\0", b"xx", b"hello, here is my photo: ", bytes(rng.randrange(1, 64))))
    return Req("junk_prefixed", "POST", URL, [("Content-Type", "application/octet-stream")],
               pre + img, (len(pre), len(pre) + len(img)))


def text_then_image(img: bytes, rng: random.Random) -> Req:
    pre = b"--- attachment follows ---\n" * rng.randint(1, 3)
    post = rng.choice((b"", b"\n--- end ---\n", bytes(7)))
    return Req("text_then_image", "POST", URL, [("Content-Type", "text/plain")], pre + img + post,
               (len(pre), len(pre) + len(img)))


def multipart(img: bytes, rng: random.Random) -> Req:
    b = _boundary(rng)
    head = (f"--{b}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nvision\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"IMG_20240512_142233.jpg\"\r\n"
            f"Content-Type: {_mime(img)}\r\n\r\n").encode()
    tail = f"\r\n--{b}--\r\n".encode()
    pre = rng.choice((b"", b"preamble text\r\n"))
    body = pre + head + img + tail
    return Req("multipart", "POST", URL, [("Content-Type", f"multipart/form-data; boundary={b}")], body,
               (len(pre) + len(head), len(pre) + len(head) + len(img)))


def multipart_nested(img: bytes, rng: random.Random) -> Req:
    inner_b = _boundary(rng) + "in"
    inner = (f"--{inner_b}\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\n\r\n").encode()
    outer_b = _boundary(rng)
    head = (f"--{outer_b}\r\nContent-Disposition: form-data; name=\"files\"\r\n"
            f"Content-Type: multipart/mixed; boundary={inner_b}\r\n\r\n").encode() + inner
    tail = f"\r\n--{inner_b}--\r\n\r\n--{outer_b}--\r\n".encode()
    return Req("multipart_nested", "POST", URL, [("Content-Type", f"multipart/form-data; boundary={outer_b}")],
               head + img + tail, (len(head), len(head) + len(img)))


def json_base64(img: bytes, rng: random.Random) -> Req:
    b64 = base64.b64encode(img).decode()
    pre = '{"model":"m","messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"' \
          + _mime(img) + '","data":"'
    body = (pre + b64 + '"}},{"type":"text","text":"describe"}]}]}').encode()
    return Req("json_base64", "POST", URL, [("Content-Type", "application/json")], body,
               (len(pre), len(pre) + len(b64)))


def json_data_url(img: bytes, rng: random.Random) -> Req:
    url = f"data:{_mime(img)};base64," + base64.b64encode(img).decode()
    pre = '{"input":[{"role":"user","content":[{"type":"input_image","image_url":"'
    body = (pre + url + '"}]}]}').encode()
    return Req("json_data_url", "POST", URL, [("Content-Type", "application/json")], body,
               (len(pre), len(pre) + len(url)))


def form_field(img: bytes, rng: random.Random) -> Req:
    val = quote(f"data:{_mime(img)};base64," + base64.b64encode(img).decode(), safe="")
    pre = "scenario=UploadImage&FileBase64="
    body = (pre + val + "&x=1").encode()
    return Req("form_field", "POST", URL, [("Content-Type", "application/x-www-form-urlencoded")], body,
               (len(pre), len(pre) + len(val)))


def multipart_base64(img: bytes, rng: random.Random) -> Req:
    b = _boundary(rng)
    head = (f"--{b}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"base64;photo.jpg\"\r\n"
            f"Content-Type: {_mime(img)}\r\n\r\n").encode()
    b64 = base64.b64encode(img)
    tail = f"\r\n--{b}--\r\n".encode()
    return Req("multipart_base64", "POST", URL, [("Content-Type", f"multipart/form-data; boundary={b}")],
               head + b64 + tail, (len(head), len(head) + len(b64)))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def protobuf(img: bytes, rng: random.Random) -> Req:
    pre = b"\x0a\x05hello" + b"\x12" + _varint(len(img))
    return Req("protobuf", "POST", URL, [("Content-Type", "application/x-protobuf")], pre + img + b"\x18\x01",
               (len(pre), len(pre) + len(img)))


def grpc_web(img: bytes, rng: random.Random) -> Req:
    msg = b"\x1a" + _varint(len(img)) + img
    pre = b"\x00" + struct.pack(">I", len(msg)) + b"\x1a" + _varint(len(img))
    return Req("grpc_web", "POST", URL, [("Content-Type", "application/grpc-web+proto")], pre + img,
               (len(pre), len(pre) + len(img)))


def zip_stored(img: bytes, rng: random.Random) -> Req:
    name = b"IMG_20240512_142233.jpg"
    crc = zlib.crc32(img)
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, crc, len(img), len(img), len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, crc, len(img), len(img),
                          len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(img), 0)
    return Req("zip_stored", "POST", URL, [("Content-Type", "application/zip")], local + img + central + end,
               (len(local), len(local) + len(img)))


def pdf_stream(img: bytes, rng: random.Random) -> Req:
    head = (b"%PDF-1.4\n1 0 obj\n<< /Type /XObject /Subtype /Image /Width 8 /Height 8 /ColorSpace /DeviceRGB "
            b"/BitsPerComponent 8 /Filter /DCTDecode /Length " + str(len(img)).encode() + b" >>\nstream\n")
    tail = b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    return Req("pdf_stream", "POST", URL, [("Content-Type", "application/pdf")], head + img + tail,
               (len(head), len(head) + len(img)))


SHAPES: dict[str, Callable[[bytes, random.Random], Req]] = {
    f.__name__: f for f in (raw, raw_mislabelled, junk_prefixed, text_then_image, multipart, multipart_nested,
                            json_base64, json_data_url, form_field, multipart_base64, protobuf, grpc_web,
                            zip_stored, pdf_stream)}


def mutate_wrapper(req: Req, rng: random.Random, touch_image: bool) -> Req:
    """Damage the wrapper; outside the image span unless `touch_image` (truncation into it)."""
    body = bytearray(req.body)
    s, e = req.span or (0, 0)
    ops = []
    for _ in range(rng.randint(1, 2)):
        op = rng.randrange(9 if touch_image else 8)
        outside = [i for i in (rng.randrange(0, s) if s else -1, rng.randrange(e, len(body)) if e < len(body) else -1)
                   if i >= 0]
        if op == 0 and outside:  # flip a wrapper byte
            i = rng.choice(outside)
            body[i] = rng.randrange(256)
            ops.append("flip")
        elif op == 1:  # junk before everything (shifts the span)
            pre = rng.choice((b"\r\n", b"\0", b"xx", b"--", bytes(3)))
            body[0:0] = pre
            s, e = s + len(pre), e + len(pre)
            ops.append("prefix")
        elif op == 2:  # junk after everything
            body += rng.choice((b"\r\n", b"\0" * 5, b"--trailer--", b"%%EOF"))
            ops.append("suffix")
        elif op == 3 and e < len(body):  # cut the wrapper's tail (multipart close, JSON end)
            del body[rng.randrange(e, len(body)):]
            ops.append("cut-tail")
        elif op == 4 and s > 0:  # duplicate the head (a second header block / second part start)
            i = rng.randrange(0, s)
            piece = bytes(body[i:s])
            body[i:i] = piece
            s, e = s + len(piece), e + len(piece)
            ops.append("dup-head")
        elif op == 5:  # duplicate the whole carrier (two images)
            piece = bytes(body[s:e])
            body[e:e] = b"\r\n" + piece if rng.random() < 0.5 else piece
            ops.append("dup-image")
        elif op == 6 and s > 4:  # change a length-ish number before the image
            i = rng.randrange(max(0, s - 16), s)
            body[i] = rng.choice((0, 0x7F, 0x80, 0xFF, ord("9"), ord("0")))
            ops.append("len-edit")
        elif op == 7:  # relabel: labels must not matter
            hs = [(k, v) for k, v in req.headers if k.lower() != "content-type"]
            hs.append(("Content-Type", rng.choice(("application/octet-stream", "text/plain", "image/png",
                                                    "application/json", "multipart/form-data; boundary=zz"))))
            req = Req(req.shape, req.method, req.url, hs, req.body, req.span, req.wrapper_ops)
            ops.append("relabel")
        elif op == 8 and e > s + 1:  # cut into the image
            del body[rng.randrange(s + 1, e):]
            e = len(body)
            ops.append("cut-image")
    return Req(req.shape, req.method, req.url, req.headers, bytes(body), (s, min(e, len(body))),
               req.wrapper_ops + ops)
