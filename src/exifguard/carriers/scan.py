"""Walk one body (or one part of it) and clean every image found, wherever it sits.

Dispatch is by content, never by label: magic bytes first (a raw image under any
Content-Type), then multipart (boundary from Content-Type, or sniffed from the first
line), JSON (first non-blank byte ``{``/``[``), a whole-text base64/data URL, and
urlencoded forms.  Labels only break ties.  Each layer collects its edits and applies
them only once its own parse succeeded, so a malformed body is never half-rewritten;
if it nevertheless holds an image signature an error finding is produced (the policy
blocks), otherwise it passes untouched.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from ..engine import ScrubError, sniff
from . import base64text, embedded, form, jsonbody, multipart, wrappers
from .model import CarrierOptions, ImageFinding, Scrubber

_EXT = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "HEIC": "heic", "HEIF": "heif",
        "AVIF": "avif", "TIFF": "tif", "JXL": "jxl"}

#: How a base64 (or data URL) image's text can begin.  No alternative starts with a
#: character class or zeros: those make the regex engine try every position.
_B64_LOOSE = re.compile(rb"/9j/|_9j_|iVBORw0KGgo|R0lGOD[dl]h|UklGR|ZnR5cG|Z0eXB|SUkqA|TU0AK|AAAADEpYTCAN"
                        rb"|ata:image/|ATA:IMAGE/")
_LOOSE_BEFORE = {ord("a"): (1, (b"d", b"D")), ord("A"): (1, (b"D", b"d"))}


def _loose_hit(pattern: re.Pattern[bytes], data: bytes, a: int, b: int) -> bool:
    for m in pattern.finditer(data, a, min(len(data), b + 16)):
        i = m.start()
        if i >= b:
            return False
        rule = _LOOSE_BEFORE.get(data[i])
        if rule is None:
            return True
        back, wanted = rule
        if i >= back and data[i - back:i - back + len(wanted[0])] in wanted:
            return True
    return False


_IDENTIFYING = re.compile(
    r"(?i)((19|20)\d\d[-_.]?[01]\d[-_.]?[0-3]\d|\d{1,2}[.:]\d\d[.:]\d\d|^(img|pxl|dsc|dscn|dcim|mvimg|"
    r"screenshot|screen shot|photo|whatsapp|signal|telegram)[ _-]|passport|licen[cs]e|\bid\b|resume|"
    r"\bcv\b|invoice|payslip|tax|bank|medical|^[A-Z][a-z]+[ _][A-Z][a-z]+)")


def signature_in(data: bytes, deadline: float | None = None) -> str | None:
    """A strong image signature anywhere in `data`: its kind, else None.

    Deliberately loose (this decides whether a body we could not parse, or will not
    inspect, must be blocked): the magic bytes of a JPEG/PNG/GIF/WebP/HEIF/JXL, any
    *plausible* image of another supported format (TIFF, BMP: see `embedded`), or the
    first characters of an image's base64 text or a ``data:image/`` URL.  Bounded in
    time: searched window by window (C-level finds; a regex over a large body would hold
    the GIL for seconds), with the deadline checked between windows.
    """
    hi = len(data)
    a = 0
    while a < hi:
        embedded.check_deadline(deadline)
        b = min(hi, a + embedded.WINDOW)
        if embedded.raw_signature(data, a, b):
            return "raw image signature"
        if _loose_hit(_B64_LOOSE, data, a, b):
            return "base64 image signature"
        a = b
    if embedded.first_candidate(data, deadline=deadline) is not None:
        return "raw image signature"
    return None


_B64_RUN_CHAR = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
#: How each image kind's base64 text begins (plain literals: bytes.find is fast on
#: large bodies) and how many characters before the literal the text starts.
_B64_STARTS = ((b"/9j/", 0), (b"_9j_", 0), (b"iVBORw0KGgo", 0), (b"R0lGOD", 0), (b"UklGR", 0),
               (b"SUkqA", 0), (b"TU0AK", 0), (b"Z0eXB", 6), (b"AAAADEpYTCAN", 0), (b"Qk", 0))
_JSON_SLASH = re.compile(rb"\\(?:/|u002[fF])")
_JSON_PLUS = re.compile(rb"\\u002[bB]")


def _gaps(size: int, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[0, size)`` outside every covered span, in order, non-empty."""
    out: list[tuple[int, int]] = []
    pos = 0
    for s, e in sorted((max(0, s), min(size, e)) for s, e in covered):
        if e <= s:
            continue
        if s > pos:
            out.append((pos, s))
        pos = max(pos, e)
    if pos < size:
        out.append((pos, size))
    return out


