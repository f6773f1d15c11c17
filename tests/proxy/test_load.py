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
    assert rc == 0, proxy.output()[-3000:]
    assert not any(fh.MARK_PREFIX in line for line in proxy.lines), "a private value reached the log"
