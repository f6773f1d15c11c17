"""The fast carrier paths give exactly the answers of the simple ones they replaced.

`reference_impl` keeps the earlier, obviously-correct implementations (whole-body
copies, per-character sets and callbacks).  The fast versions — gap search in
`residual_images`, C-level scans in `base64text.decode`, split/join escaping in
`form` and `jsonbody`, in-place patching of re-encoded base64 — are compared with them
on crafted and generated inputs: same result, or the same error with the same message.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import random
import re
import struct
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from exifguard.carriers import base64text, form, jsonbody
from exifguard.carriers.scan import residual_images

from . import reference_impl as ref

scan = importlib.import_module("exifguard.carriers.scan")  # the package re-exports a function `scan`


def _jpeg(first: bytes = b"\xff\xfe") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, "JPEG")
    d = buf.getvalue()
    seg = first + struct.pack(">H", 2 + 16) + b"FASTPATHcanary16"
    return d[:2] + seg + d[2:]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


IMAGES = [_jpeg(), _jpeg(b"\xff\xed"), _png(), _jpeg()[:200]]
B64 = [base64.b64encode(i) for i in IMAGES]


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except ValueError as exc:  # NotReproducible, EncodingConflict, EscapeConflict
        return (type(exc).__name__, str(exc))


# ---- residual_images -----------------------------------------------------------------

FRAGMENTS = [
    *B64, *(b"data:image/jpeg;base64," + b for b in B64), *(b.replace(b"/", b"\\/") for b in B64),
    *(b.replace(b"/", b"\\u002f").replace(b"+", b"\\u002B") for b in B64),
    *(quote(b.decode(), safe="").encode() for b in B64), *(quote(b.decode(), safe="").lower().encode() for b in B64),
    b'{"a": "', b'"}', b"\x00\x00", b"%", b"%2", b"%2F9j%2F", b"/9j/", b"_9j_", b"iVBORw0KGgo", b"Z0eXB",
    b"ZnR5cGhlaW", b"AAAAGGZ0eXBoZWlj", b"\\/", b"\\u002", b"xyz", b"A" * 40, b" ", b"\n", b"=",
]


@st.composite
def residual_case(draw):
    parts = draw(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=24)), max_size=12))
    body = b"".join(parts)
    n = len(body)
    spans = draw(st.lists(st.tuples(st.integers(-5, n + 5), st.integers(-5, n + 5)), max_size=4))
    return body, spans


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(residual_case())
def test_residual_images_matches_reference(case) -> None:
    body, spans = case
    assert residual_images(body, spans) == ref.residual_images(body, spans)


def test_residual_images_matches_reference_on_shaped_bodies() -> None:
    rng = random.Random(7)
    for _ in range(400):
        parts = [rng.choice(FRAGMENTS) if rng.random() < 0.6 else rng.randbytes(rng.randint(0, 30))
                 for _ in range(rng.randint(0, 10))]
        body = b"".join(parts)
        cuts = [0]
        for part in parts:
            cuts.append(cuts[-1] + len(part))
        spans = []
        for _ in range(rng.randint(0, 4)):
            if rng.random() < 0.5:  # a span ending (or starting) right at a fragment boundary
                a, b = sorted((rng.choice(cuts), rng.choice(cuts)))
            else:
                a = rng.randint(0, len(body) + 1)
                b = a + rng.randint(-2, 60)
            spans.append((a, b))
        assert residual_images(body, spans) == ref.residual_images(body, spans), (body, spans)


@pytest.mark.parametrize("quoted", [False, True])
def test_residual_images_run_starts_at_a_covered_span_end(quoted: bool) -> None:
    img = quote(B64[0].decode(), safe="").encode() if quoted else B64[0]
    body = b"x=AAAAAAAAAAAAAAAAAAAA" + img + b"&y=1"
    for spans in ([(2, 22)], [(0, 22)], [(2, 21)], [(2, 23)], [(22, len(body))], [(2, 10), (10, 22)]):
        assert residual_images(body, spans) == ref.residual_images(body, spans), spans
    assert residual_images(body, [(2, 22)]) == 22


def _long_body(rng: random.Random) -> tuple[bytes, list[tuple[int, int]]]:
    fillers = [b"x", b"lorem ipsum ", b"AAAA", b"\x00\xff\x10", b"/9", b"%", b"\\", b"abc/"]
    parts = []
    for _ in range(rng.randint(1, 8)):
        r = rng.random()
        if r < 0.35:
            parts.append(rng.choice(fillers) * rng.randint(1, 120))
        elif r < 0.55:
            parts.append(rng.choice([b"\\/", b"\\u002f", b"\\u002B", b"%41", b"%2F", b"%2f", b"%zz", b"\\u0020"]))
        elif r < 0.75:
            parts.append(rng.randbytes(rng.randint(1, 400)))
        else:
            parts.append(rng.choice(FRAGMENTS))
    body = b"".join(parts)
    spans = []
    for _ in range(rng.randint(0, 3)):
        a = rng.randint(0, len(body))
        spans.append((a, a + rng.randint(1, 200)))
    return body, spans


@pytest.mark.parametrize("dense", [4, 0, 1000])
def test_residual_images_matches_reference_with_sparse_escapes(dense: int, monkeypatch) -> None:
    # dense=0 forces the windowed search around escape sites, 1000 the whole-gap one
    monkeypatch.setattr(scan, "_DENSE", dense)
    rng = random.Random(dense + 11)
    for _ in range(1500):
        body, spans = _long_body(rng)
        assert residual_images(body, spans) == ref.residual_images(body, spans), (body, spans)


@pytest.mark.parametrize("gap", [0, 1, 14, 15, 16, 17, 60, 63, 64, 65, 66, 79, 80, 81, 159, 160, 161, 170, 300])
@pytest.mark.parametrize("escaped", ["json", "percent"])
def test_residual_images_escape_at_every_distance(gap: int, escaped: str, monkeypatch) -> None:
    monkeypatch.setattr(scan, "_DENSE", 0)
    img = B64[0]
    if escaped == "json":
        esc = img.replace(b"/", b"\\/")
        lone = b"\\u002f"
    else:
        esc = quote(img.decode(), safe="").encode()
        lone = b"%2F"
    for body in (b"q" * 200 + lone + b"q" * gap + esc + b"q" * 200,
                 b"q" * 200 + esc + b"q" * gap + lone + b"q" * 200,
                 b"q" * 200 + lone + b"A" * gap + esc + b"q" * 200,
                 lone + b"A" * gap + esc, esc + b"A" * gap + lone,
                 b"q" * 300 + lone + b"q" * gap + lone + b"B" * 20 + img[:40] + b"q" * 300):
        for spans in ([], [(0, 100)], [(len(body) - 100, len(body))], [(150, 205)]):
            assert residual_images(body, spans) == ref.residual_images(body, spans), (gap, spans)


# ---- base64text.decode -------------------------------------------------------------

def _variants(img: bytes) -> list[bytes]:
    std = base64.b64encode(img)
    url = base64.urlsafe_b64encode(img)
    out = [std, std.rstrip(b"="), url, url.rstrip(b"="), b"data:image/jpeg;base64," + std,
           b"data:image/png;name=x;base64," + url.rstrip(b"="), b"DATA:image/jpeg;BASE64," + std,
           b"\n".join(std[i:i + 76] for i in range(0, len(std), 76)),
           b"\r\n".join(std[i:i + 64] for i in range(0, len(std), 64)) + b"\r\n",
           std + b"=", std + b"===", std + b"\n", b" " + std, std[:-1], std[:-2], std[:-3], std[:-5],
           std[:40] + b"-" + std[41:], std[:40] + b"+" + std[41:].replace(b"/", b"_"),
           std[:40] + b"!" + std[41:], std[:40] + b"=" + std[41:], std[:40] + b"\x00" + std[41:],
           std + b"A", std.rstrip(b"=") + b"A", std.rstrip(b"=") + b"AB", std.rstrip(b"=") + b"ABC="]
    # non-canonical trailing bits in the last quantum
    s = std.rstrip(b"=")
    if len(s) % 4:
        for c in b"BCDQRSgh":
            out.append(s[:-1] + bytes([c]) + b"=" * (len(std) - len(s)))
            out.append(s[:-1] + bytes([c]))
    return out


@pytest.mark.parametrize("img", IMAGES + [_jpeg() + b"x", _jpeg() + b"xy", _png() + b"\x00"],
                         ids=["jpeg", "jpeg-app13", "png", "cut", "len+1", "len+2", "png+1"])
def test_decode_matches_reference(img: bytes) -> None:
    for text in _variants(img):
        assert _outcome(base64text.decode, text) == _outcome(ref.b64_decode, text), text[-12:]


@pytest.mark.parametrize("img", IMAGES[:3], ids=["jpeg", "jpeg-app13", "png"])
def test_decode_in_place_matches_decode_of_a_copy(img: bytes) -> None:
    for text in _variants(img):
        for before, after in ((b"", b""), (b'{"a": "', b'"}'), (b"x" * 3000, b"y")):
            body = before + text + after
            lo, hi = len(before), len(before) + len(text)
            got = _outcome(base64text.decode, body, lo, hi)
            assert got == _outcome(base64text.decode, text) == _outcome(ref.b64_decode, text)
            if got[0] == "ok" and got[1] is not None:
                new = bytearray(got[1].data)
                new[5] ^= 0xFF
                pieces = base64text.reencode_pieces(got[1], bytes(new), body, lo, hi)
                assert base64text.splice(text, pieces) == ref.encode(got[1], bytes(new), text[:got[1].prefix_len])
                pieces = base64text.reencode_pieces(got[1], bytes(new) + b"!", body, lo, hi)
                assert base64text.splice(text, pieces) == ref.encode(got[1], bytes(new) + b"!",
                                                                     text[:got[1].prefix_len])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(IMAGES), st.integers(0, 2000), st.sampled_from(b"AQgw+/-_=!\n \x00"), st.booleans(),
       st.integers(0, 3))
def test_decode_matches_reference_on_mutations(img, pos, ch, urlsafe, cut) -> None:
    text = base64.urlsafe_b64encode(img) if urlsafe else base64.b64encode(img)
    text = text[:len(text) - cut] if cut else text
    pos = 16 + pos % max(1, len(text) - 16)
    text = text[:pos] + bytes([ch]) + text[pos + 1:]
    assert _outcome(base64text.decode, text) == _outcome(ref.b64_decode, text)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(IMAGES), st.lists(st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
                                          max_size=4), st.integers(0, 9))
def test_reencode_pieces_equals_full_encode(img, changes, shape) -> None:
    std = base64.b64encode(img)
    texts = [std, std.rstrip(b"="), base64.urlsafe_b64encode(img).rstrip(b"="), b"data:image/png;base64," + std,
             b"\n".join(std[i:i + 76] for i in range(0, len(std), 76))]
    text = texts[shape % len(texts)]
    decoded = base64text.decode(text)
    assert decoded is not None
    data = bytearray(decoded.data)
    for at, new in changes:
        at %= len(data)
        data[at:at + len(new)] = new[:len(data) - at]
    new_data = bytes(data)
    full = base64text.encode(decoded, new_data, text[:decoded.prefix_len])
    assert base64text.splice(text, base64text.reencode_pieces(decoded, new_data, text)) == full
    longer = new_data + b"zz"  # length change: one span over the whole text
    full = base64text.encode(decoded, longer, text[:decoded.prefix_len])
    assert base64text.splice(text, base64text.reencode_pieces(decoded, longer, text)) == full


def test_reencode_pieces_on_a_large_image_touches_only_changed_blocks() -> None:
    img = _jpeg() + bytes(range(256)) * 2000
    text = b"data:image/jpeg;base64," + base64.b64encode(img)
    decoded = base64text.decode(text)
    new = bytearray(img)
    new[30:40] = b"\x00" * 10
    new[300_000] ^= 1
    pieces = base64text.reencode_pieces(decoded, bytes(new), text)
    assert len(pieces) == 2 and all(len(p) < 70_000 for _, _, p in pieces)
    assert base64text.splice(text, pieces) == base64text.encode(decoded, bytes(new), text[:decoded.prefix_len])


# ---- form -----------------------------------------------------------------------------

FORM_ATOMS = [b"%2F", b"%2f", b"%2B", b"%2b", b"%3A", b"%25", b"%41", b"%", b"%2", b"%zz", b"+", b"/", b":",
              b"A", b"a", b"F", b"2", b"=", b"%3D", b"~", b"*", b" ", b"%32", b"%46", b"%35"]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(FORM_ATOMS), max_size=30), st.sampled_from([1 << 18, 1, 2, 3, 5, 8]))
def test_form_unescape_escape_match_reference(atoms, chunk) -> None:
    raw = b"".join(atoms)
    old_chunk = form._CHUNK
    form._CHUNK = chunk  # small chunks: escapes and stray '%' at every chunk border
    try:
        _check_form(raw)
    finally:
        form._CHUNK = old_chunk


def _check_form(raw: bytes) -> None:
    got, want = _outcome(form.unescape, raw), _outcome(ref.form_unescape, raw)
    assert got == want
    if got[0] == "ok":
        text, reprs = got[1]
        assert list(reprs.items()) == list(want[1][1].items())  # same first-seen order too
        assert form.escape(text, reprs) == ref.form_escape(text, reprs)
        for extra in (b"+/=", b"\x00\xff ", b"abc"):
            assert form.escape(text + extra, reprs) == ref.form_escape(text + extra, reprs)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40), st.dictionaries(st.sampled_from(b"%25FAa/+\\\"u\n"),
                                               st.binary(min_size=1, max_size=4), max_size=6))
def test_substitute_matches_a_regex_callback(text, table) -> None:
    needed = [c for c in table if bytes([c]) in text]
    want = text
    if needed:
        cls = re.compile(b"[" + b"".join(re.escape(bytes([c])) for c in needed) + b"]")
        want = cls.sub(lambda m: table[m.group()[0]], text)
    assert jsonbody.substitute(text, table, needed) == want


def test_substitute_with_replacements_that_depend_on_each_other() -> None:
    table = {ord("%"): b"%25", ord("2"): b"%32", ord("/"): b"%2F"}  # '%' and '2' need each other first
    assert jsonbody.substitute(b"a%2/b", table, list(table)) == b"a%25%32%2Fb"
    table = {ord("\\"): b"\\\\", ord('"'): b'\\"', ord("\n"): b"\\n"}
    assert jsonbody.substitute(b'x"\\\n', table, list(table)) == b'x\\"\\\\\\n'


def test_form_on_a_long_value() -> None:
    b64 = base64.b64encode(bytes(range(256)) * 400)
    for raw in (quote("data:image/jpeg;base64," + b64.decode(), safe="").encode(), b64.replace(b"+", b"%2B"),
                b64.replace(b"+", b"%2b").replace(b"/", b"%2F"), b64.replace(b"+", b"%2B") + b"%2b",
                b64.replace(b"+", b"%2B")[:-3] + b"/%2F", b64.replace(b"+", b"%2B") + b"%"):
        got, want = _outcome(form.unescape, raw), _outcome(ref.form_unescape, raw)
        assert got == want
        if got[0] == "ok":
            assert form.escape(*got[1]) == ref.form_escape(*want[1]) == raw
    rng = random.Random(3)
    for alphabet in (b"ab", b"AaQq19", bytes(range(0x21, 0x7F)), bytes(range(256)), b64[:64]):
        for size in (10, 5000, 70_000):
            data = bytes(rng.choice(alphabet) for _ in range(size))
            for d in (data, data + b"\x00", b"\xff" + data, data[:4096] + b"\x80" + data):
                assert list(form.distinct_bytes(d)) == list(set(d))  # same iteration order too


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=50), st.integers(0, 3), st.sampled_from([b"", b"\n", b"\r\n", b" ", b"\r\n\r\n"]))
def test_form_shape_checks_match_the_regex(data, scale, tail) -> None:
    body = (b"a=b&" + data) * (1 + scale * 400) + tail
    want_end = len(body.rstrip(b"\r\n"))
    assert form._end(body) == want_end
    assert form.looks_like_form(body) == (b"=" in body and form._FIELD_OK.match(body.rstrip(b"\r\n")) is not None)
    assert form._all_field_bytes(body, want_end) == (form._FIELD_OK.match(body[:want_end]) is not None)


# ---- json -----------------------------------------------------------------------------

JSON_ATOMS = [b"A" * 300, b"x", b"\\/", b"\\n", b"\\u002f", b"\\u00e9", b"\\u2028", b'\\"', b"\\\\", b"\\q",
              b"\x01", b"\n", b"\x7f", b"\xc3\xa9", b'"', b"/", b"+"]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(JSON_ATOMS), max_size=12))
def test_json_string_end_matches_regex(atoms) -> None:
    body = b'"' + b"".join(atoms)
    m = ref.JSON_STRING_BODY.match(body, 1)
    assert jsonbody._string_end(body, 1) == (m.end() if m else -1)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(JSON_ATOMS[:10] + [b"plain", b"\\u0000", b"\\u00E9", b"\xe9", b"\\", b"u0041",
                                                   b"\\u0041", b"A"]), max_size=16),
       st.sampled_from([1 << 18, 1, 2, 3, 7, 10]))
def test_json_unescape_escape_match_reference(atoms, chunk) -> None:
    raw = b"".join(atoms)
    old_chunk = jsonbody._CHUNK
    jsonbody._CHUNK = chunk  # small chunks: escapes at every chunk border
    try:
        got, want = _outcome(jsonbody.unescape, raw), _outcome(ref.json_unescape, raw)
    finally:
        jsonbody._CHUNK = old_chunk
    assert got == want
    if got[0] == "ok":
        assert list(got[1][1].items()) == list(want[1][1].items())
    if got[0] == "ok":
        text, reprs = got[1]
        for t in (text, text + b'"\\\n\x01/+', b"\x00" + text):
            assert jsonbody.escape(t, reprs) == ref.json_escape(t, reprs)


def test_json_unescape_on_a_long_value() -> None:
    b64 = base64.b64encode(bytes(range(256)) * 2000)
    for raw in (b64.replace(b"/", b"\\/"), b64.replace(b"/", b"\\u002f"), b64.replace(b"/", b"\\/") + b"/",
                b64.replace(b"/", b"\\/")[:-9] + b"\\u002F" + b64[-5:], b"\\\\" * 100_000 + b"\\/",
                b"\\u00e9" + b"x" * 300_000 + b"\xe9"):
        got, want = _outcome(jsonbody.unescape, raw), _outcome(ref.json_unescape, raw)
        assert got == want
        if got[0] == "ok":
            assert jsonbody.escape(*got[1]) == ref.json_escape(*want[1])


def test_iter_value_strings_on_long_strings() -> None:
    b64 = base64.b64encode(bytes(range(256)) * 100).decode()
    doc = json.dumps({"a": b64, "b": [b64.replace("/", "\\/"), "x" * 300 + "\n"], "c": "short"})
    got = [(s.start, s.end, s.path) for s in jsonbody.iter_value_strings(doc.encode())]
    assert [doc.encode()[a:b] for a, b, _ in got][0] == b64.encode()
    assert [p for _, _, p in got] == [("a",), ("b", 0), ("b", 1), ("c",)]
    with pytest.raises(jsonbody.JSONSyntaxError):
        list(jsonbody.iter_value_strings(b'{"a": "' + b"A" * 400 + b'\x01"}'))
    with pytest.raises(jsonbody.JSONSyntaxError):
        list(jsonbody.iter_value_strings(b'{"a": "' + b"A" * 400))
