"""Where things are, and how to spell `exifguard` in a command we print.

Why one helper: the banner used to print `chromium --proxy-pac-url="$(exifguard pac
--data-url)"`, but in a checkout `exifguard` is not on PATH, the command substitution
printed nothing, and Chromium went DIRECT (uncleaned).  Every command exifguard prints
(banner, --help, error messages) takes its prefix from `command_prefix()` so it runs as
printed.  Pure module: no imports from the rest of exifguard, so `proxy` may use it too.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def repo_root() -> Path | None:
    """The checkout this package runs from (src layout), or None for an installed package."""
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").is_file() and (root / "src" / "exifguard").is_dir():
        return root
    return None


def console_script() -> Path:
    """The `exifguard` console script next to this interpreter (it may not exist)."""
    return Path(sys.executable).parent / ("exifguard.exe" if os.name == "nt" else "exifguard")


def command_prefix(cwd: Path | None = None, *, windows: bool | None = None) -> str:
    """What to type for `exifguard` so a printed command runs as printed (shell-quoted).

    * in a checkout: `./scripts/exifguard` from the checkout root, else its absolute path
      (the script sets up the venv on first use); on Windows `.\\scripts\\exifguard.ps1`, its
      PowerShell twin;
    * installed, with this interpreter's console script first on PATH: `exifguard`;
    * otherwise the console script's absolute path, or `python -m exifguard.cli`.
    """
    root = repo_root()
    if windows is None:
        windows = os.name == "nt"
    if root is not None and windows and (root / "scripts" / "exifguard.ps1").is_file():
        # PowerShell: a relative script runs as .\..., an absolute quoted one needs `&`
        here = cwd if cwd is not None else _cwd()
        if here is not None and here == root:
            return ".\\scripts\\exifguard.ps1"
        return "& '" + str(root / "scripts" / "exifguard.ps1").replace("'", "''") + "'"
    if root is not None and (root / "scripts" / "exifguard").is_file():
        here = cwd if cwd is not None else _cwd()
        if here is not None and here == root:
            return "./scripts/exifguard"
        return shlex.quote(str(root / "scripts" / "exifguard"))
    script = console_script()
    found = shutil.which("exifguard")
    if script.exists():
        if found and Path(found).resolve() == script.resolve():
            return "exifguard"
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m exifguard.cli"


def _cwd() -> Path | None:
    try:
        return Path.cwd().resolve()
    except OSError:  # the working directory was removed
        return None


def default_certs_dir() -> Path:
    env = os.environ.get("EXIFGUARD_CERTS")
    if env:
        return Path(env).expanduser()
    root = repo_root()
    if root is not None:
        return root / "certs"
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "exifguard" / "certs"
