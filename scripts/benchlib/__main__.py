"""scripts/bench: run the benchmark parts and write the Markdown report.

    scripts/bench [--quick] [--out docs/benchmarks.md] [--parts engine,proxy,floor,icap]
                  [--corpus DIR] [--sizes 1,5,10,25,50] [--proxy-sizes 1,5,20] [--profile]

--quick is a smoke run (< 60 s): few corpus images per format, a 1 MB photo, one or two
rounds, a handful of proxy requests.  The full run takes several minutes.
"""

from __future__ import annotations

import argparse
import warnings
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

from . import engine, floor, gen, report
from .common import REPO, environment, loadavg

DEFAULT_CORPUS = Path(os.environ.get("EXIFGUARD_CORPUS", REPO.parent / "shared" / "corpus")) / "images"
PARTS = ("engine", "proxy", "floor", "icap")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny inputs, one round (< 60 s)")
    ap.add_argument("--out", default=None,
                    help="Markdown report path (default docs/benchmarks.md; with --quick a file in the "
                         "temporary folder, so a smoke run never replaces the published results)")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma list of engine, proxy, floor, icap (icap alone updates only "
                    "its section of an existing report)")
    ap.add_argument("--corpus", default=None, help="folder of images (default: the shared corpus)")
    ap.add_argument("--sizes", default=None, help="generated JPEG sizes in MB (default 1,5,10,25,50)")
    ap.add_argument("--proxy-sizes", default=None, help="upload sizes in MB (default 1,5,20)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, quick 1)")
    ap.add_argument("--requests", type=int, default=None, help="requests per concurrency run")
    ap.add_argument("--profile", action="store_true", help="include profiles even when targets are met")
    a = ap.parse_args(argv)
    if a.out is None:
        a.out = (str(Path(tempfile.gettempdir()) / "exifguard-bench-quick.md") if a.quick
                 else str(REPO / "docs" / "benchmarks.md"))
    a.parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    bad = [p for p in a.parts if p not in PARTS]
    if bad:
        ap.error(f"unknown part(s): {', '.join(bad)} (choose from {', '.join(PARTS)})")
    return a


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def profile_engine(data_list: list[bytes], repeat: int, top: int = 16) -> str:
    from exifguard import scrub
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    for _ in range(repeat):
        for d in data_list:
            try:
                scrub(d)
            except ValueError:
                pass
    pr.disable()
    dt = (time.perf_counter() - t0) / repeat
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(top)
    lines = [ln for ln in s.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    body = "\n".join(ln.replace(str(REPO) + "/", "").replace(sys.prefix, "<venv>") for ln in lines[start:])
    return f"{dt * 1000:.1f} ms per pass under cProfile (sorted by own time)\n{body}"


def profile_cli(files: list[Path], work: Path, top: int = 14) -> str:
    """cProfile of one `exifguard scrub FILES -o DIR` process (start-up included)."""
    import subprocess
    out = work / "cli_profile_out"
    stats = work / "cli.prof"
    t0 = time.perf_counter()
    from .common import python_child_env
    env = python_child_env(work / "pycache")
    subprocess.run([sys.executable, "-c", "import exifguard.cli.files"], env=env, timeout=120)  # warm
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(stats), "-m", "exifguard.cli", "scrub", "-q",
                    *map(str, files), "-o", str(out)], capture_output=True, timeout=600, env=env)
    dt = time.perf_counter() - t0
    if not stats.exists():
        return "(profiling the CLI failed)"
    s = io.StringIO()
    pstats.Stats(str(stats), stream=s).sort_stats("tottime").print_stats(top)
    lines = [ln for ln in s.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    body = "\n".join(ln.replace(str(REPO) + "/", "").replace(sys.prefix, "<venv>") for ln in lines[start:])
    head = next((ln.strip() for ln in lines if "function calls" in ln), "")
    return f"{len(files)} files, {dt * 1000:.0f} ms wall under cProfile; {head}\n{body}"


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    warnings.filterwarnings("ignore", category=UserWarning)  # Pillow's notes on odd corpus files
    quick = a.quick
    t_start = time.perf_counter()
    corpus_dir = Path(a.corpus) if a.corpus else DEFAULT_CORPUS
    sizes = _floats(a.sizes) if a.sizes else ([1] if quick else [1, 5, 10, 25, 50])
    proxy_sizes = _floats(a.proxy_sizes) if a.proxy_sizes else ([1] if quick else [1, 5, 20])
    rounds = a.rounds or (1 if quick else 5)
    env = environment()
    load0 = loadavg()
    corpus_res = large_res = proxy_res = icap_res = None
    icap_not_run: str | None = None
    floor_rows: list[floor.FloorRow] = []
    corpus_floor: list[floor.FloorRow] = []
    profiles: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="exifguard-bench-") as tmp:
        work = Path(tmp)
        items: list[engine.Item] = []
        if ("engine" in a.parts or "floor" in a.parts) and corpus_dir.is_dir():
            items, _ = engine.load_corpus(corpus_dir, limit_per_format=1 if quick and not a.corpus else None)
        if "engine" in a.parts:
            if items:
                log(f"engine: corpus of {len(items)} images")
                corpus_res = engine.run_corpus(items, work, rounds=rounds,
                                               heavy_rounds=1 if quick else min(2, rounds), log=log)
                engine.cleanup(work)
            else:
                log(f"engine: no corpus at {corpus_dir}; skipping the corpus comparison")
            log(f"engine: generated photos {sizes} MB")
            large_res = engine.run_large(sizes, work, rounds=1 if quick else min(3, rounds), log=log)
            engine.cleanup(work)
        if "floor" in a.parts:
            log("floor: copy vs engine")
            photos = gen.make_photos(work / "photos", sizes)
            floor_rows = floor.run_floor(floor.photos(photos), rounds=2 if quick else rounds,
                                         inner=1 if quick else 3)
            if items:
                corpus_floor = floor.run_floor(floor.corpus_total(items), rounds=2 if quick else rounds,
                                               inner=3)
        if "proxy" in a.parts:
            from . import proxy
            log(f"proxy: uploads {proxy_sizes} MB")
            try:
                proxy_res = proxy.run_proxy(work / "proxy", sizes_mb=proxy_sizes, reps=2 if quick else 7,
                                            levels=[1, 8] if quick else [1, 8, 32],
                                            requests=a.requests or (16 if quick else 128),
                                            sse_reps=2 if quick else 7, attribute_reps=2 if quick else 5,
                                            log=log)
            except (RuntimeError, OSError) as exc:
                log(f"proxy: could not run: {exc}")
                proxy_res = None
                profiles.append(("proxy part", f"could not run: {exc}"))
        if "icap" in a.parts:
            from . import icap
            icap_not_run = icap.available()
            icap_res = icap.run_icap(work / "icap", reps=2 if quick else 7, requests=16 if quick else 128,
                                     concurrency=8 if quick else 32, log=log)
        ts = report.targets(corpus_res, floor_rows, proxy_res) + report.icap_targets(icap_res)
        missed = {t.name for t in ts if t.met is False}
        # profiles of misses (and on request)
        if corpus_res and (a.profile or any(n.startswith("engine vs") for n in missed)):
            datas = [it.data for it in items]
            profiles.append(("engine over the corpus (all images, one pass)",
                             profile_engine(datas, 1 if quick else 3)))
        if corpus_res and (a.profile or any(n.startswith("CLI over") for n in missed)):
            profiles.append(("exifguard CLI over the corpus folder (one process)",
                             profile_cli([it.path for it in items], work)))
        if floor_rows and (a.profile or any(n.startswith("10–50 MB") for n in missed)):
            biggest = max(gen.make_photos(work / "photos", sizes), key=lambda p: p.stat().st_size)
            profiles.append((f"engine on {biggest.name}", profile_engine([biggest.read_bytes()], 2)))
        if proxy_res and (a.profile or any(n.startswith("proxy latency") for n in missed)):
            from . import proxy
            p5 = [s for mb, s in proxy_res.sizes if abs(mb - 5) < 0.01] or [proxy_res.sizes[0][1]]
            photo = next((work / "proxy" / "photos").glob("*.jpg")).read_bytes()
            for path in (work / "proxy" / "photos").glob("photo_*.jpg"):
                if path.stat().st_size == p5[0]:
                    photo = path.read_bytes()
            for shape in proxy.SHAPES:
                profiles.append((f"addon work for a {len(photo) / 1e6:.1f} MB {shape} upload "
                                 f"(exifguard.carriers.rewrite_request, in-process)",
                                 proxy.profile_rewrite(shape, photo)))
    elapsed = time.perf_counter() - t_start
    load1 = loadavg()
    shared = (f"Load average (1 min) was {load0:.2f} at the start and {load1:.2f} at the end on "
              f"{os.cpu_count()} CPUs" + (": the machine was shared with other jobs during this run, so "
                                         "absolute times are inflated and noisy; the side-by-side ratios "
                                         "are what the targets use." if max(load0, load1) > 1.0 else "."))
    out = Path(a.out)
    if a.parts == ["icap"] and out.exists():
        # only the ICAP part ran: keep every other part's published results
        md = report.splice_icap(out.read_text(), report.icap_section(icap_res, icap_not_run))
    else:
        md = render(a, env, shared, ts, corpus_res, large_res, floor_rows, corpus_floor, proxy_res, profiles,
                    elapsed, quick, icap_res, icap_not_run)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    log(f"wrote {out} in {elapsed:.0f} s")
    for t in ts:
        log(f"  {'MET   ' if t.met else 'MISSED'} {t.name}: {t.measured}")
    return 0


