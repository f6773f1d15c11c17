"""How exifguard spells itself in printed commands, per platform and working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from exifguard.cli import locations

ROOT = locations.repo_root()
pytestmark = pytest.mark.skipif(ROOT is None, reason="runs from a checkout only")


def test_checkout_prefix_on_posix():
    assert locations.command_prefix(ROOT, windows=False) == "./scripts/exifguard"
    assert locations.command_prefix(Path("/"), windows=False) == str(ROOT / "scripts" / "exifguard")


def test_checkout_prefix_on_windows_is_the_powershell_twin():
    assert locations.command_prefix(ROOT, windows=True) == ".\\scripts\\exifguard.ps1"
    far = locations.command_prefix(Path("/"), windows=True)
    # an absolute script path runs in PowerShell only through the call operator
    assert far.startswith("& '") and far.endswith("exifguard.ps1'")


def test_powershell_twin_does_what_the_bash_script_does():
    """No PowerShell on this machine: check the twin's steps against the bash script's."""
    ps1 = (ROOT / "scripts" / "exifguard.ps1").read_text()
    sh = (ROOT / "scripts" / "exifguard").read_text()
    for step in ("-m venv", "pip install -q --disable-pip-version-check -e", ".installed", "3, 11"):
        assert step in sh and step in ps1, step
    assert "Scripts\\exifguard.exe" in ps1 and "@('run')" in ps1 and "$env:PYTHON" in ps1
    assert "exit $LASTEXITCODE" in ps1  # the exit code of exifguard is the script's
