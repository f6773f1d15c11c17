"""ExifTool as the independent oracle, judged against explicit per-format allowlists.

Every key ExifTool reports for a cleaned file must match a pattern in
`allowlists/<FORMAT>.txt` (plus `allowlists/COMMON.txt`).  Anything new — a tag we
never thought of — fails the test, as in mat2's suite.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest

ALLOWLISTS = Path(__file__).with_name("allowlists")
EXIFTOOL_ARGS = ["-j", "-a", "-u", "-G1", "-ee3", "-api", "RequestAll=3", "-api", "LargeFileSupport=1"]
IGNORED_GROUPS = ("ExifTool:", "System:")
IGNORED_KEYS = {"SourceFile"}
FORMAT_ALIASES = {"HEIF": "HEIC"}


def exiftool_available() -> bool:
    return shutil.which("exiftool") is not None


requires_exiftool = pytest.mark.skipif(not exiftool_available(),
                                       reason="exiftool missing: apt-get install libimage-exiftool-perl")


def exiftool_files(paths: list[Path]) -> dict[str, dict]:
    """Run ExifTool once over several files; returns {path: tags}."""
    if not paths:
        return {}
    proc = subprocess.run(["exiftool", *EXIFTOOL_ARGS, *map(str, paths)], capture_output=True,
                          timeout=300)
    if not proc.stdout.strip():
        raise AssertionError(f"exiftool printed nothing: {proc.stderr.decode(errors='replace')}")
    return {d["SourceFile"]: d for d in json.loads(proc.stdout)}


def exiftool_bytes(data: bytes, suffix: str = ".bin") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / f"img{suffix}"
        p.write_bytes(data)
        return exiftool_files([p])[str(p)]


@lru_cache(maxsize=None)
def allowlist(fmt: str) -> tuple[str, ...]:
    fmt = FORMAT_ALIASES.get(fmt, fmt)
    pats: list[str] = []
    for name in ("COMMON", fmt):
        f = ALLOWLISTS / f"{name}.txt"
        if f.exists():
            for line in f.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    pats.append(line)
    return tuple(pats)


def leaks(fmt: str, tags: dict) -> list[str]:
    """Keys ExifTool reported that are not allowlisted for this format (with values elided)."""
    pats = allowlist(fmt)
    bad = []
    for key in tags:
        if key in IGNORED_KEYS or key.startswith(IGNORED_GROUPS):
            continue
        if not any(fnmatch.fnmatchcase(key, p) for p in pats):
            bad.append(key)
    return sorted(bad)
