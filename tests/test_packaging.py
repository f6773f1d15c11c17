"""The built wheel, installed in a fresh venv outside the checkout, is a working exifguard.

Why a real wheel and a real install: the checkout's editable install hides what a wheel
leaves out (the README once named `addons/exifguard_addon.py`, which no wheel carries),
and `./scripts/exifguard` hides what `pip install`/`pipx install` users type.  One build
and one install (dependencies come from the package index pip is configured with; about
15 s here), then the commands a new user runs first.

The source is copied to a temporary folder first: building in the shared checkout would
write build/ and *.egg-info there while others work in it.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
HANG = 600  # hang protection only: an install may download dependencies

pytestmark = pytest.mark.packaging


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=HANG, **kw)


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.lower().endswith("_proxy")}
    env["EXIFGUARD_CERTS"] = str(tmp / "certs")
    env["HOME"] = str(tmp / "home")  # nothing of the person's ~/.config or ~/.pki is touched
    (tmp / "home").mkdir(exist_ok=True)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh venv with the wheel built from this checkout installed."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    wheels = tmp / "wheels"
    p = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
              "-w", str(wheels), str(src)])
    assert p.returncode == 0, p.stdout + p.stderr
    (wheel,) = wheels.glob("exifguard-*.whl")
    import zipfile
    names = zipfile.ZipFile(wheel).namelist()
    for want in ("exifguard/proxy/mitmdump_script.py", "exifguard/proxy/services.toml",
                 "exifguard/cli/quiet_connections.py"):
        assert want in names, f"the wheel lacks {want}"
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    venv = tmp / "venv"
    p = _run([sys.executable, "-m", "venv", str(venv)])
    assert p.returncode == 0, p.stderr
    p = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              str(wheel)], cwd=tmp)
    assert p.returncode == 0, p.stdout + p.stderr
    return venv / "bin"


def test_help_addon_path_and_inspect_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    exe = str(installed / "exifguard")
    env = _env(tmp_path)
    p = _run([exe, "--help"], cwd=tmp_path, env=env)
    assert p.returncode == 0 and "addon-path" in p.stdout and "selftest" in p.stdout, p.stderr

    p = _run([exe, "addon-path"], cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    script = Path(p.stdout.strip())
    assert script.is_file() and script.is_relative_to(installed.parent), script  # the venv's, not the checkout's
    assert "addons = install()" in script.read_text()

    exif = Image.Exif()
    exif[0x010F] = "CanaryCam"
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}
    photo = tmp_path / "photo.jpg"
    buf = io.BytesIO()
    Image.new("RGB", (32, 16), (9, 9, 9)).save(buf, "JPEG", exif=exif.tobytes())
    photo.write_bytes(buf.getvalue())
    p = _run([exe, "inspect", str(photo)], cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    assert "GPSLatitude" in p.stdout and "location" in p.stdout and "CanaryCam" not in p.stdout


def test_exifguard_alone_runs_the_proxy(installed: Path, tmp_path: Path) -> None:
    """`exifguard` with no arguments is `exifguard run` (port 8080: if something else holds it
    here, the run's own "in use"/"already running" answer still proves it was `run`)."""
    env = _env(tmp_path)
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen([str(installed / "exifguard")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            out.append(line)
            if "stop: Ctrl-C" in line or "in use" in line or "already running" in line \
                    or time.monotonic() > deadline:
                break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = "".join(out)
    ran = "exifguard proxy: http://127.0.0.1:8080  (ready" in text or "port 8080" in text \
        or "already running" in text
    assert ran, text
    assert "usage:" not in text


def test_service_and_proxy_dry_runs_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    """Issue 12's check: from a wheel in a clean venv, `service install --dry-run` and
    `proxy on --dry-run` print what they would change on this OS, and change nothing."""
    exe = str(installed / "exifguard")
    env = _env(tmp_path)
    home = Path(env.get("HOME", str(tmp_path)))
    before = sorted(p.relative_to(home) for p in home.rglob("*")) if home.is_dir() else []
    p = _run([exe, "service", "install", "--dry-run"], cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    if sys.platform.startswith("linux"):
        # the unit runs the wheel's own exifguard, by absolute path
        assert "exifguard.service" in p.stdout and f"ExecStart={installed / 'exifguard'} run" in p.stdout, p.stdout
        assert "systemctl --user enable --now exifguard.service" in p.stdout
    p = _run([exe, "proxy", "on", "--dry-run"], cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "exifguard proxy on" in p.stdout and ("would" in p.stdout or "nothing would change" in p.stdout)
    after = sorted(p.relative_to(home) for p in home.rglob("*")) if home.is_dir() else []
    assert [x for x in after if "systemd" in str(x) or "LaunchAgents" in str(x)] == \
        [x for x in before if "systemd" in str(x) or "LaunchAgents" in str(x)]
