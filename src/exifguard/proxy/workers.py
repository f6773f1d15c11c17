"""Bounded inspection: how many uploads are inspected at once, how many may wait, how
long an inspection may take, and handing memory back to the system afterwards.

Why each bound exists:
  * **workers** (K): every inspection holds a few copies of its body (decoded, cleaned,
    re-encoded).  Without a bound, 64 simultaneous 5 MB uploads took 863 MB; with one,
    inspection memory is at most K times one upload's.
  * **queue** (Q): uploads beyond K wait their turn; beyond K + Q the proxy is
    overloaded and says so (`Busy`, answered 503 with Retry-After) rather than letting
    memory grow without limit.  It never forwards what it had no time to inspect.
  * **express lane** (E): small bodies (chat messages, API calls, small images) get E
    extra slots of their own, so a chat prompt never queues behind a few slow
    inspections of large photos (measured before: with inspections slowed to 1.5 s,
    4 small uploads waited about 4 s).  Small bodies are cheap, so E more of them at
    once adds little memory.  They use a regular slot first when one is free.
  * **deadline**: the caller gives up waiting at the deadline (`InspectionTimeout`) and
    fails closed; the carrier layer also gets the deadline and stops by itself.  A
    thread cannot be killed, so the slot stays taken until the thread really returns:
    the bound on concurrent inspections holds even when inspections overrun.
  * **memory return**: CPython hands freed memory to glibc's malloc, which keeps it in
    its arenas (one per thread, up to 8 per core), so the process's resident memory
    stayed near its peak after a burst of uploads.  `tune_malloc` puts every thread on one
    arena whose free memory `malloc_trim(0)` can give back (see there why), and the pool
    trims once a burst of large inspections is over (debounced, in a thread).  Before trimming, a full `gc.collect()`: mitmproxy's finished flows and
    connections sit in reference cycles, so their bodies and TLS buffers (about two
    body-sized blocks per flow) are only freed by the cyclic collector's rare full
    passes — measured: 434 MiB resident after 32 uploads of 5 MB, 154 MiB after one
    collection.

All state lives on the event loop thread; worker threads only report back through
`loop.call_soon_threadsafe`.  No mitmproxy imports (unit-testable on its own).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ctypes
import ctypes.util
import gc
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

log = logging.getLogger("exifguard")

T = TypeVar("T")

SMALL_BYTES = 256 * 1024
"""A body at most this large may use the express lane."""
EXPRESS_SLOTS = 2
"""Express slots the proxy and the ICAP service use (the pool's own default is none)."""
LARGE_BYTES = 1024 * 1024
"""An inspection of a body at least this large is followed by a memory trim."""
TRIM_DELAY = 0.5
"""Seconds after the last large inspection (or large flow) ends before trimming, so a
burst is trimmed once, after the flows have released their bodies."""
TRIM_MIN_INTERVAL = 5.0
"""At most one collection + trim this often (a full collection stops everything for
about 0.2 s in a busy proxy)."""


def default_workers() -> int:
    """Two per usable core: inspections are partly C (zlib, base64, hashing) and partly
    Python, so a little more than one per core keeps the cores busy without piling up
    copies of bodies."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(2, 2 * cores)


class Busy(Exception):
    """No inspection slot and no room to wait (or the wait outlasted its bound)."""


class InspectionTimeout(Exception):
    """The inspection did not finish before its deadline (it may still be running)."""


class WorkerFailed(Exception):
    """The worker thread ended with an exception that is not an `Exception` (e.g.
    SystemExit, KeyboardInterrupt) or the executor refused the work."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        super().__init__(type(exc).__name__)


@dataclass
class PoolStats:
    running: int = 0
    waiting: int = 0
    express_running: int = 0
    """Of `running`, how many hold an express slot."""
    peak_running: int = 0
    peak_waiting: int = 0
    busy_refusals: int = 0
    timeouts: int = 0
    overrunning: int = 0
    """Inspections whose caller gave up (timed out) but whose thread still runs."""
    trims: int = 0


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


# ---- memory return -------------------------------------------------------------------

def _libc_fn(name: str, argtypes: list[Any]) -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = getattr(libc, name)  # glibc only (musl has neither malloc_trim nor these mallopt knobs)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


_MALLOC_TRIM = _libc_fn("malloc_trim", [ctypes.c_size_t])
_MALLOPT = _libc_fn("mallopt", [ctypes.c_int, ctypes.c_int])
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
ARENA_MAX = 1
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 64 * 1024 * 1024
_tuned = False


def tune_malloc() -> bool:
    """Let the memory of large bodies go back to the system after a burst, without making
    every upload pay for it (once per process).

    Why (all measured; in process, a 5.8 MB multipart photo, 8 threads x 4 for the burst):

    * glibc's defaults: one arena per thread (up to 8 per core) and thresholds that adapt
      upwards, so a 5 MB body lives in a thread's arena; a freed body merges into that
      arena's top chunk, which `malloc_trim` does not shrink outside the main arena.
      Resident memory stayed at 108 MiB after the burst (41 MiB before), and in the proxy
      hundreds of MB after 64 concurrent 5 MB uploads.
    * The first fix (mmap every block of 1 MiB or more, trim tops above 4 MiB) returned the
      memory at once, but every large buffer was then a fresh mapping whose pages fault in:
      `rewrite_request` took 15.8 ms instead of 10.4 ms (the proxy's added latency for a
      5 MB upload doubled).
    * Now: **one arena** (CPython allocates under the GIL, so threads seldom wait for it),
      large blocks from the heap (mmap only above 32 MiB, top trimmed only above 64 MiB:
      no page faults per upload), and `malloc_trim(0)` after a burst (see `InspectionPool`)
      returns the free heap, because the main arena's top *is* trimmed: 10.1 ms per upload,
      a lower peak (97 against 114 MiB), and back to 41 MiB after the trim.
    """
    global _tuned
    if _tuned:
        return True
    if _MALLOPT is None:
        return False
    try:
        ok = all(bool(_MALLOPT(param, value)) for param, value in (
            (_M_ARENA_MAX, ARENA_MAX), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
    except Exception:  # noqa: BLE001 - an optimisation must never break the proxy
        return False
    _tuned = ok
    return ok


def malloc_trim() -> bool:
    """Give free heap memory back to the OS (glibc); False where unavailable."""
    if _MALLOC_TRIM is None:
        return False
    try:
        _MALLOC_TRIM(0)
    except Exception:  # noqa: BLE001 - an optimisation must never break the proxy
        return False
    return True


# ---- the pool --------------------------------------------------------------------------

class InspectionPool(Generic[T]):
    """At most `workers` inspections at once, at most `queue` waiting; see module doc."""

    def __init__(self, workers: int | None = None, queue: int = 64, *,
                 trim: Callable[[], Any] | None = malloc_trim, trim_delay: float = TRIM_DELAY,
                 large_bytes: int = LARGE_BYTES, collect: Callable[[], Any] | None = gc.collect,
                 trim_min_interval: float = TRIM_MIN_INTERVAL,
                 bounds_hint: str = "exifguard_workers / exifguard_queue",
                 express: int = 0, small_bytes: int = SMALL_BYTES) -> None:
        self.workers = workers or default_workers()
        self.express = max(0, express)
        self.small_bytes = small_bytes
        self.bounds_hint = bounds_hint
        """How the person sets the bounds (named in the busy message)."""
        self.queue = max(0, queue)
        self.stats = PoolStats()
        self._trim = trim
        self._trim_delay = trim_delay
        self.large_bytes = large_bytes
        self._large_running = 0
        self._trim_handle: asyncio.TimerHandle | None = None
        self._trim_running = False
        self._collect = collect
        self._trim_min_interval = trim_min_interval
        self._last_trim = float("-inf")
        self._waiters: collections.deque[asyncio.Future[bool]] = collections.deque()
        """Waiting for a regular slot (large bodies, or small ones when there is no express lane)."""
        self._small_waiters: collections.deque[asyncio.Future[bool]] = collections.deque()
        """Small bodies waiting for a regular or an express slot."""
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- configuration ----------------------------------------------------------------
    def resize(self, workers: int | None, queue: int) -> None:
        """New bounds; running inspections finish where they are."""
        workers = workers or default_workers()
        if workers != self.workers and self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        self.workers = workers
        self.queue = max(0, queue)
        self._wake()

    def set_express(self, express: int) -> None:
        """A new number of express slots; express inspections running now finish there."""
        express = max(0, express)
        if express != self.express and self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        self.express = express
        self._wake()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._trim_handle is not None:
            self._trim_handle.cancel()
            self._trim_handle = None
        for w in (*self._waiters, *self._small_waiters):
            if not w.done():
                w.set_exception(Busy("exifguard is shutting down"))
        self._waiters.clear()
        self._small_waiters.clear()

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            # one thread per slot: a submitted inspection starts at once
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.workers + self.express, thread_name_prefix="exifguard-inspect")
        return self._executor

    # ---- slots --------------------------------------------------------------------------
    def _queued(self) -> int:
        return len(self._waiters) + len(self._small_waiters)

    def _free_slot(self, small: bool) -> bool | None:
        """The slot a new job may take now: False regular, True express, None none."""
        if self.stats.running - self.stats.express_running < self.workers:
            return False
        if small and self.stats.express_running < self.express:
            return True
        return None

    async def _acquire(self, wait: float, small: bool) -> bool:
        """Wait for a slot; returns True for an express slot."""
        small = small and self.express > 0
        queue = self._small_waiters if small else self._waiters
        if not queue:
            kind = self._free_slot(small)
            if kind is not None:
                self._take(kind)
                return kind
        if self._queued() >= self.queue:
            self.stats.busy_refusals += 1
            raise Busy(f"{self.stats.running} uploads are being inspected and {self._queued()} are "
                       f"waiting ({self.bounds_hint})")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        queue.append(fut)
        self.stats.waiting = self._queued()
        self.stats.peak_waiting = max(self.stats.peak_waiting, self.stats.waiting)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout=max(0.0, wait))
        except asyncio.TimeoutError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                return fut.result()  # the slot arrived at the last moment: use it
            self._drop_waiter(fut)
            self.stats.busy_refusals += 1
            raise Busy(f"waited {wait:.0f} s for an inspection slot") from None
        except BaseException:
            # cancelled (the flow went away): give back a slot we may have been handed
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release(False, fut.result())
            else:
                self._drop_waiter(fut)
            raise
        return fut.result()

    def _drop_waiter(self, fut: asyncio.Future[bool]) -> None:
        for queue in (self._waiters, self._small_waiters):
            try:
                queue.remove(fut)
            except ValueError:
                pass
        if not fut.done():
            fut.cancel()
        self.stats.waiting = self._queued()

    def _take(self, express: bool) -> None:
        self.stats.running += 1
        if express:
            self.stats.express_running += 1
        self.stats.peak_running = max(self.stats.peak_running, self.stats.running)

    def _release(self, large: bool, express: bool = False) -> None:
        self.stats.running -= 1
        if express:
            self.stats.express_running -= 1
        if large:
            self._large_running -= 1
            if self._large_running == 0:
                self._schedule_trim()
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to waiters: large ones in order for regular slots; small ones
        for whatever is left, express slots first."""
        while self._waiters and self._free_slot(False) is False:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self._take(False)
            fut.set_result(False)
        while self._small_waiters:
            if self.stats.express_running < self.express:
                kind = True
            elif self._free_slot(False) is False and not self._waiters:
                kind = False
            else:
                break
            fut = self._small_waiters.popleft()
            if fut.done():
                continue
            self._take(kind)
            fut.set_result(kind)
        self.stats.waiting = self._queued()

    # ---- running --------------------------------------------------------------------------
    async def run(self, fn: Callable[[float], T], *, size: int, timeout: float) -> T:
        """Run `fn(deadline)` in a worker thread within the bounds.

        Raises `Busy` (no slot within `timeout`, or the queue is full), `InspectionTimeout`
        (the deadline passed; the thread keeps its slot until it returns) and
        `WorkerFailed`; an `Exception` raised by `fn` is re-raised as is.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        express = await self._acquire(timeout, size <= self.small_bytes)
        large = size >= self.large_bytes
        if large:
            self._large_running += 1
        deadline = time.monotonic() + timeout

        def work() -> Any:
            try:
                return fn(deadline)
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop
                return _Failure(exc)
            finally:
                try:
                    loop.call_soon_threadsafe(self._release, large, express)
                except RuntimeError:  # the loop is closed: nobody is left to count
                    pass

        try:
            cfut = self._pool().submit(work)
        except BaseException as exc:  # executor shut down, cannot start threads, ...
            self._release(large, express)
            raise WorkerFailed(exc) from exc
        afut = asyncio.wrap_future(cfut, loop=loop)
        # asyncio.wait never cancels what it waits on: on timeout the thread keeps running
        # and keeps its slot (released by `work` itself when it really ends).
        done, _ = await asyncio.wait({afut}, timeout=max(0.0, deadline - time.monotonic()))
        if not done:
            self.stats.timeouts += 1
            self.stats.overrunning += 1
            afut.add_done_callback(self._overrun_ended)
            raise InspectionTimeout(f"the inspection did not finish within {timeout:g} s")
        result = afut.result()
        if isinstance(result, _Failure):
            if isinstance(result.exc, Exception):
                raise result.exc
            raise WorkerFailed(result.exc)
        return result

    def _overrun_ended(self, fut: "asyncio.Future[Any]") -> None:
        self.stats.overrunning -= 1
        if not fut.cancelled():
            fut.exception()  # mark retrieved: a late failure is not "never retrieved"

    # ---- memory ---------------------------------------------------------------------------
    def note_large_flow_done(self) -> None:
        """A flow that carried a large body ended: its buffers are being released."""
        if self._loop is not None and self._large_running == 0:
            self._schedule_trim()

    def _schedule_trim(self) -> None:
        if self._trim is None or self._loop is None or self._loop.is_closed():
            return
        if self._trim_handle is not None:
            self._trim_handle.cancel()  # debounce: trim once, after the burst
        self._trim_handle = self._loop.call_later(self._trim_delay, self._start_trim)

    def _start_trim(self) -> None:
        self._trim_handle = None
        if self._large_running or self._trim_running or self._loop is None:
            return  # the next large inspection to end schedules another
        wait = self._last_trim + self._trim_min_interval - time.monotonic()
        if wait > 0:
            self._trim_handle = self._loop.call_later(wait, self._start_trim)
            return
        self._last_trim = time.monotonic()
        if self._collect is not None:
            try:
                # on the event loop thread: finalizers of asyncio objects expect to run there
                self._collect()
            except Exception:  # noqa: BLE001 - an optimisation must never break the proxy
                pass
        self._trim_running = True
        trim = self._trim
        assert trim is not None

        def done(_f: Any) -> None:
            self._trim_running = False

        # in a thread: trimming a large heap takes milliseconds the loop should not wait for
        f = self._loop.run_in_executor(None, trim)
        self.stats.trims += 1
        f.add_done_callback(done)


__all__ = ["EXPRESS_SLOTS", "SMALL_BYTES", "Busy", "InspectionPool", "InspectionTimeout", "PoolStats", "WorkerFailed", "default_workers",
           "malloc_trim", "tune_malloc"]
