"""Batched ExifTool oracle: every accepted output in a sample is read by ExifTool, which must
report no tag outside the per-format allowlists (tests/support/allowlists).

Why batched: one ExifTool start costs ~0.3 s; reading 50 files in one run costs about the
same, so outputs are queued and checked together.  The input that produced each output
is kept, so a leak can be minimised and saved like any other finding.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import seeds as _seeds  # noqa: F401  (puts tests/ on sys.path)
from .invariants import Violation

from support import oracle as _oracle  # noqa: E402

SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "HEIC": ".heic", "HEIF": ".heif",
          "AVIF": ".avif", "TIFF": ".tif", "JXL": ".jxl", "BMP": ".bmp"}


@dataclass
class Pending:
    target: str
    fmt: str
    output: bytes
    input: bytes
    context: dict


def available() -> bool:
    return shutil.which("exiftool") is not None


class ExifToolBatch:
    def __init__(self, batch_size: int = 40) -> None:
        self.batch_size = batch_size
        self.pending: list[Pending] = []
        self.checked = 0
        self.batches = 0
        self.enabled = available()

    def add(self, item: Pending) -> bool:
        """Queue one output; True when a batch is full and `flush()` should run."""
        if not self.enabled:
            return False
        self.pending.append(item)
        return len(self.pending) >= self.batch_size

    def flush(self) -> list[tuple[Violation, Pending]]:
        if not self.pending:
            return []
        items, self.pending = self.pending, []
        found: list[tuple[Violation, Pending]] = []
        with tempfile.TemporaryDirectory(prefix="fuzz-exiftool-") as tmp:
            paths = []
            for k, it in enumerate(items):
                p = Path(tmp) / f"o{k}{SUFFIX.get(it.fmt, '.bin')}"
                p.write_bytes(it.output)
                paths.append(p)
            try:
                tags = _oracle.exiftool_files(paths)
            except (AssertionError, subprocess.SubprocessError, ValueError) as exc:
                # ExifTool itself failing on fuzzed files is not our bug; note it and go on
                print(f"fuzz: exiftool batch failed ({type(exc).__name__}); skipped {len(items)} outputs")
                return []
            self.batches += 1
            self.checked += len(items)
            for p, it in zip(paths, items):
                t = tags.get(str(p))
                if t is None:
                    continue
                bad = _oracle.leaks(it.fmt, t)
                if not bad:
                    continue
                private = privacy_tags(bad, t, it.context.get("markers", ()))
                private = [k for k in private if not _binary_is_coded_pixels(k, t, p)]
                if not private and not has_allowlist(it.fmt):
                    continue  # no allowlist for this format (BMP): only privacy tags count
                kind = "exiftool" if private else "exiftool-unlisted"
                shown = private or bad
                found.append((Violation(it.target, kind, f"{kind}:{it.fmt}:{','.join(shown[:3])}",
                                        f"ExifTool reads {'privacy' if private else 'unlisted (not private)'} "
                                        f"tags from an accepted {it.fmt} output: {', '.join(shown[:6])}",
                                        it.context.get("mode", ""), {"tags": shown[:20]}), it))
        return found


_EMBEDDED_IMAGE_TAGS = {"PreviewImage", "ThumbnailImage", "JpgFromRaw", "OtherImage"}


def _binary_is_coded_pixels(key: str, tags: dict, path: Path) -> bool:
    """ExifTool names the data of an HEIF item it cannot type "PreviewImage" — often just the
    primary image's coded (HEVC/AV1) data, which it then warns "is not a valid JPEG image".
    Only an extracted blob that is itself an image (or holds a canary) is a real preview."""
    name = key.split(":", 1)[-1]
    if name not in _EMBEDDED_IMAGE_TAGS or not str(tags.get(key, "")).startswith("(Binary data"):
        return False
    try:
        blob = subprocess.run(["exiftool", "-m", "-b", f"-{name}", str(path)], capture_output=True,
                              timeout=60).stdout
    except (subprocess.SubprocessError, OSError):
        return False
    from exifguard import sniff
    return bool(blob) and sniff(blob) is None and _seeds.MARK not in blob


def has_allowlist(fmt: str) -> bool:
    return (_oracle.ALLOWLISTS / f"{_oracle.FORMAT_ALIASES.get(fmt, fmt)}.txt").exists()


def privacy_tags(bad: list[str], tags: dict, markers: tuple[bytes, ...] = ()) -> list[str]:
    """The non-allowlisted keys that name something private (by the engine's own category
    rules: GPS, serials, names, times, device, text) or whose value holds a canary."""
    from exifguard.engine.categories import category_of_tag
    out = []
    ojpeg = str(tags.get("IFD0:Compression", "")).startswith("JPEG (old-style)")
    for key in bad:
        if ojpeg and key in ("IFD0:OtherImage", "IFD0:OtherImageStart", "IFD0:OtherImageLength") and not any(
                m.decode("latin-1") in str(tags.get(key, "")) for m in markers):
            continue  # an old-style JPEG TIFF's image data is its IFD0 "OtherImage": the picture itself
        value = str(tags.get(key, ""))
        if category_of_tag(key.split(":", 1)[-1]) is not None or any(
                m.decode("latin-1") in value for m in markers):
            out.append(key)
    return out


def leaks_of(fmt: str, output: bytes, markers: tuple[bytes, ...] = ()) -> list[str]:
    """One-off check (minimiser, regression replay): the privacy tags ExifTool reads."""
    with tempfile.TemporaryDirectory(prefix="fuzz-exiftool-") as tmp:
        p = Path(tmp) / f"o{SUFFIX.get(fmt, '.bin')}"
        p.write_bytes(output)
        tags = _oracle.exiftool_files([p])[str(p)]
        return [k for k in privacy_tags(_oracle.leaks(fmt, tags), tags, markers)
                if not _binary_is_coded_pixels(k, tags, p)]
