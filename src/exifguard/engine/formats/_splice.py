"""Same-length edits over an immutable input, applied in one copy.

`Splice(data)` stands in for the `out = bytearray(data)` ... `return bytes(out)` pattern
of the in-place walkers.  That pattern copies the whole input twice; for a large image
those copies are most of the walker's cost.  A Splice records each assignment instead
and `build()` joins memoryview slices of the input with the replacement bytes, so the
input is copied once, straight into the result.

The result is always exactly what the same assignments to `bytearray(data)` would have
produced:

* edits are kept in order; when two of them overlap, `build()` replays them in that
  order on a bytearray;
* any assignment the fast path does not model (one that would change the length, an
  out-of-range index, a value that is not `bytes`) turns the Splice into a real
  bytearray on the spot, and that assignment and every later one go to the bytearray,
  so it behaves (and raises) exactly as bytearray does.

A Splice cannot be read.  Walkers read the original input: that is only equivalent
when nothing they read has been edited before, which each walker using it states.
"""

from __future__ import annotations


class Splice:
    __slots__ = ("data", "edits", "buf")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.edits: list[tuple[int, int, bytes]] = []
        self.buf: bytearray | None = None  # set once the fast path no longer applies

    def __len__(self) -> int:
        return len(self.buf) if self.buf is not None else len(self.data)

    def __setitem__(self, key: slice | int, value: bytes | int) -> None:
        if self.buf is None:
            n = len(self.data)
            if type(key) is slice:
                if type(value) is bytes and key.step is None:
                    start, stop = key.start, key.stop
                    if not (type(start) is int and type(stop) is int and 0 <= start <= stop <= n):
                        if not ((start is None or type(start) is int)
                                and (stop is None or type(stop) is int)):
                            start = -1  # not modelled: let bytearray handle (and judge) it
                        else:
                            start, stop, _ = key.indices(n)
                            stop = max(start, stop)
                    if start >= 0 and stop - start == len(value):
                        if value:
                            self.edits.append((start, stop, value))
                        return
            elif type(key) is int and type(value) is int:
                i = key + n if key < 0 else key
                if 0 <= i < n and 0 <= value < 256:
                    self.edits.append((i, i + 1, bytes((value,))))
                    return
            self.bytearray()
        assert self.buf is not None
        self.buf[key] = value

    def bytearray(self) -> bytearray:
        """Give up the fast path: the edited bytes as a bytearray (edits replayed in order).
        Later assignments to the Splice go to this same bytearray."""
        if self.buf is None:
            buf = bytearray(self.data)
            for a, b, v in self.edits:
                buf[a:b] = v
            self.edits = []
            self.buf = buf
        return self.buf

    def build(self) -> bytes:
        """The edited bytes."""
        if self.buf is not None:
            return bytes(self.buf)
        edits = sorted(self.edits, key=lambda e: e[0])  # stable: equal starts keep their order
        view = memoryview(self.data)
        pieces: list[bytes | memoryview] = []
        pos = 0
        for a, b, v in edits:
            if a < pos:  # overlapping edits: the later one wins, as on a bytearray
                return bytes(self.bytearray())
            if a > pos:
                pieces.append(view[pos:a])
            pieces.append(v)
            pos = b
        if pos < len(self.data):
            pieces.append(view[pos:])
        return b"".join(pieces)
