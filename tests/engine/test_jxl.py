"""JPEG XL: the corpus container, hand-built canary containers, bare codestreams, hostile boxes.

No JPEG XL decoder is installed, so the checks are structural: the codestream bytes
(jxlc/jxlp payloads) must come out identical, metadata boxes must be gone.
"""

from __future__ import annotations

import struct

import pytest

from exifguard import ScrubError, scrub
from support import canary, corpus, oracle

brotli = pytest.importorskip("brotli")

MARKER = b"EXIFGUARDjxlCanary"
SIG = b"\x00\x00\x00\x0cJXL \r\n\x87\n"


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of each top-level box (test-side parser)."""
    out, at = [], 0
    while at + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, at)
        head = 8
        if size == 1:
            size, head = struct.unpack_from(">Q", data, at + 8)[0], 16
        elif size == 0:
            size = len(data) - at
        if size < head:
            break
        out.append((kind, data[at + head:at + size]))
        at += size
    return out


def codestream(data: bytes) -> bytes:
    return b"".join(p for k, p in boxes(data) if k in (b"jxlc", b"jxlp"))


def _exif_payload() -> bytes:
    from PIL import Image
    ex = Image.Exif()
    ex[0x010F] = "Make" + MARKER.decode()
    ex[0x013B] = MARKER.decode()
    ex.get_ifd(0x8825)[2] = (1.0, 2.0, 3.0)
    return b"\0\0\0\0" + ex.tobytes()[6:]  # JXL Exif box: 4-byte TIFF offset, then TIFF


XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description dc:creator="' + MARKER + b'"/></rdf:RDF></x:xmpmeta>'
FAKE_CODESTREAM = b"\xff\x0a" + bytes(range(200))


def build(extra: bytes = b"", cs: bytes = FAKE_CODESTREAM) -> bytes:
    ftyp = box(b"ftyp", b"jxl \0\0\0\0jxl ")
    brob = box(b"brob", b"Exif" + brotli.compress(_exif_payload()))
    brob_xml = box(b"brob", b"xml " + brotli.compress(XMP))
    return (SIG + ftyp + box(b"jxll", b"\x05") + box(b"Exif", _exif_payload()) + box(b"xml ", XMP)
            + box(b"jumb", box(b"jumd", b"c2pa" + MARKER)) + brob + brob_xml + box(b"jxlc", cs) + extra)


@oracle.requires_exiftool
@pytest.mark.parametrize("f", corpus.params("JXL", broken=None))  # Pillow cannot decode JXL, so
# the manifest marks it "broken"; it is a well-formed container
def test_corpus_jxl_is_clean_and_codestream_identical(f: corpus.CorpusFile) -> None:
    data = f.data
    result = scrub(data)
    out = result.data
    assert len(out) == len(data)
    assert codestream(out) == codestream(data) != b""
    kinds_before = [k for k, _ in boxes(data)]
    kinds_after = [k for k, _ in boxes(out)]
    assert len(kinds_after) == len(kinds_before)
    assert not {b"Exif", b"xml ", b"jumb", b"brob", b"jbrd"} & set(kinds_after)
    assert {b"JXL ", b"ftyp"} <= set(kinds_after)
    carriers = {r.carrier for r in result.removed}
    assert {"JXL Exif box", "JXL XMP box"} <= carriers
    assert "GPSVersionID" in result.tags and "Artist" in result.tags
    assert oracle.leaks("JXL", oracle.exiftool_bytes(out, ".jxl")) == []
    again = scrub(out)
    assert again.data == out and again.removed == ()


@oracle.requires_exiftool
def test_hand_built_container_canaries() -> None:
    data = build(extra=box(b"zzzz", MARKER) + box(b"free", MARKER)) + MARKER
    assert canary.find(data, MARKER)
    result = scrub(data)
    out = result.data
    assert canary.find(out, MARKER) == []
    assert len(out) == len(data)
    assert codestream(out) == FAKE_CODESTREAM
    carriers = [r.carrier for r in result.removed]
    for name in ("JXL Exif box", "JXL XMP box", "JXL JUMBF box", "JXL brob box", "JXL box zzzz",
                 "JXL box free", "data after last box"):
        assert name in carriers
    assert sum(c == "JXL brob box" for c in carriers) == 2
    assert "GPSLatitude" in result.tags and "Creator" in result.tags
    assert oracle.leaks("JXL", oracle.exiftool_bytes(out, ".jxl")) == []
    assert scrub(out).data == out


def test_jxlp_parts_and_largesize_codestream() -> None:
    parts = box(b"jxlp", b"\0\0\0\0" + FAKE_CODESTREAM[:100]) + box(b"jxlp", b"\x80\0\0\1" + FAKE_CODESTREAM[100:])
    ftyp = box(b"ftyp", b"jxl \0\0\0\0jxl ")
    data = SIG + ftyp + box(b"Exif", _exif_payload()) + parts
    out = scrub(data).data
    assert codestream(out) == codestream(data)
    assert MARKER not in out
    big = SIG + ftyp + box(b"xml ", XMP) + struct.pack(">I", 1) + b"jxlc" + struct.pack(">Q", 16 + 202) + FAKE_CODESTREAM
    out = scrub(big).data
    assert out.endswith(FAKE_CODESTREAM) and MARKER not in out


def test_bare_codestream_is_returned_unchanged() -> None:
    data = FAKE_CODESTREAM
    result = scrub(data)
    assert result.data == data and result.removed == ()


@pytest.mark.parametrize("mutate", ["past_end", "nested_tiny", "no_codestream", "no_ftyp", "huge_large"])
def test_hostile_containers(mutate: str) -> None:
    ftyp = box(b"ftyp", b"jxl \0\0\0\0jxl ")
    if mutate == "past_end":
        data = SIG + ftyp + struct.pack(">I", 10_000) + b"jxlc" + FAKE_CODESTREAM
    elif mutate == "nested_tiny":
        data = SIG + ftyp + struct.pack(">I", 4) + b"Exif" + FAKE_CODESTREAM
    elif mutate == "no_codestream":
        data = SIG + ftyp + box(b"Exif", _exif_payload())
    elif mutate == "no_ftyp":
        data = SIG + box(b"jxlc", FAKE_CODESTREAM)
    else:
        data = SIG + ftyp + struct.pack(">I", 1) + b"jxlc" + struct.pack(">Q", 2 ** 62) + FAKE_CODESTREAM
    with pytest.raises(ScrubError):
        scrub(data)


def test_many_boxes_fail_closed() -> None:
    from exifguard.engine.report import ScrubOptions
    data = build(extra=box(b"free", b"") * 3000)
    with pytest.raises(ScrubError, match="too many"):
        scrub(data, options=ScrubOptions(max_structures=500))


def test_verifier_rejects_metadata_boxes() -> None:
    from exifguard.engine.report import ScrubOptions
    from exifguard.engine.verify import jxl as vjxl
    opts = ScrubOptions()
    with pytest.raises(ScrubError):
        vjxl.verify(build(), opts)
    clean = scrub(build()).data
    vjxl.verify(clean, opts)
    with pytest.raises(ScrubError):
        vjxl.verify(clean + box(b"free", b"x"), opts)
    with pytest.raises(ScrubError):
        vjxl.verify(clean + b"\x01", opts)
