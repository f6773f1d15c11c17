"""GIF walker and verifier: corpus invariants, canaries in synthesised files, fuzzing.

Every check is real: lengths, ExifTool's view of the output, decoded pixels of every
frame, the NETSCAPE loop count and canary searches over raw and encoded bytes.
"""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageSequence

from exifguard import ScrubError, scrub
from exifguard.engine import ScrubOptions
from exifguard.engine.formats.gif import pad_extension
from exifguard.engine.verify import gif as gif_verify
from support import canary, corpus, fuzz, oracle

from . import icc_builders as ib

MARK = b"EGCANARY-gif-93d0"
COMPACT = ScrubOptions(preserve_length=False)


# -- builders ---------------------------------------------------------------------------------

def _frame(seed: int, size: tuple[int, int] = (24, 16)) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size)
    img.putdata([((x * 13 + seed) % 256, (y * 17 + seed) % 256, (seed * 3) % 256) for y in range(h)
                 for x in range(w)])
    return img.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)


def _gif(frames: int = 3, *, comment: bytes = b"", loop: int | None = 2) -> bytes:
    imgs = [_frame(40 * i) for i in range(frames)]
    buf = io.BytesIO()
    kw: dict = {"duration": 70}
    if loop is not None:
        kw["loop"] = loop
    if comment:
        kw["comment"] = comment
    imgs[0].save(buf, "GIF", save_all=frames > 1, append_images=imgs[1:], **kw)
    return buf.getvalue()


def _sub_blocks(payload: bytes) -> bytes:
    out = b"".join(bytes([len(payload[i:i + 255])]) + payload[i:i + 255]
                   for i in range(0, len(payload), 255))
    return out + b"\0"


def _app(ident: bytes, payload: bytes) -> bytes:
    assert len(ident) == 11
    return b"\x21\xff\x0b" + ident + _sub_blocks(payload)


def _xmp_app(packet: bytes) -> bytes:
    """XMP as Adobe stores it: raw bytes, then the 258-byte "magic trailer" landing zone."""
    return b"\x21\xff\x0bXMP DataXMP" + packet + bytes([1]) + bytes(range(255, -1, -1)) + b"\0"


def _comment(text: bytes) -> bytes:
    return b"\x21\xfe" + _sub_blocks(text)


def _plain_text(text: bytes) -> bytes:
    return b"\x21\x01\x0c" + bytes(12) + _sub_blocks(text)


def _first_block(gif: bytes) -> int:
    p = 13
    if gif[10] & 0x80:
        p += 3 * (2 << (gif[10] & 7))
    return p


def _splice(gif: bytes, blocks: list[bytes], trailing: bytes = b"") -> bytes:
    """Insert extension blocks before the first block and bytes after the trailer."""
    at = _first_block(gif)
    assert gif.endswith(b";")
    return gif[:at] + b"".join(blocks) + gif[at:] + trailing


def _insert_before_last_image(gif: bytes, block: bytes) -> bytes:
    k = gif.rfind(b"\x21\xf9\x04")
    assert k > 0
    return gif[:k] + block + gif[k:]


XMP = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
       b'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
       b'dc:creator="' + MARK + b'" exif:GPSLatitude="52,31.1N"/></rdf:RDF></x:xmpmeta>'
       b'<?xpacket end="w"?>')


def _loaded_gif() -> bytes:
    base = _gif(4, comment=MARK + b" pillow comment", loop=5)
    data = _splice(base, [
        _xmp_app(XMP),
        _app(b"EGTESTAP1.0", MARK + b" unknown app"),
        _plain_text(MARK + b" plain text"),
        _comment(b"abcd"),  # 9-byte span: padded with a Comment, not an app extension
        _comment(b"abcdefg"),  # 12 bytes
        b"\x21\x42" + _sub_blocks(MARK + b" unknown label"),
    ], trailing=MARK + b" after trailer")
    return _insert_before_last_image(data, _comment(MARK + b" between frames"))


def _frames(data: bytes) -> list[bytes]:
    with Image.open(io.BytesIO(data)) as im:
        return [f.convert("RGBA").tobytes() for f in ImageSequence.Iterator(im)]


def _info(data: bytes) -> dict:
    with Image.open(io.BytesIO(data)) as im:
        return {"loop": im.info.get("loop"), "n": getattr(im, "n_frames", 1),
                "durations": [f.info.get("duration") for f in ImageSequence.Iterator(im)]}


