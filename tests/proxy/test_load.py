"""Load through the real proxy, CI size: 150 uploads of mixed formats and shapes at
concurrency 16, every one arriving cleaned (no canary, pixels identical by Pillow in this
process, no private EXIF, ExifTool reads only allowlisted tags from a sample) or, for the
inputs designed to be refused, blocked; none lost.

No timing assertions (the machine is shared); the numbers are printed (`-s` shows them).
`scripts/loadtest` runs the same code at full size (1,000 uploads at concurrency 32).
"""

from __future__ import annotations

import pytest

from . import faultharness as fh
from .harness import start_proxy
from .sink import Sink

pytestmark = [pytest.mark.e2e]

UPLOADS = 150
CONCURRENCY = 16


def test_mixed_uploads_all_arrive_clean(tmp_path):
    items = fh.build_load(UPLOADS, seed=11, max_side=480, refuse_every=25)
    combos = {(i.up.fmt, i.up.shape) for i in items if not i.refuse}
    assert len(combos) == len(fh.FORMATS) * len(fh.SHAPES), "every format in every shape"
    refuse = sum(i.refuse for i in items)
    assert refuse >= 5
    sink = Sink(tmp_path)
    proxy = start_proxy(tmp_path, sink.port, sink.cert)
    try:
        fh.settle(proxy, quiet=0.5)
        res = fh.run_load(proxy, sink, items, CONCURRENCY, settle_seconds=1.0, oracle_sample=40)
    finally:
        rc = proxy.stop()
        sink.close()
    print("\n" + res.summary())
    assert res.failures == [], "\n".join(res.failures[:20])
    assert res.lost == 0
    assert res.cleaned == UPLOADS - refuse and res.refused == refuse
    assert res.oracle_leaks == []
    assert res.image_lines == UPLOADS, "one exifguard line per image, whatever its fate"
    assert res.private_log_lines == 0
    assert rc == 0, proxy.output()[-3000:]


def test_faults_mixed_into_load_stay_with_their_upload(tmp_path):
    """Every 7th upload makes the engine, the verifier, the carrier layer or the policy
    fail (fault_addon.py): those are refused, every other upload around them, in every
    format and shape, still arrives cleaned; nothing is lost."""
    n = 112
    items = fh.build_load(n, seed=12, max_side=200, refuse_every=0, fault_every=7)
    faulty = sum(i.refuse for i in items)
    assert faulty == n // 7
    sink = fh.ResetSink(tmp_path)
    proxy, fault_dir = fh.start_fault_proxy(tmp_path, sink)
    try:
        res = fh.run_load(proxy, sink, items, CONCURRENCY, settle_seconds=0.5, oracle_sample=0, warm=False)
    finally:
        rc = proxy.stop()
        sink.close()
    print("\n" + res.summary())
    assert res.failures == [], "\n".join(res.failures[:20])
    assert res.lost == 0 and res.refused == faulty and res.cleaned == n - faulty
    fired = (fault_dir / "fired.log").read_text().split()
    assert set(fired) >= set(fh.LOAD_FAULTS), "every kind of fault fired"
    assert res.image_lines >= n - faulty
    assert res.private_log_lines == 0
    assert rc == 0
