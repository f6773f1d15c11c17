"""Smoke test for scripts/bench: a --quick run on a tiny generated input must succeed
and write a report with every section.  No timing is asserted (speed is measured by the
benchmark itself, on purpose not by tests)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "scripts" / "bench"

SECTIONS = ["# exifguard benchmarks", "## Machine", "## Targets", "## 1. Engine vs peers",
            "### Whole corpus", "### By format", "### Thoroughness and losslessness",
            "### Large photos", "## 2. Proxy overhead", "## 3. Physical floor", "## Profiles"]


def _tiny_corpus(folder: Path) -> None:
    from PIL import Image
    folder.mkdir()
    exif = Image.Exif()
    exif[0x010F] = "SmokeCam"          # Make
    exif[0x0131] = "smoke 1.0"         # Software
    exif[0x0112] = 1                   # Orientation
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "JPEG", quality=90, exif=exif.tobytes(),
                                                  comment=b"smoke comment")
    (folder / "smoke.jpg").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    Image.new("RGBA", (32, 32), (0, 90, 200, 128)).save(buf, "PNG")
    (folder / "smoke.png").write_bytes(buf.getvalue())


@pytest.mark.skipif(not os.access(BENCH, os.X_OK), reason="scripts/bench missing")
def test_bench_quick_writes_every_section(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _tiny_corpus(corpus)
    out = tmp_path / "report.md"
    parts = "engine,floor"
    venv_bin = Path(sys.executable).parent
    if (venv_bin / "mitmdump").exists() and shutil.which("openssl"):
        parts += ",proxy"
    env = dict(os.environ, EXIFGUARD_PYTHON=sys.executable)
    proc = subprocess.run([str(BENCH), "--quick", "--out", str(out), "--corpus", str(corpus),
                           "--parts", parts, "--sizes", "0.2", "--proxy-sizes", "0.2", "--requests", "4"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in SECTIONS:
        assert heading in text, f"missing section {heading!r}"
    # the engine row is there and cleaned both images; the report names the machine's CPUs
    assert "| exifguard (in-process) | 2/2 |" in text
    assert f"| cpus | {os.cpu_count()} |" in text
    assert "| photo_0.2MB.jpg |" in text  # physical floor row for the generated photo
    if "proxy" in parts:
        assert "| mitmdump + exifguard |" in text or "exifguard variant was not run" in text
    # nothing private is printed: the generated canary never appears in the report
    assert "EGBENCH-canary" not in text
