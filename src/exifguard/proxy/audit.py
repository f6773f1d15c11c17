"""JSON Lines audit log: one record per image, file mode 0600.

A record says what exifguard did, never what the metadata said:

    {"time": "2025-01-02T03:04:05.678Z", "host": "claude.ai", "path": "/api/.../upload-file",
     "method": "POST", "request_id": "...", "carrier": "multipart part 'file'", "format": "JPEG",
     "input_bytes": 3100000, "output_bytes": 3100000, "action": "stripped",
     "removed": [{"carrier": "APP1 Exif", "tags": ["GPSLatitude", ...], "categories": ["location"]}],
     "categories": ["device", "location", "time"], "tags": [...], "kept": ["orientation"],
     "sha256": "<of the clean output>", "error": null}

The path never has its query string (signed upload URLs carry credentials there).
Metadata values and the original file name are included only with log_values.
`json.dumps(ensure_ascii=True)` escapes every control and non-ASCII character, so a
hostile tag name cannot break a line or inject terminal escapes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..engine.report import ScrubResult


def strip_query(path: str) -> str:
    """"/files/x/raw?sig=SECRET" -> "/files/x/raw" (also drops a fragment)."""
    return path.split("?", 1)[0].split("#", 1)[0]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ImageRecord:
    host: str
    path: str
    method: str
    request_id: str
    carrier: str
    format: str | None
    input_bytes: int
    action: str
    result: ScrubResult | None = None
    error: str | None = None
    filename: str | None = None
    selftest: bool = False
    extra: tuple[tuple[str, str], ...] = ()
    """Who and how, where the front end knows it (ICAP: ``via``, ``client_ip``, ``user``)."""

    def to_dict(self, *, with_values: bool = False, time: str | None = None) -> dict[str, Any]:
        r = self.result
        d: dict[str, Any] = {
            "time": time or utc_now(),
            "host": self.host,
            "path": strip_query(self.path),
            "method": self.method,
            "request_id": self.request_id,
            "carrier": self.carrier,
            "format": self.format,
            "input_bytes": self.input_bytes,
            "output_bytes": len(r.data) if r is not None else None,
            "action": self.action,
            "removed": [
                {"carrier": x.carrier, "bytes": x.length, "tags": list(x.tags),
                 "categories": sorted(c.value for c in x.categories),
                 **({"values": {k: v for k, v in x.values}} if with_values and x.values else {})}
                for x in (r.removed if r is not None else ())
            ],
            "categories": sorted(c.value for c in r.categories) if r is not None else [],
            "tags": list(r.tags) if r is not None else [],
            "kept": [k.what for k in r.kept] if r is not None else [],
            "sha256": hashlib.sha256(r.data).hexdigest() if r is not None else None,
            "error": self.error,
        }
        if self.selftest:
            d["selftest"] = True
        for k, v in self.extra:
            d.setdefault(k, v)
        if with_values and self.filename:
            d["filename"] = self.filename
        return d


def open_private(path: Path) -> int:
    """Open for appending, creating with mode 0600 (and tightening an existing file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:  # pragma: no cover - e.g. a filesystem without modes
        pass
    return fd


class AuditLog:
    """Append-only JSON Lines writer, safe to call from worker threads."""

    def __init__(self, path: str | os.PathLike[str], *, with_values: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.with_values = with_values
        self._lock = threading.Lock()
        self._fd = open_private(self.path)
        self._torn = False  # the last append left part of a record: start the next on a new line

    def write(self, record: ImageRecord) -> dict[str, Any]:
        d = record.to_dict(with_values=self.with_values)
        self.append(self._line(d))
        return d

    def encode(self, record: ImageRecord) -> bytes:
        """The line `write(record)` would append now (the costly part: the output's sha256).

        Lets the proxy build a record in its worker thread and `append` it on the event
        loop, once it knows the request goes ahead.
        """
        return self._line(record.to_dict(with_values=self.with_values))

    @staticmethod
    def _line(d: dict[str, Any]) -> bytes:
        return (json.dumps(d, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")

    def append(self, line: bytes) -> None:
        """Append one line made by `encode`, whole or not at all.

        Why the loop and the truncation: on a full disk write(2) stores what fits and
        returns a short count without an error.  A torn record would be skipped by
        `read_records`, and the next record glued to it would be lost too.  So the rest is
        written until done; if the disk refuses, the file is cut back to where the record
        began (or, if even that fails, the next record starts on a fresh line) and the
        error is raised for the caller to report.
        """
        with self._lock:
            if self._fd < 0:
                raise ValueError("audit log is closed")
            if self._torn:
                line = b"\n" + line
            start = os.lseek(self._fd, 0, os.SEEK_END)
            view = memoryview(line)
            try:
                while view:
                    n = os.write(self._fd, view)
                    if n <= 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    view = view[n:]
                self._torn = False
            except OSError:
                if len(view) < len(line):  # part of the record reached the file
                    try:
                        # cut back only if nothing was appended after it meanwhile (ICAP worker
                        # processes share the file): else the next record starts a fresh line
                        if os.fstat(self._fd).st_size == start + len(line) - len(view):
                            os.ftruncate(self._fd, start)
                        else:
                            self._torn = True
                    except OSError:
                        self._torn = True
                raise
            finally:
                view.release()

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All well-formed records of an audit log (a torn last line is skipped)."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(d, dict):
                out.append(d)
    return out


def summarise(records: list[dict[str, Any]], *, include_selftest: bool = False) -> dict[str, Any]:
    """Numbers for `exifguard report`."""
    recs = [r for r in records if include_selftest or not r.get("selftest")]
    # said in the report: "0 image(s)" right after a selftest looked like a broken log
    left_out = {str(r.get("request_id") or id(r)) for r in records
                if r.get("selftest") and not include_selftest}
    actions = {a: 0 for a in ("stripped", "blocked", "passed", "audit")}
    by_site: dict[str, dict[str, int]] = {}
    by_cat: dict[str, int] = {}
    uploads: set[str] = set()
    for r in recs:
        a = str(r.get("action"))
        actions[a] = actions.get(a, 0) + 1
        site = str(r.get("host"))
        s = by_site.setdefault(site, {"images": 0, **{k: 0 for k in actions}})
        s["images"] += 1
        s[a] = s.get(a, 0) + 1
        uploads.add(str(r.get("request_id") or id(r)))
        for c in r.get("categories") or []:
            by_cat[str(c)] = by_cat.get(str(c), 0) + 1
    times = [str(r.get("time")) for r in recs if r.get("time")]
    return {
        "uploads": len(uploads),
        "images": len(recs),
        "actions": actions,
        "by_site": dict(sorted(by_site.items(), key=lambda kv: -kv[1]["images"])),
        "by_category": dict(sorted(by_cat.items(), key=lambda kv: -kv[1])),
        "first": min(times) if times else None,
        "last": max(times) if times else None,
        "selftest_uploads_not_counted": len(left_out),
    }


_CAT_PHRASES = {
    "location": "revealed a location",
    "time": "revealed when they were taken",
    "device": "revealed the camera or phone",
    "identity": "carried serial numbers or names",
    "text": "carried hidden text",
    "thumbnail": "carried a hidden thumbnail",
    "other": "carried other metadata",
}


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"exifguard report: {s['images']} image(s) in {s['uploads']} upload(s)"
             + (f", {s['first']} to {s['last']}" if s["first"] else "")]
    n = s.get("selftest_uploads_not_counted") or 0
    if n:
        lines.append(f"  {n} test upload(s) from selftest or the check page not counted; --include-selftest counts them")
    a = s["actions"]
    lines.append(f"  cleaned {a.get('stripped', 0)}, blocked {a.get('blocked', 0)}, "
                 f"passed uncleaned {a.get('passed', 0)}, audited (sent unchanged) {a.get('audit', 0)}")
    if s["by_category"]:
        lines.append("")
        for cat, n in s["by_category"].items():
            lines.append(f"  {n} image{'s' if n != 1 else ''} would have "
                         f"{_CAT_PHRASES.get(cat, 'carried ' + cat + ' metadata')}")
    if s["by_site"]:
        lines.append("")
        lines.append("  by site:")
        for site, c in s["by_site"].items():
            detail = ", ".join(f"{k} {v}" for k, v in c.items() if k != "images" and v)
            lines.append(f"    {json.dumps(site, ensure_ascii=True)[1:-1]}: {c['images']} ({detail})")
    return "\n".join(lines)
