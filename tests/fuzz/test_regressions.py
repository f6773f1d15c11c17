"""Replay every minimised fuzz finding kept under tests/fuzz/regressions with the fuzzer's invariants.

A finding becomes a file here once it is understood (see scripts/fuzzlib/README.md).  Status
"fixed": every invariant must hold.  Status "open": the bug is known and reported in the
fuzz findings note but not fixed yet; the test expects it to still fail (xfail, not strict,
so the fix lands without touching this file; flip the status to "fixed" then).
"""

from __future__ import annotations

import json

import pytest

from fuzzlib import replay


def _params() -> list:
    out = []
    for path in replay.cases():
        meta_path = path.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        marks = []
        if meta.get("status") == "open":
            marks.append(pytest.mark.xfail(reason=f"open fuzz finding: {meta.get('message', '')[:120]}",
                                           strict=False))
        out.append(pytest.param(path, id=f"{path.parent.name}/{path.stem}", marks=marks))
    if not out:
        out.append(pytest.param(None, marks=pytest.mark.skip(reason="no regression files yet")))
    return out


@pytest.mark.parametrize("path", _params())
def test_regression_file_keeps_every_invariant(path) -> None:
    violations = replay.replay(path)
    assert not violations, "; ".join(f"{v.kind}: {v.message}" for v in violations)


def test_regression_files_are_generated_not_corpus() -> None:
    """Regression inputs come from generated seeds only: no printable run that no generated
    seed holds (a corpus splice could carry a real person's metadata into the repository)."""
    for path in replay.cases():
        data = path.read_bytes()
        if path.parent.name == "carriers":
            continue  # request bodies add their own wrapper text; their images were checked at export
        assert replay.foreign_text(data) == [], path.name