def _check_clean(data: bytes, out: bytes, compact: bytes | None = None) -> None:
    assert len(out) == len(data)
    assert _frames(out) == _frames(data)
    assert _info(out) == _info(data)
    assert scrub(out).data == out, "not idempotent"
    assert not scrub(out).removed, "a second pass still found something"
    if compact is not None:
        assert len(compact) <= len(data)
        assert _frames(compact) == _frames(data)
        assert _info(compact) == _info(data)
        assert scrub(compact, options=COMPACT).data == compact


def _comment_is_empty(tags: dict) -> bool:
    value = tags.get("File:Comment", "")
    return isinstance(value, str) and value.strip("\0") == ""


# -- padding ----------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [3, *range(5, 40), 255, 256, 257, 258, 259, 270, 271, 272, 600])
def test_pad_extension_is_exact_and_parses(length: int) -> None:
    pad = pad_extension(length)
    assert len(pad) == length and pad[0] == 0x21
    assert pad[1] == (0xFF if length == 15 or length >= 17 else 0xFE)
    p, payload = 2, b""
    while pad[p]:
        payload += pad[p + 1:p + 1 + pad[p]]
        p += 1 + pad[p]
    assert p == length - 1
    assert not any(payload)  # only sub-block lengths are non-zero
    gif = _gif(1)
    at = _first_block(gif)
    padded = gif[:at] + pad + gif[at:]
    gif_verify.verify(padded, ScrubOptions())
    assert _frames(padded) == _frames(gif)


def test_no_four_byte_extension() -> None:
    with pytest.raises(ValueError):
        pad_extension(4)


# -- corpus -----------------------------------------------------------------------------------

@pytest.mark.parametrize("f", corpus.params("GIF"))
def test_corpus_gif_invariants(f) -> None:
    data = f.data
    res = scrub(data)
    _check_clean(data, res.data, scrub(data, options=COMPACT).data)


@oracle.requires_exiftool
@pytest.mark.parametrize("f", corpus.params("GIF"))
def test_corpus_gif_exiftool_sees_nothing_private(f) -> None:
    for opts in (ScrubOptions(), COMPACT):
        tags = oracle.exiftool_bytes(scrub(f.data, options=opts).data, ".gif")
        assert oracle.leaks("GIF", tags) == []
        assert _comment_is_empty(tags)
        assert not any(k.startswith("XMP") for k in tags)


@pytest.mark.parametrize("f", corpus.params("GIF"))
def test_corpus_gif_reports_metadata(f) -> None:
    res = scrub(f.data)
    structure = " ".join(f.entry.get("structure", []))
    if "XMP" in structure:
        assert any(r.carrier == "GIF XMP" for r in res.removed)
    if "Comment" in structure:
        assert any(r.carrier == "GIF comment" for r in res.removed)
    if "ICCRGBG1012" in structure:
        assert any(k.what == "colour profile" for k in res.kept)


@pytest.mark.parametrize("f", corpus.params("GIF", broken=True))
def test_broken_gif_refused_or_verified(f) -> None:
    try:
        res = scrub(f.data)
    except ScrubError as exc:
        assert "GIF" in str(exc)
        return
    gif_verify.verify(res.data, ScrubOptions())


# -- synthesised files with canaries ----------------------------------------------------------

def test_animated_gif_all_carriers() -> None:
    data = _loaded_gif()
    assert canary.find(data, MARK)
    before = _info(data)
    assert before["loop"] == 5 and before["n"] == 4
    res = scrub(data)
    assert canary.find(res.data, MARK) == []
    assert b"abcd" not in res.data
    carriers = [r.carrier for r in res.removed]
    for c in ("GIF XMP", "GIF application", "GIF plain text", "GIF comment",
              "GIF extension 0x42", "data after trailer"):
        assert c in carriers, c
    assert carriers.count("GIF comment") == 4
    xmp = next(r for r in res.removed if r.carrier == "GIF XMP")
    assert "GPSLatitude" in xmp.tags and "Creator" in xmp.tags
    assert b"NETSCAPE2.0" in res.data
    compact = scrub(data, options=COMPACT).data
    assert canary.find(compact, MARK) == [] and len(compact) < len(data)
    _check_clean(data, res.data, compact)


