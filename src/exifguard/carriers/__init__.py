"""The carrier layer: find every image in an HTTP request body and clean it in place.

``rewrite_request(method, url, headers, body)`` returns the rewritten body, headers to
set (recomputed body hashes, renamed file headers) and one `ImageFinding` per image.
Knows HTTP bodies, not mitmproxy (the proxy passes ``request.content``, i.e. the body
with Content-Encoding already decoded, and assigns ``rw.body`` back).

Where images are found (by magic bytes, never by label): a raw body under any
Content-Type (Gemini's bytes labelled x-www-form-urlencoded, octet-stream PUTs);
multipart parts at any nesting (own byte-exact splitter, see `multipart`); base64 and
``data:`` URLs in JSON strings at any depth, in urlencoded form fields and as the text
of a multipart part (HuggingChat).  Text carriers are re-encoded with the same
alphabet, padding, line breaks and escaping, so with the length-preserving engine the
body keeps its length and every declared size stays true.

Chunked and resumable uploads (``Content-Range`` not starting at 0 or not reaching the
total, ``x-goog-upload-offset`` > 0 or a command without ``finalize``, Meta
``offset``/``x-entity-length`` covering only part of the file): a partial image cannot
be cleaned — metadata may sit in a chunk we have not seen (PNG text after IDAT, HEIC
Exif at the end, JPEG trailers) — so an image in such a chunk is an *error finding*,
and so is every continuation chunk of an upload that began with an image or whose
start we did not see (`UploadTracker`).  The policy blocks by default.  Continuations
of uploads that began with a non-image pass untouched.

Never raises: malformed bodies holding an image signature yield an error finding,
malformed bodies without one pass untouched; an internal bug becomes a blocker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..engine import sniff
from . import declared, embedded, hashes
from .embedded import InspectionTimeout
from .model import CarrierOptions, ImageFinding, RequestRewrite, Scrubber, UploadTracker
from .scan import Context, identifying, neutral_name, residual_images, scan, scan_embedded, signature_in

__all__ = ["CarrierOptions", "ImageFinding", "RequestRewrite", "Scrubber", "UploadTracker",
           "rewrite_request"]

_KNOWN_ENCODINGS = {"", "identity", "gzip", "x-gzip", "deflate", "br", "zstd"}


def _headers(headers: Sequence[tuple[str, str]] | Mapping[str, str]) -> list[tuple[str, str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for k, v in items:
        if isinstance(k, bytes):
            k = k.decode("latin-1")
        if isinstance(v, bytes):
            v = v.decode("latin-1")
        out.append((str(k), str(v)))
    return out


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def rewrite_request(method: str, url: str, headers: Sequence[tuple[str, str]] | Mapping[str, str],
                    body: bytes, options: CarrierOptions = CarrierOptions()) -> RequestRewrite:
    """Clean every image carried by this request.  Never raises."""
    try:
        return _rewrite(method, url, headers, body, options)
    except InspectionTimeout:
        b = body if isinstance(body, bytes) else bytes(body or b"")
        return RequestRewrite(b, {}, (), ("the upload could not be inspected before the deadline; "
                                          "it was not forwarded",), b, timed_out=True)
    except Exception as exc:  # fail closed on our own bugs, never crash the proxy
        b = body if isinstance(body, bytes) else bytes(body or b"")
        return RequestRewrite(b, {}, (), (f"internal error in the carrier layer ({type(exc).__name__}); "
                                          "the request was not inspected",), b)


def _rewrite(method: str, url: str, headers_in: Sequence[tuple[str, str]] | Mapping[str, str],
             body: bytes, options: CarrierOptions) -> RequestRewrite:
    if body is None:
        body = b""
    elif not isinstance(body, bytes):
        body = bytes(body)
    headers = _headers(headers_in)
    if not body:
        return RequestRewrite(body, {}, (), (), body)
    ctx = Context(options, options.scrub_fn())

    deadline = options.deadline
    if len(body) > options.max_body_bytes:
        if sniff(body) is not None or signature_in(body, deadline):
            ctx.findings.append(ImageFinding("body", sniff(body), len(body), None, None,
                                             f"body larger than {options.max_body_bytes} bytes holds an "
                                             "image signature; not inspected", (0, len(body))))
        return RequestRewrite(body, {}, tuple(ctx.findings), (), body)

    encoding = (_get(headers, "content-encoding") or "").strip().lower()
    if encoding not in _KNOWN_ENCODINGS and "," not in encoding:
        if sniff(body) is not None or signature_in(body, deadline):
            ctx.findings.append(ImageFinding("body", None, len(body), None, None,
                                             f"unknown Content-Encoding {encoding!r}; cannot inspect the "
                                             "body", (0, len(body))))
        return RequestRewrite(body, {}, tuple(ctx.findings), (), body)

    chunk = declared.chunk_info(headers, len(body), url)
    tracker = options.uploads
    if chunk.offset > 0:
        began = tracker.lookup(url) if tracker is not None else None
        if chunk.final and tracker is not None:
            tracker.forget(url)
        if began is False:
            # the upload began with something else (a zip, a video): still, no image may
            # start in this chunk unseen
            cand = embedded.first_candidate(body, deadline=deadline)
            if cand is None:
                return RequestRewrite(body, {}, (), (), body)
            ctx.findings.append(ImageFinding(f"raw body (chunk at offset {chunk.offset})", cand.format,
                                             len(body), None, None, "an image inside a continuation chunk "
                                             "cannot be cleaned (it may continue in another chunk)",
                                             (0, len(body))))
            return RequestRewrite(body, {}, tuple(ctx.findings), (), body)
        why = ("continuation chunk of an upload that began with an image" if began else
               "continuation chunk of an upload whose first chunk was not seen")
        ctx.findings.append(ImageFinding(f"raw body (chunk at offset {chunk.offset})", None, len(body),
                                         None, None, why + ": a partial image cannot be cleaned",
                                         (0, len(body))))
        return RequestRewrite(body, {}, tuple(ctx.findings), (), body)

    content_type = _get(headers, "content-type")
    payload_mode = (_get(headers, "x-amz-content-sha256") or "").strip().upper()
    if payload_mode.startswith("STREAMING-") or "aws-chunked" in encoding:
        # aws-chunked framing (chunk signatures / trailing checksums): not parsed here
        if sniff(body) is not None or signature_in(body, deadline):
            ctx.findings.append(ImageFinding("aws-chunked body", None, len(body), None, None,
                                             "image inside an aws-chunked (streaming) upload cannot be "
                                             "rewritten", (0, len(body))))
        return RequestRewrite(body, {}, tuple(ctx.findings), (), body)
    new = scan(body, content_type, "", 0, 0, ctx)
    covered = [f.span for f in ctx.findings if f.span is not None]
    if not any(s <= 0 and e >= len(body) for s, e in covered):
        # images wherever no parsed shape put them (junk before a JPEG, protobuf fields,
        # zip entries, PDF streams): cleaned in place, or reported
        current = body if new is None else new
        same_coordinates = len(current) == len(body)
        inner = scan_embedded(current if same_coordinates else body, covered, ctx,
                              can_clean=same_coordinates)
        if inner is not None:
            new = inner
        covered = [f.span for f in ctx.findings if f.span is not None]
        at = residual_images(body, covered)
        if at >= 0:
            ctx.findings.append(ImageFinding("body", None, len(body), None, None,
                                             f"base64 image at offset {at} sits where no supported "
                                             "upload shape puts one; it was not cleaned",
                                             (0, len(body))))

    if chunk.partial:
        # first chunk of several: an image here is incomplete and cannot be cleaned safely
        if tracker is not None:
            tracker.remember(url, bool(ctx.findings))
        if ctx.findings:
            msg = "image split across chunked upload: only complete images can be cleaned"
            ctx.findings[:] = [ImageFinding(f.carrier, f.format, f.size, f.filename, None,
                                            msg if f.error is None else f"{msg} ({f.error})",
                                            f.span, f.identifying_name) for f in ctx.findings]
        return RequestRewrite(body, {}, tuple(ctx.findings), (), body)

    new_body = body if new is None or new == body else new
    set_headers: dict[str, str] = {}
    blockers: list[str] = []
    if options.rename_files:
        ent_name = next((k for k, _ in headers if k.lower() == "x-entity-name"), None)
        raw_image = [f for f in ctx.findings if f.carrier == "raw body"]
        if ent_name and raw_image:
            set_headers[ent_name] = neutral_name(_get(headers, "x-entity-name") or "", raw_image[0].format)
    if new_body is not body:
        hs, hb = hashes.recompute(url, headers, body, new_body)
        set_headers.update(hs)
        blockers += hb
        if ctx.hash_fields:
            blockers.append("a multipart field (" + ", ".join(sorted(set(ctx.hash_fields))) +
                            ") hashes the file and is covered by the upload policy; cannot recompute it")
        sizes = [(f.size, len(f.result.data)) for f in ctx.findings if f.result is not None]
        blockers += declared.size_blockers(headers, body, new_body, sizes)
    return RequestRewrite(new_body, set_headers, tuple(ctx.findings), tuple(dict.fromkeys(blockers)), body)


def looks_identifying(filename: str | None) -> bool:
    """Does this file name look like it reveals a capture time or a person?"""
    return identifying(filename)
