"""The compared cleaners, each behind one small interface.

Per-file tools clean one image at a time and are timed per image:
  exifguard (in-process), Pillow decode + re-save, piexif.remove (in-process),
  `exiftool -all=` one process per file, and `exiftool -stay_open True -@ -` (one resident
  process fed one command per image).
Folder tools clean a whole folder in one process and are timed per folder:
  the exifguard CLI, `exiftool -all=` over the folder, and mat2.

A tool that cannot clean an image reports a failure for that image; nothing crashes
the harness (formats whose walker is not written yet raise UnsupportedFormat).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .common import VENV_BIN, proc_status_kb, python_child_env, run_proc

PILLOW_SAVE_FORMAT = {"MPO": "JPEG"}


class ToolFailed(Exception):
    """The tool could not clean this image (message names the reason, never a value)."""


# ---- in-process per-file tools --------------------------------------------------------------
def exifguard_inproc(data: bytes) -> bytes:
    from exifguard import scrub
    return scrub(data).data


def pillow_resave(data: bytes) -> bytes:
    """What an image editor's "save as" does: decode every pixel, encode again."""
    from PIL import Image
    try:
        im = Image.open(io.BytesIO(data))
        fmt = PILLOW_SAVE_FORMAT.get(im.format, im.format)
        kwargs: dict = {}
        if fmt == "JPEG":
            kwargs["quality"] = "keep" if im.format in ("JPEG", "MPO") else 95
        if getattr(im, "n_frames", 1) > 1 and fmt in ("GIF", "WEBP", "PNG", "TIFF"):
            kwargs["save_all"] = True
        im.load()
        out = io.BytesIO()
        im.save(out, fmt, **kwargs)
        return out.getvalue()
    except Exception as exc:  # Pillow raises many types for unsupported formats
        raise ToolFailed(f"Pillow: {type(exc).__name__}") from exc