@oracle.requires_exiftool
def test_animated_gif_exiftool_clean() -> None:
    data = _loaded_gif()
    before = oracle.exiftool_bytes(data, ".gif")
    assert oracle.leaks("GIF", before) and not _comment_is_empty(before)
    for opts in (ScrubOptions(), COMPACT):
        after = oracle.exiftool_bytes(scrub(data, options=opts).data, ".gif")
        assert oracle.leaks("GIF", after) == []
        assert _comment_is_empty(after)
        assert after.get("GIF:AnimationIterations") == 5
        assert after.get("GIF:FrameCount") == 4


def test_icc_kept_or_dropped_by_policy() -> None:
    data = _splice(_gif(1, loop=None), [_app(b"ICCRGBG1012", ib.text_posing_as_profile(MARK))])
    assert canary.find(data, MARK)
    fake = scrub(data)  # a "profile" that does not parse is never kept (test_kept_structures)
    assert canary.find(fake.data, MARK) == [] and "ICC profile" in [r.carrier for r in fake.removed]
    data = _splice(_gif(1, loop=None), [_app(b"ICCRGBG1012", ib.srgb())])
    kept = scrub(data)
    assert b"ICCRGBG1012" in kept.data and any(k.what == "colour profile" for k in kept.kept)
    dropped = scrub(data, keep_icc=False)
    assert b"ICCRGBG1012" not in dropped.data
    _check_clean(data, dropped.data)


def test_data_hidden_in_kept_blocks_is_zeroed() -> None:
    data = bytearray(_gif(2, loop=0))
    k = data.find(b"NETSCAPE2.0")
    end = k + 11 + 4  # after "03 01 lo hi"
    hidden = _sub_blocks(MARK)[:-1]  # extra sub-block before the terminator
    data[end:end] = hidden
    g = data.find(b"\x21\xf9\x04")
    data[g + 2] = 4 + 3  # GCE with 3 extra bytes
    data[g + 7:g + 7] = b"XYZ"
    data = bytes(data)
    assert _info(data)["loop"] == 0
    res = scrub(data)
    assert canary.find(res.data, MARK) == [] and b"XYZ" not in res.data
    _check_clean(data, res.data)


def test_gif87a_without_extensions_is_unchanged() -> None:
    img = _frame(7)
    buf = io.BytesIO()
    img.save(buf, "GIF")
    data = b"GIF87a" + buf.getvalue()[6:]
    res = scrub(data)
    assert res.data == data and not res.removed


# -- malformed input --------------------------------------------------------------------------

@pytest.mark.parametrize("mangle, needle", [
    (lambda d: d[:-1], "trailer"),
    (lambda d: d[:len(d) // 2], "truncated"),
    (lambda d: d[:_first_block(d)] + b"\x99" + d[_first_block(d):], "unexpected byte"),
    (lambda d: d[:_first_block(d)] + b"\x21\xfe\x09abc", "truncated"),
    (lambda d: d[:_first_block(d)] + b";", "no image"),
])
def test_malformed_gif_refused(mangle, needle) -> None:
    with pytest.raises(ScrubError, match=needle):
        scrub(mangle(_gif(2)))


def test_block_count_is_bounded() -> None:
    data = _splice(_gif(1), [_comment(b"x")] * 10)
    with pytest.raises(ScrubError, match="too many"):
        scrub(data, options=ScrubOptions(max_structures=5))


def test_verifier_rejects_leftovers() -> None:
    data = _loaded_gif()
    with pytest.raises(ScrubError):
        gif_verify.verify(data, ScrubOptions())
    clean = bytearray(scrub(data).data)
    gif_verify.verify(bytes(clean), ScrubOptions())
    clean[-1] = 7  # inside the zero-filled tail
    with pytest.raises(ScrubError):
        gif_verify.verify(bytes(clean), ScrubOptions())


_FUZZ_BASE = _splice(_gif(2), [_xmp_app(XMP[:120]), _comment(MARK), _app(b"EGTESTAP1.0", MARK)], b"tail")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_FUZZ_BASE) - 1), st.integers(0, 255)), max_size=6),
       st.integers(6, len(_FUZZ_BASE)))
def test_fuzzed_gif_refused_or_verified(edits, cut) -> None:
    fuzz.assert_refused_or_verified(fuzz.damage(_FUZZ_BASE, edits, cut), gif_verify.verify)


def test_values_only_on_request() -> None:
    data = _splice(_gif(1), [_comment(MARK)])
    assert all(r.values == () for r in scrub(data).removed)
    res = scrub(data, options=ScrubOptions(collect_values=True))
    assert dict(res.removed[0].values) == {"Comment": MARK.decode()}
