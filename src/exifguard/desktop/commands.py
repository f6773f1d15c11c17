"""Running the operating system's own tools: one small interface for `service` and `sysproxy`.

Both plan their changes as command lines first (so `--dry-run` can print them) and run
them through a `Runner`, which tests replace with a fake: nothing in the tests touches the
real systemd, launchd, Task Scheduler, gsettings or registry.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TIMEOUT_S = 60


@dataclass(frozen=True)
class Result:
    """A finished command: exit code and what it printed."""

    returncode: int
    stdout: str = ""
    stderr: str = ""


Runner = Callable[[Sequence[str]], Result]


def subprocess_runner(argv: Sequence[str]) -> Result:
    """Run a command without a shell, never longer than a minute; a missing program is exit
    code 127 and a hung one 124 (as the shell would say), never an exception."""
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return Result(127, "", f"{argv[0]}: not found")
    except subprocess.TimeoutExpired:
        return Result(124, "", f"{argv[0]}: no answer within {TIMEOUT_S} s")
    return Result(p.returncode, p.stdout, p.stderr)
