"""Minimised fuzz findings (scripts/fuzz, /work/notes/fuzz-findings.md) kept as regressions.

Every file in `regressions/` is generated (no corpus bytes) and carries the fuzzer's
canary somewhere the engine used to keep.  Each must now be refused with ScrubError or
cleaned: same length, no canary in any encoding, accepted by the verifier, idempotent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exifguard import ScrubError, scrub
from exifguard.engine import ScrubOptions
from support import canary

HERE = Path(__file__).parent / "regressions"
FUZZ_CANARY = b"EGFUZZCANARY31415"
FILES = sorted(HERE.iterdir())


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("preserve", [True, False], ids=["in-place", "compact"])
def test_fuzz_finding_is_refused_or_clean(path: Path, preserve: bool) -> None:
    data = path.read_bytes()
    opts = ScrubOptions(preserve_length=preserve)
    try:
        res = scrub(data, options=opts)
    except ScrubError as exc:
        assert str(exc) and "EGFUZZ" not in str(exc)
        return
    if preserve:
        assert len(res.data) == len(data)
    assert canary.find(res.data, FUZZ_CANARY) == []
    assert "EGFUZZ" not in repr(res.removed) + repr(res.kept)
    assert scrub(res.data, options=opts).data == res.data


def test_regression_files_are_present() -> None:
    assert len(FILES) >= 6
