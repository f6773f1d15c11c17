"""The bounded inspection pool (exifguard.proxy.workers).

Reproduction from issue 11: 64 concurrent 5 MB uploads peaked at 863 MB because every
upload was inspected at once.  Here at most K run, at most Q wait, the rest are refused
(`Busy`); an inspection that outlives its deadline is given up on (`InspectionTimeout`)
but keeps its slot until its thread really ends.

Jobs block on threading.Events the test controls, so nothing depends on timing; the
waits below are hang protection only.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from exifguard.proxy import workers
from exifguard.proxy.workers import Busy, InspectionPool, InspectionTimeout, WorkerFailed

HANG = 30.0  # seconds: only ever reached when something is broken


class Gate:
    """Jobs that wait until released, counting how many run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.started = threading.Semaphore(0)

    def job(self, value=None):
        def fn(deadline: float):
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            self.started.release()
            try:
                assert self.release.wait(HANG), "test gate never opened"
                return value
            finally:
                with self.lock:
                    self.now -= 1
        return fn

    async def wait_started(self, n: int) -> None:
        for _ in range(n):
            assert await asyncio.to_thread(self.started.acquire, True, HANG)


async def until(cond, what: str) -> None:
    """Poll the event loop until cond() (hang protection, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + HANG
    while not cond():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_at_most_k_run_and_all_finish():
    pool: InspectionPool = InspectionPool(2, 10, trim=None)
    gate = Gate()
    tasks = [asyncio.create_task(pool.run(gate.job(i), size=10, timeout=HANG)) for i in range(6)]
    await gate.wait_started(2)
    await until(lambda: pool.stats.waiting == 4, "4 waiting")
    assert gate.now == 2 and pool.stats.running == 2
    gate.release.set()
    assert await asyncio.gather(*tasks) == list(range(6))
    assert gate.peak == 2 and pool.stats.peak_running == 2 and pool.stats.peak_waiting == 4
    await until(lambda: pool.stats.running == 0, "slots released")
    pool.close()


async def test_queue_full_is_refused_at_once():
    pool: InspectionPool = InspectionPool(1, 1, trim=None)
    gate = Gate()
    first = asyncio.create_task(pool.run(gate.job("a"), size=1, timeout=HANG))
    await gate.wait_started(1)
    second = asyncio.create_task(pool.run(gate.job("b"), size=1, timeout=HANG))
    await until(lambda: pool.stats.waiting == 1, "one waiting")
    with pytest.raises(Busy, match="waiting"):
        await pool.run(gate.job("c"), size=1, timeout=HANG)
    assert pool.stats.busy_refusals == 1
    gate.release.set()
    assert await first == "a" and await second == "b"
    pool.close()


async def test_waiting_longer_than_the_timeout_is_refused():
    pool: InspectionPool = InspectionPool(1, 5, trim=None)
    gate = Gate()
    first = asyncio.create_task(pool.run(gate.job(), size=1, timeout=HANG))
    await gate.wait_started(1)
    with pytest.raises(Busy, match="waited"):
        await pool.run(gate.job(), size=1, timeout=0.05)
    assert pool.stats.waiting == 0
    gate.release.set()
    await first
    pool.close()


async def test_timeout_keeps_the_slot_until_the_thread_ends():
    pool: InspectionPool = InspectionPool(1, 0, trim=None)
    gate = Gate()
    with pytest.raises(InspectionTimeout, match="did not finish"):
        await pool.run(gate.job(), size=1, timeout=0.05)
    assert pool.stats.timeouts == 1 and pool.stats.overrunning == 1
    # the thread still runs: its slot is still taken, so the next upload is refused
    assert pool.stats.running == 1
    with pytest.raises(Busy):
        await pool.run(gate.job(), size=1, timeout=HANG)
    gate.release.set()
    await until(lambda: pool.stats.running == 0, "the overrunning thread to end")
    assert pool.stats.overrunning == 0
    assert await pool.run(lambda d: "next", size=1, timeout=HANG) == "next"
    pool.close()


async def test_the_job_gets_a_deadline_within_the_timeout():
    import time
    pool: InspectionPool = InspectionPool(1, 0, trim=None)
    before = time.monotonic()
    deadline = await pool.run(lambda d: d, size=1, timeout=7)
    assert before + 7 <= deadline <= time.monotonic() + 7
    pool.close()


async def test_exceptions_are_reraised_and_slots_freed():
    pool: InspectionPool = InspectionPool(1, 0, trim=None)

    def boom(deadline):
        raise ValueError("carrier bug")
    with pytest.raises(ValueError, match="carrier bug"):
        await pool.run(boom, size=1, timeout=HANG)
    await until(lambda: pool.stats.running == 0, "slot released")

    def dies(deadline):
        raise SystemExit(3)  # a thread "dying": not an Exception
    with pytest.raises(WorkerFailed) as e:
        await pool.run(dies, size=1, timeout=HANG)
    assert isinstance(e.value.exc, SystemExit)
    await until(lambda: pool.stats.running == 0, "slot released")
    assert await pool.run(lambda d: 1, size=1, timeout=HANG) == 1
    pool.close()


async def test_a_cancelled_waiter_does_not_leak_a_slot():
    pool: InspectionPool = InspectionPool(1, 3, trim=None)
    gate = Gate()
    first = asyncio.create_task(pool.run(gate.job(), size=1, timeout=HANG))
    await gate.wait_started(1)
    waiter = asyncio.create_task(pool.run(gate.job(), size=1, timeout=HANG))
    await until(lambda: pool.stats.waiting == 1, "one waiting")
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.release.set()
    await first
    await until(lambda: pool.stats.running == 0 and pool.stats.waiting == 0, "all free")
    pool.close()


async def test_resize_applies_to_new_work():
    pool: InspectionPool = InspectionPool(1, 0, trim=None)
    pool.resize(3, 0)
    gate = Gate()
    tasks = [asyncio.create_task(pool.run(gate.job(), size=1, timeout=HANG)) for _ in range(3)]
    await gate.wait_started(3)
    assert gate.now == 3
    gate.release.set()
    await asyncio.gather(*tasks)
    pool.close()


async def test_memory_is_trimmed_once_after_a_burst_of_large_inspections():
    trims = []
    collected = []
    pool: InspectionPool = InspectionPool(4, 10, trim=lambda: trims.append(1), trim_delay=0.05,
                                          large_bytes=1000, collect=lambda: collected.append(1),
                                          trim_min_interval=0)
    await pool.run(lambda d: None, size=10, timeout=HANG)        # small: no trim
    await asyncio.sleep(0.2)
    assert trims == []
    await asyncio.gather(*(pool.run(lambda d: None, size=5000, timeout=HANG) for _ in range(8)))
    await until(lambda: trims, "a trim")
    await asyncio.sleep(0.2)
    assert len(trims) == 1, "one trim per burst"
    assert collected == [1], "cyclic garbage (finished flows) is collected before trimming"
    pool.note_large_flow_done()
    await until(lambda: len(trims) == 2, "a trim after a large flow ended")
    pool.close()


async def test_trims_are_spaced_out():
    trims = []
    pool: InspectionPool = InspectionPool(2, 10, trim=lambda: trims.append(1), trim_delay=0.01,
                                          large_bytes=1, collect=None, trim_min_interval=HANG * 10)
    await pool.run(lambda d: None, size=5, timeout=HANG)
    await until(lambda: trims, "the first trim")
    await pool.run(lambda d: None, size=5, timeout=HANG)
    await asyncio.sleep(0.2)
    assert len(trims) == 1, "a second trim waits for the minimum interval"
    pool.close()


def test_malloc_trim_is_available_or_a_no_op():
    assert workers.malloc_trim() in (True, False)
    import sys
    if sys.platform.startswith("linux") and workers._MALLOC_TRIM is not None:
        assert workers.malloc_trim() is True


def test_default_workers_is_at_least_two():
    assert workers.default_workers() >= 2


def test_tune_malloc_fixes_the_thresholds_once():
    """glibc's per-thread arenas kept 5 MB bodies in tops that malloc_trim never shrinks; the
    tuning puts every thread on one arena with fixed thresholds (True on glibc, a harmless
    False elsewhere; idempotent).  That memory really comes back after a burst is checked
    through the proxy in test_memory.py and scripts/memcheck."""
    first = workers.tune_malloc()
    assert workers.tune_malloc() is first
    import sys
    if sys.platform.startswith("linux") and workers._MALLOPT is not None:
        assert first is True


# ---- express lane ------------------------------------------------------------------------
async def test_small_bodies_do_not_queue_behind_large_inspections():
    """Issue 11's leftover: a chat message waited behind slow photo inspections."""
    pool: InspectionPool = InspectionPool(1, 10, trim=None, express=1, small_bytes=100)
    big, small = Gate(), Gate()
    first = asyncio.create_task(pool.run(big.job("big1"), size=10_000, timeout=HANG))
    await big.wait_started(1)
    second = asyncio.create_task(pool.run(big.job("big2"), size=10_000, timeout=HANG))
    await until(lambda: pool.stats.waiting == 1, "the second large one waiting")
    # a small body runs at once, in the express slot, while the large ones hold or wait
    fast = asyncio.create_task(pool.run(small.job("s1"), size=50, timeout=HANG))
    await small.wait_started(1)
    assert pool.stats.express_running == 1 and pool.stats.running == 2
    # the next small one waits for the express lane (never for a large one's slot)
    later = asyncio.create_task(pool.run(small.job("s2"), size=50, timeout=HANG))
    await until(lambda: pool.stats.waiting == 2, "a small one waiting too")
    small.release.set()
    assert await fast == "s1" and await later == "s2"
    assert big.now == 1 and pool.stats.waiting == 1  # large ones untouched by the express lane
    big.release.set()
    assert await first == "big1" and await second == "big2"
    await until(lambda: pool.stats.running == 0 and pool.stats.express_running == 0, "all released")
    assert big.peak == 1  # never two large inspections at once: the memory bound holds
    pool.close()


