"""Access to the real-image corpus (real images with real metadata; test use only).

The corpus folder is $EXIFGUARD_CORPUS, else ../shared/corpus next to the checkout.
`./scripts/fetch-corpus` downloads it from its public sources (tests/support/corpus-sources.json)
and writes the manifest.json this module reads.  The product never reads the corpus; tests
skip cleanly when it is absent, and every skip says how to get it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("EXIFGUARD_CORPUS") or REPO.parent / "shared" / "corpus").expanduser()
#: The command that gets the corpus, as a person runs it from the checkout.
FETCH = "./scripts/fetch-corpus"


def _undescribed() -> bool:
    """Images are there but manifest.json is not (fetched without ExifTool, or copied by hand)."""
    return CORPUS.is_dir() and any(CORPUS.glob("images/*")) and not (CORPUS / "manifest.json").exists()


def how_to_get() -> str:
    """What to run so that the corpus tests run (added to every corpus skip)."""
    if _undescribed():
        return f"run {FETCH} (it fetches what is missing and writes manifest.json with ExifTool)"
    if os.environ.get("EXIFGUARD_CORPUS"):
        return f"get it with {FETCH} (downloads it there from its public sources)"
    return (f"get it with {FETCH} (downloads it there from its public sources), or elsewhere with "
            f"EXIFGUARD_CORPUS=$HOME/exifguard-corpus {FETCH} (the tests then need the same EXIFGUARD_CORPUS)")


def missing(what: str | None = None) -> str:
    """A skip reason for a test that needs corpus files: what is missing, and how to get it."""
    if what is None:
        where = (f"the corpus at {CORPUS} has images but no manifest.json" if _undescribed()
                 else f"corpus not found at {CORPUS}")
    else:
        where = f"{what} not found in the corpus at {CORPUS}"
    return f"{where}: {how_to_get()}"


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
        reason = (missing() if not manifest()
                  else f"the corpus at {CORPUS} has no {'broken ' if broken else ''}"
                       f"{'/'.join(formats) or 'any'} files")
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason))]
    return [pytest.param(f, id=f.name) for f in fs]