def render(a, env, shared, ts, corpus_res, large_res, floor_rows, corpus_floor, proxy_res, profiles,
           elapsed, quick, icap_res=None, icap_not_run=None) -> str:
    L = ["# exifguard benchmarks", "",
         "Generated by `scripts/bench" + (" --quick" if quick else "") + "` "
         f"(parts: {', '.join(a.parts)}; {elapsed:.0f} s). Every claim is a ratio measured side by side in "
         "one run: compared commands alternate round by round and medians with min–max are reported. "
         "Re-run with `scripts/bench` (full, about 10 minutes) or `scripts/bench --quick` (smoke, < 1 minute); "
         "`--parts engine,proxy,floor,icap` picks parts.", "",
         "## Machine", ""]
    L += report.env_section(env, shared)
    L += ["## Targets", ""]
    L += report.targets_section(ts)
    L += ["## 1. Engine vs peers", ""]
    if corpus_res:
        L += report.corpus_section(corpus_res)
        L += report.thorough_section(corpus_res)
    elif "engine" in a.parts:
        L += ["(no corpus folder found: corpus comparison skipped)", ""]
    else:
        L += ["(not run: --parts)", ""]
    if large_res:
        L += ["### Large photos", ""] + report.large_section(large_res)
    L += ["## 2. Proxy overhead", ""]
    L += report.proxy_section(proxy_res) if proxy_res else ["(not run)", ""]
    L += ["## 3. Physical floor", ""]
    L += report.floor_section(floor_rows, corpus_floor) if floor_rows else ["(not run: --parts)", ""]
    L += report.icap_section(icap_res, icap_not_run if "icap" in a.parts else None)
    notes = Path(__file__).with_name("analysis.md")
    if notes.exists() and not quick:
        L += ["## Where the time goes and what to fix", "", notes.read_text().strip(), ""]
    L += ["## Profiles", ""]
    if profiles:
        for title, text in profiles:
            L += [f"### {title}", "", "```", text, "```", ""]
    else:
        L += ["No target was missed in this run (use `--profile` to include profiles anyway).", ""]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