#: A text to search: ``(buf, lo, hi, shift, plo, phi)``.  ``buf[lo:hi]`` sits at ``lo +
#: shift`` in the text searched and ``lo``/``hi`` are real borders (start or end of the
#: text, or a blanked covered span: never base64); only runs starting at ``plo..phi``
#: are candidates.
_Segment = tuple[bytes, int, int, int, int, int]
_BACK_MAX = max(back for _, back in _B64_STARTS)
#: Site-free margin kept around JSON/percent escapes (see `_derived`): more than a
#: candidate reads (one byte before its start, 64 after).
_REACH = 80
#: A gap with more than one escape site per ``_DENSE * _REACH`` bytes is transformed and
#: searched whole rather than window by window (0: always by windows).
_DENSE = 4
_JSON_SITES = re.compile(rb"\\(?:/|u002[fFbB])")
_PCT_SITES = re.compile(rb"%[0-9A-Fa-f]{2}")


def _first_start(segments: list[_Segment]) -> tuple[int, bool]:
    """The base64-image search of `residual_images` over some stretches of one text.

    Returns (offset of the first image run or -1, whether any start literal occurred).
    Candidates are tried literal by literal, then in text order, like one scan of the
    whole text would.
    """
    seen = False
    for lit, back in _B64_STARTS:
        for buf, lo, hi, shift, plo, phi in segments:
            stop = min(hi, phi + back + len(lit))
            i = embedded.find(buf, lit, max(lo, plo + back), stop)
            while i >= 0:
                seen = True
                p = i - back
                if p >= lo and (p == lo or buf[p - 1] not in _B64_RUN_CHAR):
                    end = p
                    while end < hi and end - p < 64 and buf[end] in _B64_RUN_CHAR:
                        end += 1
                    if base64text.quick_check(buf[p:end]):
                        return p + shift, True
                i = embedded.find(buf, lit, i + 1, stop)
    return -1, seen


def _derived(body: bytes, gaps: list[tuple[int, int]], sites: re.Pattern[bytes], marks: tuple[bytes, ...],
             transform: Callable[[bytes], bytes]) -> list[_Segment]:
    """Where to search ``transform(view)``, view being `body` with its covered spans zeroed.

    The transforms (JSON and percent unescaping) replace each escape *site* (a match of
    `sites`, always shorter than the escape) by one byte, act on each gap alone (no
    escape spans a zero byte) and keep the zeros, so the transformed view is the
    transformed gaps with the covered spans between them.  A candidate whose bytes (one
    before its start to 64 after) hold no site reads exactly what it read in the view,
    where it already failed; so only the neighbourhood of the sites is transformed and
    searched: each cluster of sites with `_REACH` site-free bytes either side (or up to a
    gap's border), candidates starting near a site.  A gap dense with escapes (more than
    the windows would save) is transformed and searched whole.  A gap without any of
    `marks` (cheap to look for) holds no site.
    """
    out: list[_Segment] = []
    shift = 0  # position in the transformed text minus position in the view, at `lo`
    for lo, hi in gaps:
        if not any(embedded.find(body, m, lo, hi) >= 0 for m in marks):
            continue
        limit = (hi - lo) // (_DENSE * _REACH) if _DENSE else hi - lo
        found: list[tuple[int, int]] = []
        for m in sites.finditer(body, lo, hi):
            if len(found) >= limit:  # dense: search the whole gap, transformed
                seg = transform(body[lo:hi])
                out.append((seg, 0, len(seg), lo + shift, -_BACK_MAX, len(seg)))
                shift += len(seg) - (hi - lo)
                break
            found.append(m.span())
        else:
            shift = _windows(body, lo, hi, found, transform, shift, out)
    return out


