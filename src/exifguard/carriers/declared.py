"""Sizes a request declares about its own body or file, and chunk positions.

Why: uploads state the byte count beside the bytes (Meta ``x-entity-length`` and
``offset``, DeepSeek ``x-file-size``, SharePoint ``Content-Range``, Google
``x-goog-upload-offset``).  The engine preserves length, so these stay true; this module
*checks* that after every rewrite and turns any mismatch into a blocker instead of
forwarding a request the server would reject (or, worse, truncate).  It also reads the
chunk position so the carrier layer can tell a first, last or middle chunk apart.

Part uploads that state their position only in the URL are chunks too: S3-style
multipart uploads (``partNumber`` with ``uploadId``; Amazon S3, Alibaba OSS for Qwen,
Tencent COS for Yuanbao, Volcengine TOS for Kimi) and ByteDance's chunked uploads
(``phase=transfer``/``part_number``, Doubao/Dola, whose merge request then lists a CRC
per part).  A part never holds the whole file as far as we can tell, so an image in it
is refused rather than half-cleaned (JPEG trailers, PNG text after IDAT and HEIC Exif
items at the end would be in a part we never saw).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

SIZE_HEADERS = ("x-entity-length", "x-file-size", "x-upload-content-length",
                "x-goog-upload-header-content-length", "x-goog-upload-content-length")

_RANGE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*\Z", re.I)


def _get(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _int(v: str | None) -> int | None:
    if v is None:
        return None
    v = v.strip()
    return int(v) if v.isdigit() and len(v) < 19 else None


@dataclass(frozen=True)
class ChunkInfo:
    """Where this request's body sits inside a larger upload, when headers say so."""

    offset: int = 0
    total: int | None = None      # the whole upload's size, if declared
    final: bool = True            # does this request complete the upload?
    chunked: bool = False         # did any header say this is part of a chunked protocol?

    @property
    def partial(self) -> bool:
        """The body is not the whole upload (a later chunk, or a first chunk with more to come)."""
        return self.offset > 0 or not self.final


_PART_KEYS = ("partnumber", "part_number", "partnum", "part_num")
_UPLOAD_ID_KEYS = ("uploadid", "upload_id")


def url_part(url: str) -> int | None:
    """The 1-based part number of a multipart/chunked part upload named in the URL, else None."""
    try:
        q = {k.lower(): v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    except ValueError:
        return None
    part = next((q[k] for k in _PART_KEYS if k in q), None)
    chunked = any(k in q for k in _UPLOAD_ID_KEYS) or q.get("phase", "").lower() == "transfer"
    if part is None:
        return 1 if q.get("phase", "").lower() == "transfer" else None
    if not chunked:
        return None
    n = _int(part)
    return n if n is not None and n >= 1 else 1


def chunk_info(headers: Sequence[tuple[str, str]], body_len: int, url: str = "") -> ChunkInfo:
    cr = _get(headers, "content-range")
    if cr:
        m = _RANGE.match(cr)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            total = None if m.group(3) == "*" else int(m.group(3))
            final = total is not None and b + 1 >= total
            return ChunkInfo(a, total, final, True)
    goff = _int(_get(headers, "x-goog-upload-offset"))
    gcmd = _get(headers, "x-goog-upload-command")
    if goff is not None or gcmd:
        cmds = {c.strip().lower() for c in (gcmd or "").split(",")}
        return ChunkInfo(goff or 0, None, "finalize" in cmds or not gcmd, True)
    ent = _int(_get(headers, "x-entity-length"))
    off = _int(_get(headers, "offset"))
    if ent is not None:  # Meta rupload: x-entity-length with an `offset` header
        offset = off or 0
        return ChunkInfo(offset, ent, ent is None or offset + body_len >= ent, True)
    part = url_part(url) if url else None
    if part is not None:
        # where the part sits in the file is unknown, and parts have their own URLs (no
        # continuation tracking): every part is scanned as a partial chunk, so a part
        # without an image passes and an image in any part is refused
        return ChunkInfo(0, None, False, True)
    return ChunkInfo()


def size_blockers(headers: Sequence[tuple[str, str]], old_body: bytes, new_body: bytes,
                  image_sizes: Sequence[tuple[int, int]]) -> list[str]:
    """Declared sizes that were true of the old request and are false of the new one.

    `image_sizes` holds (old_len, new_len) per cleaned image: ``x-file-size`` may describe
    the file inside a multipart body rather than the body.
    """
    out: list[str] = []
    if len(old_body) == len(new_body) and all(a == b for a, b in image_sizes):
        return out
    for name in SIZE_HEADERS:
        v = _int(_get(headers, name))
        if v is None:
            continue
        if v == len(old_body) and v != len(new_body):
            out.append(f"declared size {name} no longer matches the rewritten body")
        elif any(v == a and a != b for a, b in image_sizes):
            out.append(f"declared size {name} no longer matches the cleaned file")
    cr = _get(headers, "content-range")
    if cr:
        m = _RANGE.match(cr)
        if m and int(m.group(2)) - int(m.group(1)) + 1 == len(old_body) != len(new_body):
            out.append("Content-Range no longer matches the rewritten body")
    return out
