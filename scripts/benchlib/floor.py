"""Part 3: the physical floor — one copy of the same bytes in Python, next to the engine.

The engine must at least produce a new buffer of the same length, so
`bytes(memoryview(buf))` (one memcpy plus an allocation) is the floor; the ratio
engine/copy says how much work beyond that the structure walk and the verifier add.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import Series


@dataclass
class FloorRow:
    label: str
    size: int
    copy: Series = field(default_factory=Series)
    engine: Series = field(default_factory=Series)
    error: str = ""

    @property
    def ratio(self) -> float:
        return self.engine.median / self.copy.median if self.copy.n and self.engine.n else float("nan")


def _copy(buf: bytes) -> bytes:
    return bytes(memoryview(buf))


def run_floor(inputs: list[tuple[str, bytes]], *, rounds: int, inner: int = 5) -> list[FloorRow]:
    """Alternate copy and engine on each input; each sample is one call."""
    from exifguard import scrub
    rows = [FloorRow(label, len(data)) for label, data in inputs]
    for r in range(rounds):
        for row, (_, data) in zip(rows, inputs):
            if row.error:
                continue
            order = ("copy", "engine") if r % 2 == 0 else ("engine", "copy")
            for _ in range(inner):
                for what in order:
                    t0 = time.perf_counter()
                    try:
                        if what == "copy":
                            _copy(data)
                        else:
                            scrub(data)
                    except ValueError as exc:
                        row.error = type(exc).__name__ + ": " + str(exc)[:80]
                        break
                    (row.copy if what == "copy" else row.engine).add(time.perf_counter() - t0)
                if row.error:
                    break
    return rows


def corpus_total(items) -> list[tuple[str, bytes]]:
    return [(f"corpus: {it.name}", it.data) for it in items]


def photos(paths: list[Path]) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in paths]