def _windows(body: bytes, lo: int, hi: int, found: list[tuple[int, int]],
             transform: Callable[[bytes], bytes], shift: int, out: list[_Segment]) -> int:
    """Append the windows around the escape sites `found` in gap [lo, hi); the new shift."""
    k = 0
    while k < len(found):
        first = k
        while k + 1 < len(found) and found[k + 1][0] - found[k][1] <= 2 * _REACH:
            k += 1
        wa, wb = max(lo, found[first][0] - _REACH), min(hi, found[k][1] + _REACH)
        seg = transform(body[wa:wb])
        first_at = found[first][0] - wa            # the first site's byte, in seg
        last_at = len(seg) - (wb - found[k][1]) - 1  # the last site's byte, in seg
        # a border of seg inside the gap is never reached: _REACH > what a candidate reads
        out.append((seg, 0, len(seg), wa + shift, first_at - 63, last_at + 1))
        shift += len(seg) - (wb - wa)
        k += 1
    return shift


def _json_unescape_view(seg: bytes) -> bytes:
    return _JSON_PLUS.sub(b"+", _JSON_SLASH.sub(b"/", seg))


def residual_images(body: bytes, covered: list[tuple[int, int]]) -> int:
    """Offset of a base64 / data-URL image left outside every inspected carrier, else -1.

    Why: the carrier parsers only look where a known shape puts an image (whole JSON
    string values, whole form fields, whole parts).  A base64 image anywhere else (a
    JSON key, a JSON document inside a JSON string, a data URL inside a chat message's
    HTML, an XML body) would otherwise leave with all its metadata and without a word in
    the report.  This search is the safety net that turns every such image into an error
    finding (fail closed).  A candidate counts only when a base64 run *starts* there
    (not in the middle of a longer base64 text, e.g. a base64 PDF) and really decodes to
    an image signature, so text merely mentioning ``/9j/`` does not block a request.

    The search reads "the body with its covered spans blanked out" — the plain text, its
    JSON-unescaped form (``\\/``, ``\\u002f``, ``\\u002b``) and its percent-decoded form
    (form fields, queries) — but never builds that copy: it searches the uncovered gaps
    of `body` in place, and transforms only the neighbourhood of the escapes.  The offset
    returned is in the coordinates of the text it was found in, as before.
    """
    if not body:
        return -1
    gaps = _gaps(len(body), covered)
    if not gaps:
        return -1

    def has(lit: bytes) -> bool:
        return any(embedded.find(body, lit, lo, hi) >= 0 for lo, hi in gaps)

    at, any_start = _first_start([(body, lo, hi, 0, lo - _BACK_MAX, hi) for lo, hi in gaps])
    if at >= 0:
        return at
    if has(b"\\/") or has(b"\\u002"):  # JSON escapes of '/' and '+' inside string text
        at, _ = _first_start(_derived(body, gaps, _JSON_SITES, (b"\\/", b"\\u002"), _json_unescape_view))
        if at >= 0:
            return at
    if has(b"%") and (any_start or (has(b"9j%2") and (has(b"%2F9j%2F") or has(b"%2f9j%2f")))):
        # percent-encoded text (form fields, queries)
        at, _ = _first_start(_derived(body, gaps, _PCT_SITES, (b"%",), unquote_to_bytes))
    return at


def identifying(name: str | None) -> bool:
    return bool(name) and _IDENTIFYING.search(name) is not None


def neutral_name(name: str, fmt: str | None) -> str:
    m = re.search(r"\.([A-Za-z0-9]{1,5})$", name)
    ext = m.group(1) if m else _EXT.get(fmt or "", "bin")
    return f"image.{ext}"


