"""Timing, statistics and subprocess helpers shared by the benchmark parts."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


@dataclass
class Series:
    """Repeated measurements of one quantity (seconds, unless said otherwise)."""

    values: list[float] = field(default_factory=list)

    def add(self, v: float) -> None:
        self.values.append(v)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def min(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def max(self) -> float:
        return max(self.values) if self.values else float("nan")


@dataclass
class Proc:
    """A finished child process with its own resource usage (from wait4, not RUSAGE_CHILDREN)."""

    returncode: int
    seconds: float
    maxrss_kb: int
    stdout: bytes
    stderr: bytes


def run_proc(argv: list[str], *, timeout: float = 600, cwd: Path | None = None,
             env: dict | None = None) -> Proc:
    """Run a command; return wall time and *that child's* peak RSS.

    Peak RSS comes from GNU time (`/usr/bin/time -f %M`) when installed: Linux carries a
    process's RSS high-water mark across exec, so the rusage of a child forked straight from
    this (large) Python process would report *our* size.  GNU time is a small process, so
    its child's figure is the tool's own.  Without it, os.wait4's ru_maxrss is used (an
    overestimate).  RUSAGE_CHILDREN is never used: it is the maximum over every child ever
    waited for.  Output goes to temporary files so no pipe can fill up.
    """
    import tempfile
    import threading

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(prefix="bench-rss-") as rssf:
        if GNU_TIME:
            argv = [GNU_TIME, "-f", "%M", "-o", rssf.name, *argv]
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, env=env)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        t1 = time.perf_counter()
        p.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it is reaped
        out.seek(0)
        err.seek(0)
        rss = ru.ru_maxrss
        if GNU_TIME:
            try:
                rss = int(Path(rssf.name).read_text().split()[-1])
            except (OSError, ValueError, IndexError):
                rss = 0
        return Proc(p.returncode, t1 - t0, rss, out.read(), err.read())


def python_child_env(cache: Path) -> dict[str, str]:
    """Environment for timed Python child processes (the exifguard CLI).

    This machine exports PYTHONDONTWRITEBYTECODE=1, so every CLI start would compile its
    modules from source (about 50 ms), which an installed package never does.  Bytecode
    goes to a private cache under the benchmark's temporary folder instead (nothing is
    written into the checkout), and callers run the CLI once before timing it.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def proc_status_kb(pid: int, key: str) -> int:
    """VmHWM / VmRSS of a live process, in kB (0 if unavailable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tool_version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "missing"
    try:
        out = subprocess.run(argv, capture_output=True, timeout=30, text=True)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def environment() -> dict[str, str]:
    """What the report header needs to make the numbers interpretable."""
    import importlib.metadata as md

    def pkg(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "missing"

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpus": str(os.cpu_count()),
        "cpu model": cpu,
        "load average at start (1/5/15 min)": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "exifguard": pkg("exifguard"),
        "mitmproxy": pkg("mitmproxy"),
        "Pillow": pkg("Pillow"),
        "pillow-heif": pkg("pillow-heif"),
        "piexif": pkg("piexif"),
        "exiftool": tool_version(["exiftool", "-ver"]),
        "mat2": tool_version(["mat2", "--version"]),
    }


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def fmt_ms(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "–"
    ms = seconds * 1000
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def fmt_range_ms(s: Series) -> str:
    if not s.n:
        return "–"
    return f"{fmt_ms(s.median)} ({fmt_ms(s.min)}–{fmt_ms(s.max)})"


def fmt_ratio(x: float) -> str:
    if x != x or x in (float("inf"), float("-inf")):
        return "–"
    if x >= 100:
        return f"{x:.0f}x"
    if x >= 10:
        return f"{x:.1f}x"
    return f"{x:.2f}x"


def rotate(items: list, k: int) -> list:
    """Round k runs the compared commands in a different order (interleaved rounds)."""
    if not items:
        return items
    k %= len(items)
    return items[k:] + items[:k]
