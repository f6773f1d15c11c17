"""`exifguard run --log-file PATH`: everything the run prints, in a private rotated file.

Why: started at login (`exifguard service`), the proxy has no terminal; its banner,
its line per image and mitmdump's own messages must still be somewhere a person can
read, without filling the disk.  So with a log file:

* exifguard's own output (sys.stdout/sys.stderr) is copied there line by line, and
  still goes to the original streams (a terminal, the journal) when they exist;
* mitmdump's stdout and stderr are piped and copied by one thread each (mitmdump is told
  to write unbuffered, so a line is never stuck in its buffer when it is stopped); after
  mitmdump ends, `drain()` waits (bounded) for its last lines;
* the file rotates by size (default 5 MiB, 3 old files), is created 0600 in a folder
  created 0700: the lines name services and files (never metadata values), which are
  still nobody else's business.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

MAX_BYTES = 5 * 2**20
BACKUPS = 3
DRAIN_TIMEOUT_S = 5.0


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) 0700; an existing folder is left as it is
    (it may be the person's own, /tmp, ...)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass


class _PrivateRotatingHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose files are created (and kept) 0600."""

    def __init__(self, *a: Any, on_error: Any = None, **kw: Any) -> None:
        self._on_error = on_error
        super().__init__(*a, **kw)

    def _open(self) -> IO[str]:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if hasattr(os, "fchmod") and os.path.isfile(self.baseFilename):
                os.fchmod(fd, 0o600)  # an older, looser file becomes private too
            return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """logging's default prints a traceback to sys.stderr, which is copied here again:
        report a failing log file once, on the original stderr, and carry on."""
        if self._on_error is not None:
            self._on_error(sys.exc_info()[1])


class _Tee(io.TextIOBase):
    """sys.stdout/sys.stderr during a logged run: the original stream, plus whole lines to the log."""

    def __init__(self, original: IO[str] | None, log: "RunLog") -> None:
        super().__init__()
        self._original = original
        self._log = log
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        if self._original is not None:
            try:
                self._original.write(s)
            except (OSError, ValueError):
                pass  # a closed terminal or journal: the log still gets the line
        with self._lock:
            self._partial += s
            *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._log.line(line)
        return len(s)

    def flush(self) -> None:
        if self._original is not None:
            try:
                self._original.flush()
            except (OSError, ValueError):
                pass

    def finish(self) -> None:
        with self._lock:
            rest, self._partial = self._partial, ""
        if rest:
            self._log.line(rest)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        try:
            return bool(self._original is not None and self._original.isatty())
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        if self._original is None:
            raise io.UnsupportedOperation("no original stream")
        return self._original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._original, "encoding", None) or "utf-8"


class RunLog:
    """The log of one `exifguard run`; a context manager that copies sys.stdout/sys.stderr."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self.path = path
        private_dir(path.parent)
        self._warned = False
        self._handler = _PrivateRotatingHandler(str(path), maxBytes=max(1, max_bytes), backupCount=max(0, backups),
                                                encoding="utf-8", errors="replace", on_error=self._failed)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        self._pumps: list[threading.Thread] = []
        self._saved: tuple[Any, Any] | None = None
        self._tees: list[_Tee] = []

    # ---- lines ----
    def line(self, text: str) -> None:
        """One line into the file (thread-safe: the handler holds its own lock)."""
        record = logging.LogRecord("exifguard", logging.INFO, __file__, 0, text, None, None)
        self._handler.handle(record)

    def _failed(self, exc: BaseException | None) -> None:
        if self._warned:
            return
        self._warned = True
        err = self._saved[1] if self._saved is not None else sys.stderr
        if err is not None:
            why = getattr(exc, "strerror", None) or exc
            try:
                err.write(f"exifguard: cannot write the log file {self.path} ({why}); lines are lost from now on\n")
                err.flush()
            except (OSError, ValueError):
                pass

    # ---- our own output ----
    def __enter__(self) -> "RunLog":
        self._saved = (sys.stdout, sys.stderr)
        self._tees = [_Tee(sys.stdout, self), _Tee(sys.stderr, self)]
        sys.stdout, sys.stderr = self._tees  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: Any) -> None:
        self.drain()
        for tee in self._tees:
            tee.finish()
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
        self._handler.close()

    # ---- mitmdump's output ----
    def pump(self, proc: subprocess.Popen) -> None:
        """Copy the child's piped stdout/stderr, each by its own thread."""
        out, err = self._saved if self._saved is not None else (sys.stdout, sys.stderr)
        for stream, original in ((proc.stdout, out), (proc.stderr, err)):
            if stream is None:
                continue
            t = threading.Thread(target=self._copy, args=(stream, original), daemon=True,
                                 name="exifguard-log-copy")
            t.start()
            self._pumps.append(t)

    def _copy(self, stream: IO[bytes], original: IO[str] | None) -> None:
        try:
            for raw in iter(stream.readline, b""):
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                if original is not None:
                    try:
                        original.write(text + "\n")
                        original.flush()
                    except (OSError, ValueError):
                        original = None
                self.line(text)
        except (OSError, ValueError):
            pass
        finally:
            try:
                stream.close()
            except OSError:
                pass

    def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Wait until the child's last lines are copied (its pipes closed), at most `timeout`."""
        deadline = time.monotonic() + timeout
        for t in self._pumps:
            t.join(max(0.0, deadline - time.monotonic()))
        self._pumps = [t for t in self._pumps if t.is_alive()]