class _Rollback(Exception):
    pass


@dataclass
class Context:
    options: CarrierOptions
    scrub: Scrubber
    findings: list[ImageFinding] = field(default_factory=list)
    strings: int = 0
    hash_fields: list[str] = field(default_factory=list)   # S3 POST fields hashing a file
    header_edits: int = 0


def _apply(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    return base64text.splice(data, sorted(edits, key=lambda t: t[0]))


def _join(where: str, label: str) -> str:
    return f"{where} > {label}" if where else label


def _error(ctx: Context, carrier: str, fmt: str | None, size: int, message: str,
           span: tuple[int, int] | None, filename: str | None = None) -> None:
    ctx.findings.append(ImageFinding(carrier, fmt, size, filename, None, message, span,
                                     identifying(filename)))


def clean_image(data: bytes, carrier: str, span: tuple[int, int], filename: str | None,
                ctx: Context) -> bytes | None:
    """Run the engine on one complete image.  Returns new bytes, or None if unchanged/failed."""
    fmt = sniff(data)
    opts = ctx.options
    if len(ctx.findings) >= opts.max_images:
        _error(ctx, carrier, fmt, len(data), f"more than {opts.max_images} images in one request; "
               "not cleaned", span, filename)
        return None
    try:
        result = ctx.scrub(data, opts.scrub)
    except ScrubError as exc:
        _error(ctx, carrier, getattr(exc, "format", None) or fmt, len(data), str(exc), span, filename)
        return None
    except Exception as exc:  # a cleaner bug must not take the proxy down: fail closed
        _error(ctx, carrier, fmt, len(data), f"internal error while cleaning the image "
               f"({type(exc).__name__})", span, filename)
        return None
    if opts.scrub.preserve_length and len(result.data) != len(data):
        _error(ctx, carrier, fmt, len(data), "the cleaner changed the image length; refusing it",
               span, filename)
        return None
    if data[:2] == b"\xff\x0a":
        # a bare JXL codestream is opaque to the engine (kept as it is): only its signature
        # counts as covered, so the embedded-image search still reads the rest of it
        span = (span[0], span[0] + 2)
    ctx.findings.append(ImageFinding(carrier, result.format or fmt, len(data), filename, result, None,
                                     span, identifying(filename)))
    return result.data if result.data != data else None


def _clean_pieces(text: bytes, img: base64text.Base64Image, carrier: str, span: tuple[int, int],
                  filename: str | None, ctx: Context, lo: int = 0,
                  hi: int | None = None) -> list[tuple[int, int, bytes]] | None:
    """Clean the image decoded from ``text[lo:hi]``; the changed stretches of its re-encoded
    text (relative to `lo`), or None if unchanged.  A decoded *wrapper* (``format`` "":
    a base64 PDF, zip, protobuf) has the images inside it cleaned in place instead."""
    if img.format == "":
        new = clean_blob(img.data, carrier, span, ctx)
    else:
        new = clean_image(img.data, carrier, span, filename, ctx)
    if new is None:
        return None
    return base64text.reencode_pieces(img, new, text, lo, hi)


def _clean_text(text: bytes, img: base64text.Base64Image, carrier: str, span: tuple[int, int],
                filename: str | None, ctx: Context) -> bytes | None:
    pieces = _clean_pieces(text, img, carrier, span, filename, ctx)
    return None if pieces is None else base64text.splice(text, pieces)


def clean_blob(blob: bytes, carrier: str, span: tuple[int, int], ctx: Context) -> bytes | None:
    """Clean the images embedded in a decoded base64 wrapper; the new bytes or None.

    Findings name the wrapper's carrier and take its span (the text it was decoded from),
    since offsets inside the decoded bytes mean nothing in the body.
    """
    mark = len(ctx.findings)
    new = scan_embedded(blob, [], ctx)
    ctx.findings[mark:] = [dataclasses.replace(f, carrier=f"{carrier} > {f.carrier}", span=span)
                           for f in ctx.findings[mark:]]
    return new


def _b64_label(img_or_text: bytes) -> str:
    return "data URL" if img_or_text[:5].lower() == b"data:" else "base64"


def scan(data: bytes, content_type: str | None, where: str, base: int, depth: int, ctx: Context,
         filename: str | None = None) -> bytes | None:
    """Clean every image in `data`; returns the new bytes or None when nothing changed."""
    span = (base, base + len(data))
    if sniff(data) is not None:
        return clean_image(data, where or "raw body", span, filename, ctx)
    if depth > ctx.options.max_nesting:
        if signature_in(data):
            _error(ctx, where or "body", None, len(data), "carriers nested too deeply to inspect", span)
        return None
    boundary = multipart.boundary_from_content_type(content_type)
    if boundary is None and data.startswith(b"--"):
        boundary = multipart.sniff_boundary(data)
    if boundary is not None:
        return scan_multipart(data, boundary, where, base, depth, ctx)
    if content_type and content_type.split(";")[0].strip().lower().startswith("multipart/"):
        return _unparseable(data, "cannot parse multipart body (no boundary)", where, base, ctx)
    if jsonbody.looks_like_json(data):
        return scan_json(data, where, base, ctx)
    if base64text.quick_check(data):
        label = f"{where} ({_b64_label(data)} text)" if where else f"{_b64_label(data)} body"
        try:
            img = base64text.decode(data)
        except base64text.NotReproducible as exc:
            _error(ctx, label, None, len(data), str(exc), span, filename)
            return None
        if img is not None:
            return _clean_text(data, img, label, span, filename, ctx)
    elif len(data) >= base64text.BLOB_MIN_CHARS and base64text.blob_check(data[:1024]):
        blob = base64text.decode_blob(data)
        if blob is not None:
            label = f"{where} ({_b64_label(data)} text)" if where else f"{_b64_label(data)} body"
            return _clean_text(data, blob, label, span, filename, ctx)
    if form.looks_like_form(data):
        return scan_form(data, where, base, ctx)
    return None


def _unparseable(data: bytes, message: str, where: str, base: int, ctx: Context) -> None:
    if signature_in(data):
        _error(ctx, where or "body", None, len(data), message, (base, base + len(data)))
    return None


def _head_text(raw: bytes) -> bytes:
    head = raw[:700]
    if b"\\" in head:
        head = jsonbody._ESCAPE.sub(lambda m: bytes([jsonbody._SIMPLE.get(m.group(2), 0)])
                                    if m.group(2) else bytes([int(m.group(1), 16) & 0xFF]), head)
    return head


def scan_json(data: bytes, where: str, base: int, ctx: Context) -> bytes | None:
    mark = len(ctx.findings)
    edits: list[tuple[int, int, bytes]] = []
    opts = ctx.options
    try:
        for s in jsonbody.iter_value_strings(data, max_depth=opts.max_json_depth):
            if s.end - s.start < 16:
                continue
            ctx.strings += 1
            if ctx.strings % 64 == 0:
                embedded.check_deadline(opts.deadline)
            if ctx.strings > opts.max_strings:
                if signature_in(data[s.start:], opts.deadline):
                    _error(ctx, _join(where, "JSON body"), None, len(data),
                           f"more than {opts.max_strings} strings; not all were inspected",
                           (base, base + len(data)))
                break
            head = _head_text(data[s.start:min(s.end, s.start + 700)])
            blob = False
            if not base64text.quick_check(head):
                # not an image: perhaps base64 of a wrapper (PDF, zip) holding images
                blob = s.end - s.start >= base64text.BLOB_MIN_CHARS and base64text.blob_check(head)
                if not blob:
                    continue
            decode = base64text.decode_blob if blob else base64text.decode
            kind = _b64_label(head)
            carrier = _join(where, f"JSON {kind} at {s.label}")
            span = (base + s.start, base + s.end)
            # Without an escape the string's bytes are the text: read them in place (no
            # copy) and patch only the changed stretches of the re-encoded base64, which
            # holds nothing escape() would rewrite (neither does the string: the tokenizer
            # excludes '"', '\\' and control bytes).
            in_place = data.find(b"\\", s.start, s.end) < 0
            raw = text = b""
            reprs: dict[int, bytes] = {}
            try:
                if in_place:
                    img = decode(data, s.start, s.end)
                else:
                    raw = data[s.start:s.end]
                    text, reprs = jsonbody.unescape(raw)
                    if jsonbody.escape(text, reprs) != raw:
                        raise jsonbody.EscapeConflict("escaping not reproducible")
                    img = decode(text)
            except (jsonbody.EscapeConflict, base64text.NotReproducible) as exc:
                if not blob:  # a wrapper we cannot re-escape is left to the residual search
                    _error(ctx, carrier, None, s.end - s.start,
                           f"cannot rewrite this JSON string exactly: {exc}", span)
                continue
            if img is None:
                continue
            if in_place:
                pieces = _clean_pieces(data, img, carrier, span, None, ctx, s.start, s.end)
                if pieces is not None:
                    edits.extend((s.start + a, s.start + b, new) for a, b, new in pieces)
            else:
                new_text = _clean_text(text, img, carrier, span, None, ctx)
                if new_text is not None:
                    edits.append((s.start, s.end, jsonbody.escape(new_text, reprs)))
            raw = text = new_text = img = pieces = None  # type: ignore[assignment]  # free copies now
    except jsonbody.JSONTooDeep as exc:
        del ctx.findings[mark:]
        return _unparseable(data, f"cannot inspect JSON body ({exc})", _join(where, "JSON body"), base, ctx)
    except jsonbody.JSONSyntaxError as exc:
        del ctx.findings[mark:]
        return _unparseable(data, f"cannot parse JSON body ({exc})", _join(where, "JSON body"), base, ctx)
    return _apply(data, edits) if edits else None


def scan_form(data: bytes, where: str, base: int, ctx: Context) -> bytes | None:
    try:
        fields = form.fields(data, max_fields=ctx.options.max_strings)
    except form.FormError as exc:
        return _unparseable(data, f"cannot parse form body ({exc})", where, base, ctx)
    edits: list[tuple[int, int, bytes]] = []
    for f in fields:
        raw = data[f.start:f.end]
        if len(raw) < 16:
            continue
        ctx.strings += 1
        if ctx.strings > ctx.options.max_strings:
            if signature_in(data[f.start:]):
                _error(ctx, _join(where, "form body"), None, len(data), "too many form fields to inspect",
                       (base, base + len(data)))
            break
        head = unquote_to_bytes(raw[:700])  # lenient: only to decide whether to look closer
        blob = False
        if not base64text.quick_check(head):
            blob = len(raw) >= base64text.BLOB_MIN_CHARS and base64text.blob_check(head)
            if not blob:
                continue
        carrier = _join(where, f"form field {f.name!r} ({_b64_label(head)})")
        span = (base + f.start, base + f.end)
        try:
            text, reprs = form.unescape(raw)
            if form.escape(text, reprs) != raw:
                raise form.EncodingConflict("percent-encoding not reproducible")
            img = base64text.decode_blob(text) if blob else base64text.decode(text)
        except (form.EncodingConflict, base64text.NotReproducible) as exc:
            if not blob:  # a wrapper we cannot re-encode is left to the residual search
                _error(ctx, carrier, None, len(raw), f"cannot rewrite this form field exactly: {exc}", span)
            continue
        if img is None:
            continue
        new_text = _clean_text(text, img, carrier, span, None, ctx)
        raw = text = img = None  # type: ignore[assignment]  # free the body-sized copies now
        if new_text is not None:
            edits.append((f.start, f.end, form.escape(new_text, reprs)))
            new_text = None
    return _apply(data, edits) if edits else None


_FILENAME = re.compile(rb'(?i)(\bfilename\*?\s*=\s*)("(?:[^"\\\r\n]|\\.)*"|[^;\r\n]*)')
_NAME_B64 = re.compile(rb'(?i)(\bname\s*=\s*"?)(base64;)([^";\r\n]*)')


def _renamed_headers(block: bytes, fmt: str | None, filename: str | None, b64name: bool) -> bytes:
    neutral = neutral_name(filename or "", fmt).encode()

    def fn(m: re.Match[bytes]) -> bytes:
        if m.group(1).rstrip(b" =\t").lower().endswith(b"*"):
            return m.group(1) + b"UTF-8''" + neutral
        quoted = m.group(2).startswith(b'"')
        return m.group(1) + (b'"' + neutral + b'"' if quoted else neutral)

    out = _FILENAME.sub(fn, block)
    if b64name:
        out = _NAME_B64.sub(lambda m: m.group(1) + m.group(2) + neutral, out)
    return out


#: Parts larger than this are copied out of the body only when their head says `scan` has
#: something to do with them (copying 250 MiB holds the GIL for ~100 ms).
_BIG_PART = 1 << 20


def _part_may_hold_a_carrier(data: bytes, lo: int, hi: int, content_type: str | None) -> bool:
    """Would `scan` do anything with ``data[lo:hi]`` (judged from its first bytes)?

    A part that is none of an image, a multipart, JSON, base64 text or a form is left
    to the embedded-image and residual searches over the whole body, which read it in
    place; so a large text or binary part need not be copied.  Errs towards yes.
    """
    if hi - lo <= _BIG_PART:
        return True
    head = data[lo:lo + 4096]
    if sniff(head) is not None or head[:2] == b"BM" or head.startswith(b"--"):
        return True
    if content_type and content_type.split(";")[0].strip().lower().startswith("multipart/"):
        return True
    if jsonbody.looks_like_json(head) or base64text.quick_check(head) or base64text.blob_check(head):
        return True
    cut = head.rfind(b"%", len(head) - 2)  # a %-escape cut by the 4096-byte head
    return form.looks_like_form(head[:cut] if cut >= 0 else head)


def scan_multipart(data: bytes, boundary: bytes, where: str, base: int, depth: int,
                   ctx: Context) -> bytes | None:
    opts = ctx.options
    try:
        mp = multipart.parse(data, boundary, max_parts=opts.max_parts)
    except multipart.MultipartError as exc:
        return _unparseable(data, f"cannot parse multipart body ({exc})", _join(where, "multipart body"),
                            base, ctx)
    for lo, hi, what in ((0, mp.preamble_end, "preamble"), (mp.epilogue_start, len(data), "epilogue")):
        outside = data[lo:hi]
        fmt = sniff(outside) if outside else None
        if fmt is not None or (outside and signature_in(outside)):
            # servers ignore these bytes, but they still leave the machine
            _error(ctx, _join(where, f"multipart {what}"), fmt, hi - lo,
                   f"image data in the multipart {what} cannot be cleaned", (base + lo, base + hi))
    edits: list[tuple[int, int, bytes]] = []
    for i, part in enumerate(mp.parts):
        embedded.check_deadline(opts.deadline)
        payload = b""
        name = part.name
        label = _join(where, f"multipart part {name!r}" if name is not None else f"multipart part #{i}")
        lname = (name or "").lower()
        if lname == "content-md5" or lname.startswith("x-amz-checksum-"):
            ctx.hash_fields.append(name or "")
        filename = part.filename
        b64name = False
        if filename is None and name and name.lower().startswith("base64;"):
            filename, b64name = name.split(";", 1)[1], True
        mark = len(ctx.findings)
        span = (base + part.body_start, base + part.body_end)
        cte = (part.header("content-transfer-encoding") or "").strip().lower()
        if cte != "quoted-printable" and not _part_may_hold_a_carrier(data, part.body_start, part.body_end,
                                                                      part.content_type):
            continue  # plain text or binary: the embedded-image search reads it in place
        payload = data[part.body_start:part.body_end]
        if cte == "quoted-printable":
            import quopri
            try:
                decoded = quopri.decodestring(payload)
            except ValueError:
                decoded = b""
            if sniff(decoded) is not None:
                _error(ctx, label, sniff(decoded), len(decoded),
                       "quoted-printable image part cannot be rewritten exactly", span, filename)
            continue
        new = scan(payload, part.content_type, label, base + part.body_start, depth + 1, ctx, filename)
        payload = None  # type: ignore[assignment]  # a copy of the part: free it before the next
        found = ctx.findings[mark:]
        if new is not None:
            if multipart.payload_contains_delimiter(new, boundary):
                ctx.findings[mark:] = [ImageFinding(f.carrier, f.format, f.size, f.filename, None,
                                                    "the cleaned image would contain the multipart "
                                                    "boundary; not rewritten", f.span, f.identifying_name)
                                       for f in found]
                new = None
            else:
                edits.append((part.body_start, part.body_end, new))
        if opts.rename_files and found and (part.filename is not None or b64name):
            block = data[part.header_start:part.header_end]
            renamed = _renamed_headers(block, found[0].format, filename, b64name)
            if renamed != block:
                edits.append((part.header_start, part.header_end, renamed))
                ctx.header_edits += 1
    return _apply(data, edits) if edits else None


def scan_embedded(data: bytes, covered: list[tuple[int, int]], ctx: Context, *,
                  can_clean: bool = True) -> bytes | None:
    """Clean images that sit where no parsed carrier put them; the new body or None.

    Why: see `embedded`.  Searches every stretch of `data` outside `covered` (the spans
    of images already found, in `data`'s coordinates) for plausible images, cleans each
    delimited one in place with the length-preserving engine, recomputes the CRC-32 of a
    stored zip entry that holds one, and reports (error finding, so the policy blocks)
    every image it cannot rewrite: undelimited, inside a compressed zip entry or PDF
    stream, or any at all when `can_clean` is False (a mode that changes lengths).
    """
    deadline = ctx.options.deadline
    edits: list[tuple[int, int, bytes]] = []
    changed: list[tuple[int, int]] = []
    for lo, hi in _gaps(len(data), covered):
        archive = wrappers.stored_extents(data, lo, hi, deadline)
        for cand in embedded.candidates(data, lo, hi, deadline=deadline):
            carrier = f"{cand.format} inside the body at offset {cand.start}"
            end = archive.get(cand.start)
            if end is not None and cand.end is not None and end >= cand.end:
                cand = embedded.Candidate(cand.start, cand.format, end)  # the whole stored file
            elif cand.end is not None and (tail := wrappers.trailer_after(data, cand.end, hi)):
                _error(ctx, carrier, cand.format, cand.end - cand.start,
                       f"{tail}; inside this wrapper it cannot be told apart from the wrapper, so "
                       "it cannot be cleaned", (cand.start, cand.end))
                continue
            if cand.end is None:
                _error(ctx, carrier, cand.format, hi - cand.start,
                       f"an image sits where no upload shape puts one and {cand.why}; it cannot be "
                       "cleaned", (cand.start, hi))
                break
            span = (cand.start, cand.end)
            if not can_clean or not ctx.options.scrub.preserve_length:
                _error(ctx, carrier, cand.format, cand.end - cand.start,
                       "an image inside a wrapper can only be cleaned length-preserving", span)
                continue
            new = clean_image(data[cand.start:cand.end], carrier, span, None, ctx)
            if new is not None:
                edits.append((cand.start, cand.end, new))
                changed.append(span)
        for h in wrappers.hidden_images(data, lo, hi, deadline):
            _error(ctx, f"image in a {h.where} at offset {h.span[0]}", h.format, h.span[1] - h.span[0],
                   h.why, h.span)
    if not edits:
        return None
    out = bytearray(_apply(data, edits))
    for problem in wrappers.fix_zip_crcs(out, changed, 0, len(out), deadline):
        _error(ctx, "zip entry", None, len(out), problem, (0, len(out)))
    return bytes(out)
