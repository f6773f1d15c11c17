"""Access to ../shared/corpus (real images with real metadata; test use only).

The product never reads the corpus; tests skip cleanly when it is absent.
Set EXIFGUARD_CORPUS to point elsewhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("EXIFGUARD_CORPUS", REPO.parent / "shared" / "corpus"))


@dataclass(frozen=True)
class CorpusFile:
    name: str
    path: Path
    format: str
    entry: dict

    @property
    def broken(self) -> bool:
        return self.name.startswith("broken_") or not self.entry.get("decodes_with_pillow", True)

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()

    def __str__(self) -> str:  # readable pytest ids
        return self.name


@lru_cache(maxsize=1)
def manifest() -> tuple[CorpusFile, ...]:
    path = CORPUS / "manifest.json"
    if not path.exists():
        return ()
    out = []
    for e in json.loads(path.read_text()):
        p = CORPUS / e["file"]
        out.append(CorpusFile(p.name, p, e["format"], e))
    return tuple(out)


@lru_cache(maxsize=1)
def before_state() -> dict:
    path = CORPUS / "exiftool_g1.json"
    return json.loads(path.read_text()) if path.exists() else {}


def files(*formats: str, broken: bool | None = False) -> list[CorpusFile]:
    """Corpus files of these formats (all formats if none given).

    broken=False: only files that decode; True: only broken ones; None: all.
    """
    out = [f for f in manifest() if (not formats or f.format in formats)]
    if broken is not None:
        out = [f for f in out if f.broken == broken]
    return out


def params(*formats: str, broken: bool | None = False) -> list:
    """pytest parameters (with ids) for corpus files; a single skip marker if no corpus."""
    fs = files(*formats, broken=broken)
    if not fs:
        reason = (f"corpus not found at {CORPUS}" if not manifest()
                  else f"the corpus has no {'broken' if broken else ''} {'/'.join(formats) or 'any'} files")
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason))]
    return [pytest.param(f, id=f.name) for f in fs]
