"""A cheap coverage signal: line-to-line arcs inside exifguard, via sys.settrace.

Why settrace and only sometimes: Python 3.11 has no sys.monitoring, and tracing every call
costs several times the call itself.  The fuzzer traces a sampled fraction of executions
(and every execution of a fresh mutation of a new corpus entry), which is enough to notice
inputs that reach new code and keep them; untraced executions still check every invariant.
Only frames whose file lies under src/exifguard are traced (others return None at 'call').
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import FrameType

SRC = str(Path(__file__).resolve().parents[2] / "src" / "exifguard")


class Coverage:
    def __init__(self, prefix: str = SRC) -> None:
        self.prefix = prefix
        self.seen: set[tuple[int, int, int]] = set()
        self._files: dict[str, bool] = {}
        self._new = 0
        self._last: dict[int, int] = {}
        self._ids: dict[object, int] = {}

    def _code_id(self, code) -> int:
        i = self._ids.get(code)
        if i is None:
            i = self._ids[code] = len(self._ids)
        return i

    def _global(self, frame: FrameType, event: str, arg: object):
        f = frame.f_code.co_filename
        ok = self._files.get(f)
        if ok is None:
            ok = self._files[f] = f.startswith(self.prefix)
        if not ok:
            return None
        return self._local

    def _local(self, frame: FrameType, event: str, arg: object):
        if event == "line":
            fid = id(frame)
            prev = self._last.get(fid, -1)
            ln = frame.f_lineno
            self._last[fid] = ln
            key = (self._code_id(frame.f_code), prev, ln)
            if key not in self.seen:
                self.seen.add(key)
                self._new += 1
        elif event == "return":
            self._last.pop(id(frame), None)
        return self._local

    def run(self, fn, *args, **kw):
        """Call fn under tracing; returns (result-or-exception-raised, new arcs)."""
        self._new = 0
        old = sys.gettrace()
        sys.settrace(self._global)
        try:
            return fn(*args, **kw)
        finally:
            sys.settrace(old)
            self._last.clear()

    @property
    def new(self) -> int:
        return self._new

    def __len__(self) -> int:
        return len(self.seen)