async def test_large_bodies_never_use_the_express_lane_and_the_queue_bound_counts_both():
    pool: InspectionPool = InspectionPool(1, 2, trim=None, express=1, small_bytes=100)
    gate = Gate()
    t1 = asyncio.create_task(pool.run(gate.job(1), size=1000, timeout=HANG))
    await gate.wait_started(1)
    t2 = asyncio.create_task(pool.run(gate.job(2), size=1000, timeout=HANG))
    await until(lambda: pool.stats.waiting == 1, "large waiting")
    assert pool.stats.express_running == 0
    t3 = asyncio.create_task(pool.run(gate.job(3), size=10, timeout=HANG))   # express
    await gate.wait_started(1)
    t4 = asyncio.create_task(pool.run(gate.job(4), size=10, timeout=HANG))   # waits: queue now full
    await until(lambda: pool.stats.waiting == 2, "queue full")
    with pytest.raises(Busy):
        await pool.run(gate.job(5), size=10, timeout=HANG)
    gate.release.set()
    assert await asyncio.gather(t1, t2, t3, t4) == [1, 2, 3, 4]
    await until(lambda: pool.stats.running == 0, "released")
    pool.close()


async def test_a_free_regular_slot_goes_to_a_waiting_large_body_before_small_ones():
    pool: InspectionPool = InspectionPool(1, 10, trim=None, express=1, small_bytes=100)
    a, b = Gate(), Gate()
    held = asyncio.create_task(pool.run(a.job("held"), size=1000, timeout=HANG))
    await a.wait_started(1)
    exp = asyncio.create_task(pool.run(b.job("exp"), size=10, timeout=HANG))
    await b.wait_started(1)
    large = asyncio.create_task(pool.run(b.job("large"), size=1000, timeout=HANG))
    await until(lambda: pool.stats.waiting == 1, "large waiting")
    small = asyncio.create_task(pool.run(b.job("small"), size=10, timeout=HANG))
    await until(lambda: pool.stats.waiting == 2, "small waiting")
    a.release.set()
    assert await held == "held"
    await b.wait_started(1)  # the freed regular slot went to the large body
    assert pool.stats.waiting == 1 and pool.stats.express_running == 1
    b.release.set()
    assert await asyncio.gather(exp, large, small) == ["exp", "large", "small"]
    pool.close()


async def test_set_express_changes_the_lane_for_new_work():
    pool: InspectionPool = InspectionPool(1, 0, trim=None, express=1, small_bytes=100)
    gate = Gate()
    held = asyncio.create_task(pool.run(gate.job(1), size=1000, timeout=HANG))
    await gate.wait_started(1)
    pool.set_express(0)
    with pytest.raises(Busy):
        await pool.run(gate.job(2), size=10, timeout=HANG)  # no lane, no queue
    pool.set_express(1)
    small = asyncio.create_task(pool.run(gate.job(3), size=10, timeout=HANG))
    await gate.wait_started(1)
    gate.release.set()
    assert await held == 1 and await small == 3
    pool.close()
