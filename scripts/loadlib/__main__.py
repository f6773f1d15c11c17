"""Run the load test once and print the numbers (see scripts/loadtest).

The uploads, the checks and the measurements are the ones tests/proxy/test_load.py runs
in CI at a smaller size (tests/proxy/faultharness.py: build_load, run_load), so the
numbers printed here come from exactly what CI proves.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/loadtest",
        description="Load test through the real proxy: uploads of mixed formats (JPEG, PNG, WebP, GIF, "
                    "TIFF, HEIC) and shapes (multipart, raw PUT, base64 JSON, data URL) via `exifguard run` "
                    "to a local HTTPS sink. Checks every upload arrived cleaned (no canary, pixels "
                    "identical, ExifTool on a sample) or, if designed to be refused, was blocked; prints "
                    "p50/p99 latency and mitmdump's RSS. Exit status 1 on any failure.")
    p.add_argument("--uploads", type=int, default=1000, help="how many uploads (default 1000)")
    p.add_argument("--concurrency", type=int, default=32, help="client threads (default 32)")
    p.add_argument("--max-side", type=int, default=4096,
                   help="largest image side drawn (default 4096: up to 2048x1536 photos)")
    p.add_argument("--refuse-every", type=int, default=33,
                   help="every Nth upload is a truncated JPEG that must be blocked (0: none)")
    p.add_argument("--fault-every", type=int, default=0, metavar="N",
                   help="also load tests/proxy/fault_addon.py and make every Nth upload trigger a fault "
                        "in the engine, verifier, carrier layer or policy (it must be blocked, and the "
                        "uploads around it must still arrive cleaned)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the numbers here")
    p.add_argument("--keep-output", action="store_true", help="print the proxy's output at the end")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    from proxy import faultharness as fh
    from proxy.harness import start_proxy

    def log(msg: str) -> None:
        print(f"[loadtest {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    log(f"building {a.uploads} uploads")
    t = time.perf_counter()
    items = fh.build_load(a.uploads, seed=a.seed, max_side=a.max_side, refuse_every=a.refuse_every,
                          fault_every=a.fault_every)
    log(f"built in {time.perf_counter() - t:.1f} s ({sum(len(i.up.body) for i in items) / 1e6:.1f} MB of bodies)")
    with tempfile.TemporaryDirectory(prefix="egload-") as tmp:
        tmpdir = Path(tmp)
        sink = fh.Sink(tmpdir)
        if a.fault_every:
            proxy, _ = fh.start_fault_proxy(tmpdir, sink)
        else:
            proxy = start_proxy(tmpdir, sink.port, sink.cert)
        try:
            fh.settle(proxy, quiet=1.0)
            log(f"proxy on port {proxy.port} (mitmdump pid {fh.mitmdump_pid(proxy)}); sending")
            res = fh.run_load(proxy, sink, items, a.concurrency, log=log)
        finally:
            rc = proxy.stop()
            sink.close()
        lines = [ln for ln in proxy.lines if "exifguard" in ln]
        if a.keep_output:
            print(proxy.output())
    print(res.summary())
    print(f"  proxy exit code {rc}; exifguard log lines {len(lines)}")
    if a.json:
        d = dataclasses.asdict(res)
        d.update(p50=res.percentile(50), p99=res.percentile(99), lost=res.lost, proxy_rc=rc)
        a.json.write_text(json.dumps(d, indent=1))
    ok = not res.failures and res.lost == 0 and not res.oracle_leaks and rc == 0 and not res.private_log_lines
    print("loadtest: PASS" if ok else "loadtest: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
