"""Shrink a failing input while the same failure (same signature) persists.

Structure first (drop whole segments/chunks/boxes, cheap and keeps the file readable),
then classic delta debugging over byte ranges, halving the chunk size down to one byte.
Bounded by wall time and by the number of attempts: a finding is saved either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import structure


def minimize(data: bytes, fails: Callable[[bytes], bool], *, seconds: float = 30.0,
             max_tries: int = 4000) -> bytes:
    deadline = time.monotonic() + seconds
    tries = 0

    def attempt(candidate: bytes) -> bool:
        nonlocal tries
        tries += 1
        try:
            return fails(candidate)
        except Exception:  # noqa: BLE001 - a candidate that breaks the check is not a reproduction
            return False

    def budget() -> bool:
        return tries < max_tries and time.monotonic() < deadline

    best = data
    # 1. whole structures, largest first
    changed = True
    while changed and budget():
        changed = False
        regions = sorted(structure.parse(best), key=lambda r: r.start - r.end)
        for r in regions:
            if not budget():
                break
            if r.start == 0 or r.end <= r.start:
                continue
            cand = best[:r.start] + best[r.end:]
            if attempt(cand):
                best = cand
                changed = True
                break
    # 2. ddmin over bytes
    n = 2
    while len(best) >= 2 and budget():
        chunk = max(1, len(best) // n)
        removed = False
        i = 0
        while i < len(best) and budget():
            cand = best[:i] + best[i + chunk:]
            if cand and attempt(cand):
                best = cand
                removed = True
            else:
                i += chunk
        if not removed:
            if chunk == 1:
                break
            n = min(len(best), n * 2)
    return best
