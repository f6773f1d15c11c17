"""The scrub engine: bytes in, clean bytes out.  Knows nothing of HTTP or mitmproxy.

Flow for one image:
    sniff magic bytes -> pick the format walker -> walker rewrites structures in place
    (allowlist) and records what it removed -> an *independent* verifier re-walks the
    output -> ScrubResult.
"""

from __future__ import annotations

import importlib
import struct
from types import ModuleType

from .detect import SCRUBBABLE, is_image, sniff
from .errors import ScrubError, UnsupportedFormat
from .report import Category, Findings, Kept, Removal, ScrubOptions, ScrubResult

__all__ = [
    "Category", "Kept", "Removal", "ScrubError", "ScrubOptions", "ScrubResult",
    "UnsupportedFormat", "is_image", "scrub", "sniff",
]

# format name -> module name under .formats and .verify (Pillow-style plugin table)
_MODULES = {
    "JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif",
    "HEIC": "heif", "HEIF": "heif", "AVIF": "heif", "TIFF": "tiff", "JXL": "jxl", "BMP": "bmp",
}


def _load(kind: str, fmt: str) -> ModuleType:
    name = _MODULES[fmt]
    try:
        return importlib.import_module(f".{kind}.{name}", __name__)
    except ModuleNotFoundError as exc:  # a format not built yet: fail closed, clearly
        raise UnsupportedFormat(f"unsupported image format: {fmt} (no cleaner available)",
                                format=fmt) from exc


def scrub(data: bytes | bytearray | memoryview, *, preserve_length: bool = True,
          keep_orientation: bool = True, keep_icc: bool = True,
          options: ScrubOptions | None = None) -> ScrubResult:
    """Remove every non-rendering structure from an image, losslessly.

    With `preserve_length` (the default, and what the proxy sends) the output has
    exactly the input's length: removed structures are overwritten in place with
    neutral padding, so every size a client declared stays true.

    Raises ScrubError (a ValueError) when the bytes are not an image, are an image we
    cannot clean, or are malformed in a way that makes a safe rewrite impossible.
    Never returns bytes that failed verification.
    """
    if options is None:
        options = ScrubOptions(preserve_length=preserve_length, keep_orientation=keep_orientation,
                               keep_icc=keep_icc)
    buf = bytes(data)
    if len(buf) > options.max_input_bytes:
        raise ScrubError(f"image is too large to scrub ({len(buf)} bytes; limit "
                         f"{options.max_input_bytes})")
    fmt = sniff(buf)
    if fmt is None:
        raise ScrubError("not an image: the data does not start with any known image signature")
    if fmt not in SCRUBBABLE:
        raise UnsupportedFormat(f"unsupported image format: {fmt}", format=fmt)
    walker = _load("formats", fmt)
    verifier = _load("verify", fmt)
    findings = Findings()
    try:
        out = walker.scrub(buf, options, findings)
    except ScrubError as exc:
        if exc.format is None:
            exc.format = fmt
        raise
    except (IndexError, struct.error, ValueError, KeyError, OverflowError, RecursionError) as exc:
        raise ScrubError(f"{fmt} file is malformed and cannot be cleaned safely ({type(exc).__name__})",
                         format=fmt) from exc
    if options.preserve_length and len(out) != len(buf):
        raise ScrubError(f"internal error: {fmt} cleaner changed the length "
                         f"({len(buf)} -> {len(out)}); refusing to return it", format=fmt)
    if len(out) > len(buf):
        raise ScrubError(f"internal error: {fmt} cleaner grew the file; refusing to return it",
                         format=fmt)
    try:
        verifier.verify(out, options)
    except ScrubError as exc:
        raise ScrubError(f"{fmt} output failed verification: {exc}", format=fmt) from exc
    except (IndexError, struct.error, ValueError, KeyError, OverflowError) as exc:
        raise ScrubError(f"{fmt} output failed verification ({type(exc).__name__})",
                         format=fmt) from exc
    return ScrubResult(data=out, format=fmt, removed=tuple(findings.removed),
                       kept=tuple(findings.kept), input_length=len(buf))
