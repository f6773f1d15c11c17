"""One `exifguard run` per certs folder and per port.

Why: a second `run` on a busy port used to print the full "proxy running" banner, then
mitmproxy's own advice (`--mode regular@8082`, not an exifguard flag), and on its way
out deleted the *running* instance's run.json, so `selftest` lost it.  Now a run first
takes an exclusive, non-blocking `flock` on `<certs>/run.lock` and on a per-user lock
for its port; whoever holds them is reported ("already running (pid N, port P)") and
nothing of theirs is touched.  The kernel drops a flock when its holder dies, even by
`kill -9`, so a stale lock never blocks a new run.  Where `fcntl` is missing (Windows)
the locks are skipped and only the port probe remains.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "run.lock"


@dataclass
class Holder:
    """What a lock's holder wrote about itself (best effort: it may be mid-write)."""
    pid: int | None = None
    port: int | None = None
    certs: str | None = None

    def describe(self) -> str:
        bits = [f"pid {self.pid}" if self.pid else "pid unknown"]
        if self.port:
            bits.append(f"port {self.port}")
        if self.certs:
            bits.append(f"certs {self.certs}")
        return ", ".join(bits)


class InstanceLock:
    """An exclusive flock on a small file that also names its holder (JSON)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> Holder | None:
        """Take the lock; returns None on success, else what the holder wrote."""
        if fcntl is None:  # pragma: no cover
            return None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return self.holder()
            raise
        self.fd = fd
        return None

    def describe_self(self, **info: Any) -> None:
        """Write who we are into the lock file (read by a second run)."""
        if self.fd is None:
            return
        data = json.dumps({k: v for k, v in info.items() if v is not None}).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def holder(self) -> Holder:
        try:
            d = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            d = {}
        if not isinstance(d, dict):
            d = {}
        return Holder(d.get("pid") if isinstance(d.get("pid"), int) else None,
                      d.get("port") if isinstance(d.get("port"), int) else None,
                      d.get("certs") if isinstance(d.get("certs"), str) else None)

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def runtime_dir() -> Path | None:
    """A private per-user directory for the port locks, or None if none can be trusted."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    d = Path(base) / "exifguard" if base and Path(base).is_dir() else \
        Path(tempfile.gettempdir()) / f"exifguard-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    try:
        d.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(d)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()) \
            or st.st_mode & 0o077:
        return None  # someone else's, a symlink, or readable by others: do not use it
    return d


def port_lock(port: int) -> InstanceLock | None:
    d = runtime_dir()
    return InstanceLock(d / f"port-{port}.lock") if d is not None else None


def _bind_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "localhost") else host


def port_free(host: str, port: int) -> bool:
    """Could mitmproxy listen on host:port now?  (SO_REUSEADDR as asyncio servers use it,
    so a port in TIME_WAIT counts as free.)"""
    h = _bind_host(host)
    fam = socket.AF_INET6 if ":" in h else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        if os.name != "nt":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((h, port))
        except OSError:
            return False
    return True


def free_port(host: str, near: int | None = None) -> int:
    """A port that is free now: the next few after `near` first (easy to remember), else any."""
    if near:
        for p in range(near + 1, min(near + 20, 65535)):
            if port_free(host, p) and port_free(host, p + 1):  # +1: the PAC port
                return p
    h = _bind_host(host)
    fam = socket.AF_INET6 if ":" in h else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((h, 0))
        return int(s.getsockname()[1])
