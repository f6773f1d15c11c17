"""Command line of scripts/fuzz (see README.md next to this file)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from .runner import Config, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/fuzz", description=(
        "Structure-aware, coverage-guided fuzzing of exifguard.scrub (engine) and "
        "exifguard.carriers.rewrite_request (carriers), checking the fail-closed invariants."))
    p.add_argument("--seconds", type=float, default=60.0, help="wall-clock budget (default 60)")
    p.add_argument("--execs", type=int, default=None,
                   help="stop after this many executions instead (reproducible with --seed)")
    p.add_argument("--target", choices=("engine", "carriers", "all"), default="all")
    p.add_argument("--seed", type=int, default=None, help="RNG seed (default: from the clock, printed)")
    p.add_argument("--corpus", type=Path, default=None,
                   help="corpus folder (default ../shared/corpus when present; read, never copied)")
    p.add_argument("--no-corpus", action="store_true", help="generated canary seeds only")
    p.add_argument("--max-seed-bytes", type=int, default=1_500_000,
                   help="skip corpus files larger than this (speed)")
    p.add_argument("--out", type=Path, default=None, help="where findings go (default: a new temp folder)")
    p.add_argument("--trace-rate", type=float, default=0.25,
                   help="fraction of executions traced for coverage (default 0.25)")
    p.add_argument("--exiftool-every", type=int, default=10,
                   help="send every Nth accepted output to the batched ExifTool check (0: off)")
    p.add_argument("--minimize-seconds", type=float, default=30.0)
    p.add_argument("--backend", choices=("loop", "atheris", "auto"), default="loop",
                   help="loop: our own coverage-guided loop (default, reproducible); atheris: libFuzzer "
                        "via atheris when it is installed (auto: atheris if available)")
    p.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    p.add_argument("-q", "--quiet", action="store_true")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else int(time.time()) % 1_000_000
    out = a.out or Path(tempfile.mkdtemp(prefix="exifguard-fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    targets = ("engine", "carriers") if a.target == "all" else (a.target,)
    backend = a.backend
    if backend != "loop":
        from .atheris_backend import available
        if not available():
            if backend == "atheris":
                print("scripts/fuzz: atheris is not installed (.venv/bin/pip install atheris; CPython "
                      "3.11 x86-64 has a wheel); use --backend loop", file=sys.stderr)
                return 2
            backend = "loop"
        else:
            backend = "atheris"
    print(f"fuzz: target {a.target}, backend {a.backend}, seed {seed}, budget "
          f"{f'{a.execs} execs' if a.execs else f'{a.seconds:.0f} s'}, findings -> {out}", flush=True)
    cfg = Config(seconds=None if a.execs else a.seconds, execs=a.execs, targets=targets, seed=seed,
                 corpus=a.corpus, use_corpus=not a.no_corpus, max_seed_bytes=a.max_seed_bytes, out=out,
                 trace_rate=a.trace_rate, exiftool_every=a.exiftool_every, minimize_seconds=a.minimize_seconds,
                 quiet=a.quiet, backend=backend)
    s = run(cfg)
    print(s.text(), flush=True)
    if a.json:
        a.json.write_text(json.dumps({
            "seed": seed, "seconds": round(s.seconds, 1), "executions": dict(s.execs), "total": s.total,
            "execs_per_second": round(s.total / s.seconds, 1) if s.seconds else 0,
            "accepted": dict(s.accepted), "coverage_arcs": s.coverage, "exiftool_checked": s.exiftool_checked,
            "findings": [{"target": f.violation.target, "kind": f.violation.kind,
                          "signature": f.violation.signature, "message": f.violation.message,
                          "review_only": f.violation.review_only,
                          "count": f.count, "path": str(f.path) if f.path else None}
                         for f in s.findings.values()]}, indent=1))
    return 1 if s.bugs else 0


if __name__ == "__main__":
    sys.exit(main())
