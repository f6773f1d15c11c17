"""Download each corpus file, verify its size and sha256, and write it atomically.

A file lands at its final name only after its whole body was read and its hash matched;
until then it is a `.part` file next to it, removed on failure and overwritten by the next
run (so a run that was killed half-way is simply run again).  Downloads are sequential with
a small back-off between retries: the sources are other projects' repositories.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .sources import Source

USER_AGENT = "exifguard-fetch-corpus/1 (test corpus download, one file at a time)"
CHUNK = 64 * 1024
LFS_POINTER = b"version https://git-lfs.github.com/spec/"


@dataclass(frozen=True)
class Outcome:
    file: str
    status: str          # "fetched" | "present" | "failed"
    reason: str = ""


class _Permanent(Exception):
    """A failure another attempt will not fix (404, wrong hash of a complete body)."""


class _Transient(Exception):
    """A failure worth another attempt (network error, 5xx, 429, a short body)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def file_matches(path: Path, src: Source) -> bool:
    """True when `path` holds exactly the expected bytes (size checked first: cheap)."""
    try:
        if not path.is_file() or path.stat().st_size != src.size:
            return False
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
        return h.hexdigest() == src.sha256
    except OSError:
        return False


def part_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.part")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _download(url: str, src: Source, part: Path, timeout: float) -> None:
    """One attempt: stream the body into `part`, verifying size and hash as it arrives."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (https or a loopback mirror)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise _Transient(f"HTTP {exc.code}", _retry_after(exc.headers.get("Retry-After"))) from None
        raise _Permanent(f"HTTP {exc.code} from {url}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Transient(f"cannot connect ({reason})") from None
    h = hashlib.sha256()
    got = 0
    head = b""
    try:
        with resp, part.open("wb") as out:
            while True:
                try:
                    block = resp.read(CHUNK)
                except (http.client.IncompleteRead, OSError, socket.timeout) as exc:
                    raise _Transient(f"connection broke after {got} of {src.size} bytes "
                                     f"({type(exc).__name__})") from None
                if not block:
                    break
                if len(head) < len(LFS_POINTER):
                    head += block[:len(LFS_POINTER)]
                got += len(block)
                if got > src.size:
                    raise _Permanent(f"the source sends more than the {src.size} bytes the manifest "
                                     "records (a different file at that path?)")
                h.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:  # writing the .part file (reading errors are handled above)
        raise _Permanent(f"cannot write {part} ({exc.strerror or type(exc).__name__})") from None
    if head.startswith(LFS_POINTER):
        raise _Permanent("the source sends a Git LFS pointer, not the file (the repository "
                         "stores it with LFS; use its media URL as the entry's source_url)")
    if got < src.size:
        raise _Transient(f"short body: {got} of {src.size} bytes")
    digest = h.hexdigest()
    if digest != src.sha256:
        raise _Permanent(f"sha256 mismatch: expected {src.sha256[:16]}…, got {digest[:16]}… "
                         "(the file was not kept)")


def fetch_one(src: Source, dest: Path, *, base_url: str | None = None, attempts: int = 4,
              backoff: float = 2.0, timeout: float = 60.0,
              sleep: Callable[[float], None] = time.sleep) -> Outcome:
    target = dest / src.file
    if file_matches(target, src):
        return Outcome(src.file, "present")
    replaced = target.exists()
    url = src.download_url(base_url)
    part = part_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return Outcome(src.file, "failed", f"cannot create {target.parent} ({exc.strerror})")
    reason = ""
    try:
        for attempt in range(1, attempts + 1):
            try:
                _download(url, src, part, timeout)
            except _Permanent as exc:
                return Outcome(src.file, "failed", str(exc))
            except _Transient as exc:
                reason = f"{exc} (after {attempt} attempt{'s' if attempt > 1 else ''})"
                if attempt < attempts:
                    wait = exc.retry_after if exc.retry_after is not None else backoff * 2 ** (attempt - 1)
                    sleep(min(wait, 60.0))
                continue
            os.replace(part, target)
            return Outcome(src.file, "fetched",
                           "replaced a copy whose hash did not match" if replaced else "")
        return Outcome(src.file, "failed", reason)
    finally:
        part.unlink(missing_ok=True)


def fetch_all(sources: list[Source], dest: Path, *, progress: Callable[[Outcome, int, int], None] | None = None,
              **kw) -> list[Outcome]:
    """Every source in order; a failure never stops the others (the summary lists them all)."""
    out: list[Outcome] = []
    for i, src in enumerate(sources, 1):
        o = fetch_one(src, dest, **kw)
        out.append(o)
        if progress:
            progress(o, i, len(sources))
    return out


def stale_parts(dest: Path) -> list[Path]:
    """`.part` files a killed run left behind (removed before a new run starts)."""
    return sorted(p for p in dest.rglob(".*.part") if p.is_file()) if dest.is_dir() else []