def piexif_remove(data: bytes) -> bytes:
    """piexif.remove: drops the first Exif APP1 (JPEG) or the EXIF chunk (WebP), nothing else."""
    import piexif
    if not (data[:2] == b"\xff\xd8" or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")):
        raise ToolFailed("piexif handles JPEG and WebP only")
    out = io.BytesIO()
    try:
        piexif.remove(data, out)
    except Exception as exc:
        raise ToolFailed(f"piexif: {type(exc).__name__}") from exc
    return out.getvalue()


IN_PROCESS = {"exifguard (in-process)": exifguard_inproc,
              "Pillow re-save": pillow_resave,
              "piexif.remove": piexif_remove}


def register_heif() -> bool:
    try:
        import pillow_heif
        pillow_heif.register_heif_opener()
        return True
    except Exception:  # optional: without it HEIC/AVIF count as Pillow failures
        return False


# ---- exiftool ---------------------------------------------------------------------------------
EXIFTOOL = "exiftool"


def exiftool_one(src: Path, dst: Path) -> tuple[float, int]:
    """One perl process for one file (what a shell loop or a file manager action does).

    The output is named as a directory (`-o DIR/`): exiftool 12.57 refuses `-o x.webp`
    ("Can't write RIFF files") but writes the same WebP through `-o DIR/`.
    """
    p = run_proc([EXIFTOOL, "-q", "-q", "-all=", "-o", str(dst.parent) + "/", str(src)])
    if p.returncode != 0 or not dst.exists():
        raise ToolFailed(f"exiftool exit {p.returncode}")
    return p.seconds, p.maxrss_kb


class ExiftoolStayOpen:
    """`exiftool -stay_open True -@ -`: one resident process, one `-execute` per image."""

    def __init__(self) -> None:
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([EXIFTOOL, "-stay_open", "True", "-@", "-"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.n = 0
        self._command(["-ver"])  # wait until perl has loaded
        self.startup = time.perf_counter() - t0

    def _command(self, args: list[str]) -> bytes:
        self.n += 1
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(("\n".join(args) + f"\n-execute{self.n}\n").encode())
        self.proc.stdin.flush()
        marker = f"{{ready{self.n}}}".encode()
        out = b""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise ToolFailed("exiftool -stay_open process died")
            if line.strip() == marker:
                return out
            out += line

    def clean(self, src: Path, dst: Path) -> float:
        t0 = time.perf_counter()
        self._command(["-q", "-q", "-all=", "-o", str(dst.parent) + "/", str(src)])
        dt = time.perf_counter() - t0
        if not dst.exists():
            raise ToolFailed("exiftool -stay_open wrote nothing")
        return dt

    def peak_rss_kb(self) -> int:
        return proc_status_kb(self.proc.pid, "VmHWM")

    def close(self) -> None:
        try:
            assert self.proc.stdin
            self.proc.stdin.write(b"-stay_open\nFalse\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, AssertionError):
            self.proc.kill()
            self.proc.wait()


# ---- folder tools ------------------------------------------------------------------------------
@dataclass
class FolderRun:
    seconds: float
    maxrss_kb: int
    outputs: dict[str, Path]  # input name -> cleaned file (missing = failed)
    note: str = ""


PYCACHE: Path | None = None  # set by the harness: where the CLI's bytecode is cached


def cli_argv() -> list[str]:
    exe = VENV_BIN / "exifguard"
    return [str(exe)] if exe.exists() else [str(VENV_BIN / "python"), "-m", "exifguard.cli"]


def cli_env() -> dict[str, str] | None:
    return python_child_env(PYCACHE) if PYCACHE is not None else None


def warm_cli(sample: Path, out: Path) -> None:
    """One untimed CLI run, so the timed ones start with compiled bytecode (as installed)."""
    out.mkdir(parents=True, exist_ok=True)
    run_proc(cli_argv() + ["scrub", "-q", str(sample), "-o", str(out / sample.name)], env=cli_env())


def exifguard_cli_folder(files: list[Path], out: Path) -> FolderRun:
    out.mkdir(parents=True, exist_ok=True)
    p = run_proc(cli_argv() + ["scrub", "-q", *map(str, files), "-o", str(out)], env=cli_env())
    outs = {f.name: out / f.name for f in files if (out / f.name).exists()}
    return FolderRun(p.seconds, p.maxrss_kb, outs, "" if p.returncode == 0 else f"exit {p.returncode}")


def exiftool_folder(files: list[Path], out: Path) -> FolderRun:
    out.mkdir(parents=True, exist_ok=True)
    p = run_proc([EXIFTOOL, "-q", "-q", "-all=", "-o", str(out) + "/", *map(str, files)])
    outs = {f.name: out / f.name for f in files if (out / f.name).exists()}
    return FolderRun(p.seconds, p.maxrss_kb, outs, "" if p.returncode == 0 else f"exit {p.returncode}")


def mat2_folder(files: list[Path], work: Path) -> FolderRun:
    """mat2 on copies (it writes NAME.cleaned.EXT beside each input); copying is not timed."""
    work.mkdir(parents=True, exist_ok=True)
    copies = []
    for f in files:
        c = work / f.name
        shutil.copyfile(f, c)
        copies.append(c)
    p = run_proc(["mat2", *map(str, copies)])
    outs = {}
    for c in copies:
        cleaned = c.with_name(f"{c.stem}.cleaned{c.suffix}")
        if cleaned.exists():
            outs[c.name] = cleaned
    return FolderRun(p.seconds, p.maxrss_kb, outs, "" if p.returncode == 0 else f"exit {p.returncode}")


FOLDER_TOOLS = {"exifguard CLI (folder)": exifguard_cli_folder,
                "exiftool (one process, folder)": exiftool_folder,
                "mat2 (one process, folder)": mat2_folder}


def available(name: str) -> bool:
    return shutil.which(name) is not None
