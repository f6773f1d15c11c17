"""Benchmark-only mitmdump script: exifguard's addons, with the per-request rewrite timed.

Used in a separate attribution pass (never in the measured variants): it wraps
`exifguard.carriers.rewrite_request` and appends "<body bytes> <wall s> <thread CPU s>"
to the file named by EXIFGUARD_BENCH_TIMES, so the report can split the latency that
exifguard adds into "carrier parsing + engine" and "everything else in the proxy".
"""

import os
import time

import exifguard.carriers as _carriers

_orig = _carriers.rewrite_request
_path = os.environ.get("EXIFGUARD_BENCH_TIMES", "")


def _timed(*args, **kwargs):
    t0, c0 = time.perf_counter(), time.thread_time()
    result = _orig(*args, **kwargs)
    if _path:
        with open(_path, "a") as fh:
            fh.write(f"{len(args[3])} {time.perf_counter() - t0:.6f} {time.thread_time() - c0:.6f}\n")
    return result


_carriers.rewrite_request = _timed

from exifguard.proxy.addon import make_addons  # noqa: E402  (after the patch, on purpose)

addons = make_addons()
