"""Engine-wide guarantees that hold for every format walker."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from exifguard import ScrubError, scrub
from exifguard.engine import ScrubOptions
from support import corpus

ENGINE = Path(importlib.import_module("exifguard.engine").__file__).parent


@pytest.mark.parametrize("f", corpus.params(broken=None))
def test_every_corpus_file_is_cleaned_or_refused_never_crashes(f) -> None:
    data = f.data
    try:
        res = scrub(data)
    except ScrubError as exc:
        assert str(exc), "ScrubError needs a message a person can read"
        assert f.broken, f"{f.name}: a well-formed {f.format} file was refused: {exc}"
        return
    assert len(res.data) == len(data)
    again = scrub(res.data)
    assert again.data == res.data, "scrub is not idempotent"
    compact = scrub(data, options=ScrubOptions(preserve_length=False))
    assert len(compact.data) <= len(data)


@pytest.mark.parametrize("f", corpus.params(broken=False))
def test_reports_name_no_values_by_default(f) -> None:
    res = scrub(f.data)
    for r in res.removed:
        assert r.values == ()
        assert r.carrier and r.categories
    d = res.to_dict()
    assert "values" not in str(d)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = ("." * node.level) + (node.module or "")
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("path", sorted((ENGINE / "verify").glob("*.py")), ids=lambda p: p.name)
def test_verifiers_do_not_share_the_writers_code(path: Path) -> None:
    for name in _imports(path):
        assert "formats" not in name, f"{path.name} imports {name}: verifiers must walk independently"


@pytest.mark.parametrize("path", sorted(ENGINE.rglob("*.py")), ids=lambda p: str(p.relative_to(ENGINE)))
def test_engine_knows_nothing_of_http(path: Path) -> None:
    for name in _imports(path):
        root = name.lstrip(".").split(".")[0]
        assert root not in {"mitmproxy", "httpx", "http", "urllib", "requests"}, f"{path}: imports {name}"
        assert "carriers" not in name and "proxy" not in name and "cli" not in name
