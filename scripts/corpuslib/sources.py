"""Where each corpus file comes from, read from a manifest or the committed sources list.

Both files are JSON lists of objects.  Only the fields needed to fetch and verify are read;
a full corpus manifest also carries a `privacy` section with real metadata values, which
is never read or copied here.  Every entry is checked before anything is downloaded, so a
malformed list fails with one clear message instead of half a corpus.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

#: The fields a sources list keeps (and the only ones `scripts/fetch-corpus --write-sources` copies).
SOURCE_FIELDS = ("file", "source_repo", "source_path", "source_commit", "sha256", "size_bytes", "license")

GITHUB_RAW = "https://raw.githubusercontent.com"
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class SourcesError(ValueError):
    """The sources list cannot be used as it is (the message names the entry and the field)."""


@dataclass(frozen=True)
class Source:
    """One corpus file: its place in the corpus folder and where its bytes are published."""

    file: str            # path inside the corpus folder, e.g. images/jpeg_x.jpg
    repo: str            # GitHub owner/name ("" when `url` is given instead)
    path: str            # path inside that repository
    commit: str          # pinned commit (40 hex digits)
    sha256: str
    size: int
    license: str
    url: str = ""        # a non-GitHub source: the file's own https URL

    @property
    def name(self) -> str:
        return PurePosixPath(self.file).name

    @property
    def on_github(self) -> bool:
        return not self.url

    def download_url(self, base_url: str | None = None) -> str:
        """GitHub's raw URL at the pinned commit, or the same layout under `base_url` (a mirror)."""
        if self.url and not base_url:
            return self.url
        if self.url:  # a mirror keeps non-GitHub files under their host and path
            parts = urlsplit(self.url)
            return f"{base_url.rstrip('/')}/{parts.hostname}{parts.path}"
        base = (base_url or GITHUB_RAW).rstrip("/")
        return f"{base}/{self.repo}/{self.commit}/{quote(self.path, safe='/')}"

    def as_record(self) -> dict:
        rec = {"file": self.file, "source_repo": self.repo, "source_path": self.path,
               "source_commit": self.commit, "sha256": self.sha256, "size_bytes": self.size,
               "license": self.license}
        if self.url:
            rec["source_url"] = self.url
        return rec


def _check_file(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SourcesError(f"{where}: `file` must be a non-empty relative path")
    p = PurePosixPath(value)
    if p.is_absolute() or ".." in p.parts or "\\" in value or ":" in value or p.parts[0] in (".",):
        raise SourcesError(f"{where}: `file` {value!r} must stay inside the corpus folder "
                           "(relative, no '..', no drive letter)")
    return str(p)


def _check_url(value: str, where: str) -> str:
    parts = urlsplit(value)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return value
    raise SourcesError(f"{where}: `source_url` must be an https URL")


def parse(records: object, origin: str = "sources") -> list[Source]:
    """Validated sources from a JSON list (a full manifest or a committed sources list)."""
    if not isinstance(records, list) or not records:
        raise SourcesError(f"{origin}: expected a non-empty JSON list of entries")
    out: list[Source] = []
    seen: set[str] = set()
    for i, e in enumerate(records):
        where = f"{origin} entry {i}"
        if not isinstance(e, dict):
            raise SourcesError(f"{where}: expected an object")
        file = _check_file(e.get("file"), where)
        where = f"{origin} entry {i} ({file})"
        if file in seen:
            raise SourcesError(f"{where}: listed twice")
        seen.add(file)
        sha = str(e.get("sha256", "")).lower()
        if not _SHA256.match(sha):
            raise SourcesError(f"{where}: `sha256` must be 64 hex digits")
        size = e.get("size_bytes")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise SourcesError(f"{where}: `size_bytes` must be a positive integer")
        url = e.get("source_url") or ""
        repo = str(e.get("source_repo") or "")
        commit = str(e.get("source_commit") or "").lower()
        path = str(e.get("source_path") or "")
        if url:
            url = _check_url(str(url), where)
        elif not (_REPO.match(repo) and _COMMIT.match(commit) and path and ".." not in path.split("/")):
            raise SourcesError(f"{where}: no public source: needs `source_repo` (GitHub owner/name), "
                               "`source_commit` (40 hex digits) and `source_path`, or a `source_url`")
        out.append(Source(file=file, repo=repo, path=path.lstrip("/"), commit=commit, sha256=sha,
                          size=size, license=str(e.get("license") or ""), url=url))
    return out


def load(path: Path) -> list[Source]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourcesError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourcesError(f"{path}: not readable as JSON ({type(exc).__name__})") from None
    return parse(records, origin=str(path))


def dump(sources: list[Source]) -> str:
    """The committed form: source fields only, one entry per file, stable order."""
    return json.dumps([s.as_record() for s in sources], indent=1, ensure_ascii=False) + "\n"
