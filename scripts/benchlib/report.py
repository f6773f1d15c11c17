"""Render the results as docs/benchmarks.md (Markdown tables, targets, profiles)."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass

from .common import Series, fmt_ms, fmt_range_ms, fmt_ratio
from .engine import CorpusResult, LargeResult, slope
from .floor import FloorRow
from .proxy import SHAPES, ProxyResult

MB = 1_000_000


@dataclass
class Target:
    name: str
    goal: str
    measured: str
    met: bool | None  # None = not measured


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB" if n >= MB else f"{n / 1000:.0f} kB"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _per_image_median(res) -> float:
    meds = [s.median for s in res.per_file.values() if s.n]
    return statistics.median(meds) if meds else float("nan")


# ---- part 1 ---------------------------------------------------------------------------------------
def corpus_section(c: CorpusResult) -> list[str]:
    n = len(c.items)
    total_bytes = sum(it.size for it in c.items)
    fmts = sorted({it.fmt for it in c.items})
    L = [f"Corpus: {n} images ({_mb(total_bytes)}; formats {', '.join(fmts)}), `broken_*` files "
         f"skipped. {c.rounds} interleaved rounds (round k starts with a different "
         f"tool); the slowest tools (exiftool one process per file, mat2, Pillow re-save) ran in the "
         f"first {c.heavy_rounds}. In-process tools run each image 3 times per round (Pillow once).", ""]
    L += ["### Whole corpus", "",
          "Per-image times are medians over rounds; \"corpus total\" is the time for all images the "
          "tool handled, median (min–max) over rounds. Folder tools are one process over the folder "
          "(start-up included; the CLI runs with compiled bytecode from a private cache after one untimed "
          "warm-up run, as an installed package would, although this machine exports "
          "PYTHONDONTWRITEBYTECODE=1). Peak memory: RSS of the process for subprocess tools (GNU time's "
          "%M; VmHWM for the resident exiftool), Python-level peak allocation (tracemalloc) "
          "per image for in-process tools.", ""]
    rows = []
    for name, r in c.tools.items():
        ok = n - len(r.failures)
        per_img = _per_image_median(r) if r.per_file else (r.folder.median / ok if ok else float("nan"))
        okbytes = sum(it.size for it in c.items if it.name not in r.failures)
        mbps = okbytes / MB / r.folder.median if r.folder.n and r.folder.median > 0 else float("nan")
        if r.py_peak:
            mem = f"{max(r.py_peak) / MB:.1f} MB (median {statistics.median(r.py_peak) / MB:.2f})"
        elif r.peak_kb:
            mem = f"{max(r.peak_kb) / 1000:.0f} MB RSS"
        else:
            mem = "–"
        kind = "per image" if r.per_file else "mean per image"
        rows.append([name, f"{ok}/{n}", f"{fmt_ms(per_img)} ({kind})", fmt_range_ms(r.folder),
                     f"{mbps:.1f}" if mbps == mbps else "–", mem])
    L += _table(["tool", "cleaned", "ms per image", "corpus total ms, median (min–max)", "MB/s", "peak memory"], rows)
    stay = c.tools.get("exiftool (stay_open)")
    if stay and stay.startup == stay.startup:
        L += ["", f"exiftool `-stay_open` start-up (not included above): {fmt_ms(stay.startup)} ms."]
    L += ["", "### By format (median ms per image; MB/s over the format's images)", ""]
    names = list(c.tools)
    rows = []
    for fmt in fmts:
        its = [it for it in c.items if it.fmt == fmt]
        row = [f"{fmt} ({len(its)})"]
        for name in names:
            r = c.tools[name]
            if r.per_file:
                meds = [r.per_file[it.name].median for it in its if it.name in r.per_file]
                fails = sum(1 for it in its if it.name in r.failures)
                if meds:
                    b = sum(it.size for it in its if it.name in r.per_file)
                    cell = f"{fmt_ms(statistics.median(meds))} / {b / MB / sum(meds):.0f} MB/s"
                else:
                    cell = "–"
                if fails:
                    cell += f" ({fails} failed)"
            else:
                fails = sum(1 for it in its if it.name in r.failures)
                cell = f"{fails} failed" if fails else "ok (folder)"
            row.append(cell)
        rows.append(row)
    L += _table(["format (images)"] + names, rows)
    L += ["", "Folder tools are timed per folder only; the cell says whether they cleaned the format.", ""]
    return L


def thorough_section(c: CorpusResult) -> list[str]:
    n = len(c.items)
    with_canary = sum(1 for it in c.items if it.canaries)
    L = ["### Thoroughness and losslessness (same corpus, untimed pass)", "",
         f"*privacy tag*: ExifTool (`-j -a -u -G1 -ee3`, RequestAll=3) reports a key outside the project's "
         f"allowlists (`tests/support/oracle.py`, `leaks(fmt, tags)`); *canary*: a private string from the "
         f"corpus manifest (serial numbers, names, places, comments — {with_canary} of {n} images carry "
         f"at least one that occurs in the file) is still findable raw, UTF-16, hex, base64 or inside a "
         f"zlib stream (`tests/support/canary.py`); *pixels changed*: Pillow's decode of the first frame "
         f"(size, mode, pixel bytes) differs from the original's; *frame count changed*: Pillow sees a different "
         f"number of frames (for example an MPO whose secondary image was removed) (pillow-heif for HEIC/AVIF; "
         f"JPEG XL cannot be decoded, counted as not comparable). A tool that failed on an image "
         f"counts as failed, not as leaking.", ""]
    rows = []
    for name, t in c.thorough.items():
        top = sorted(t.leak_keys.items(), key=lambda kv: -kv[1])[:4]
        rows.append([name, str(t.ok), str(t.failed), str(t.leaking), str(t.canary),
                     f"{t.pixels_changed} (+{t.pixels_unknown} n/a)", str(t.frames_changed), str(t.same_length),
                     ", ".join(f"`{k}` ({v})" for k, v in top) or "–"])
    L += _table(["tool", "cleaned", "failed", "left a privacy tag", "left a canary", "first-frame pixels changed",
                 "frame count changed", "same length", "most frequent leftovers (files)"], rows)
    L += ["", "piexif.remove only deletes the first Exif APP1 (JPEG) or EXIF chunk (WebP): it leaves XMP, "
          "IPTC/Photoshop APP13, COM, MPF and its secondary images, maker data in other APPn segments, "
          "ICC profiles, trailers after EOI, and it refuses every other format.", ""]
    return L


def large_section(lr: LargeResult) -> list[str]:
    L = [f"Generated JPEGs (noise pixels at quality 95, 4:4:4; Exif IFD0 + Exif IFD with serials + GPS + "
         f"IFD1 thumbnail, XMP, COM and a 4 kB trailer, each holding a canary); {lr.rounds} interleaved "
         f"rounds; median (min–max) ms, and MB/s from the median.", ""]
    names = list(lr.times)
    rows = []
    for mb, size in lr.sizes:
        row = [f"{mb:g} MB ({size / MB:.2f})"]
        for name in names:
            s = lr.times[name].get(size)
            if s is None or not s.n:
                row.append(lr.failures[name].get(size, "–")[:30] or "–")
            else:
                row.append(f"{fmt_range_ms(s)}; {size / MB / s.median:.0f} MB/s")
        rows.append(row)
    L += _table(["size"] + names, rows)
    L += ["", "How cost grows with size (least-squares fit of the medians: ms = a + b·MB):", ""]
    rows = []
    for name in names:
        pts = [(size / MB, lr.times[name][size].median * 1000) for _, size in lr.sizes
               if size in lr.times[name] and lr.times[name][size].n]
        a, b = slope(pts)
        left = lr.canary_left.get(name)
        rows.append([name, f"{a:.1f}" if a == a else "–", f"{b:.2f}" if b == b else "–",
                     "–" if left is None else ("yes" if left else "no")])
    L += _table(["tool", "a: fixed ms", "b: ms per MB", "canary left in output"], rows)
    L += ["", "Peak memory per size (MB): RSS growth of one clean in a fresh interpreter for in-process "
          "tools (VmHWM after − VmRSS before; includes Pillow's pixel buffers), GNU time's %M for "
          "subprocess tools, VmHWM of the resident process for exiftool -stay_open; exifguard's "
          "Python-level peak (tracemalloc) in the last column.", ""]
    rows = []
    for mb, size in lr.sizes:
        row = [f"{mb:g} MB"]
        for name in names:
            kb = lr.rss_kb.get(name, {}).get(size)
            row.append(f"{kb / 1000:.0f}" if kb else "–")
        py = lr.py_peak.get(size)
        row.append(f"{py / MB:.1f}" if py else "–")
        rows.append(row)
    L += _table(["size"] + names + ["exifguard tracemalloc"], rows)
    L.append("")
    return L


# ---- part 2 ---------------------------------------------------------------------------------------
def proxy_section(p: ProxyResult) -> list[str]:
    L = [f"Loopback only: httpx client → (mitmdump with `map_remote` from claude.ai, files.oaiusercontent.com, "
         f"api.openai.com to the sink, `connection_strategy=lazy`, `ssl_verify_upstream_trusted_ca=<sink cert>`, "
         f"`flow_detail=0`) → HTTPS sink (own process, HTTP/1.1). {p.reps} interleaved repetitions after a "
         f"warm-up request per variant; median (min–max) ms for the whole request (send body, read answer).", ""]
    uv = [v for v in p.variants if v != "mitmdump (responses streamed)"]
    rows = []
    for mb, size in p.sizes:
        for shape in SHAPES:
            row = [f"{mb:g} MB", shape]
            for v in uv:
                s = p.latency.get((v, shape, size))
                row.append(fmt_range_ms(s) if s else p.errors.get(f"{v} / {shape} / {size}", "–")[:40])
            bare = p.latency.get(("mitmdump (bare)", shape, size))
            eg = p.latency.get(("mitmdump + exifguard", shape, size))
            row.append(fmt_ratio(eg.median / bare.median) if bare and eg else "–")
            mod = p.modified.get(("mitmdump + exifguard", shape, size))
            row.append("–" if mod is None else ("yes" if mod else "NO"))
            rows.append(row)
    L += _table(["photo", "shape"] + uv + ["exifguard / bare", "body cleaned by exifguard"], rows)
    L += ["", f"Requests per second (multipart upload of a {_mb(p.rps_photo_bytes)} photo with full metadata "
          f"to claude.ai; {p.rps_requests} requests per run, 2 interleaved runs; median (min–max)); proxy "
          f"peak RSS (VmHWM, reset before each run via /proc/PID/clear_refs) in MB:", ""]
    levels = sorted({lvl for _, lvl in p.rps})
    rows = []
    for lvl in levels:
        row = [str(lvl)]
        for v in uv:
            s = p.rps.get((v, lvl))
            cell = "–" if not s else f"{s.median:.1f} ({s.min:.1f}–{s.max:.1f})"
            kb = p.rss_kb.get((v, lvl))
            if kb:
                cell += f"; {kb / 1000:.0f} MB"
            row.append(cell)
        bare, eg = p.rps.get(("mitmdump (bare)", lvl)), p.rps.get(("mitmdump + exifguard", lvl))
        row.append(fmt_ratio(eg.median / bare.median) if bare and eg else "–")
        rows.append(row)
    L += _table(["concurrency"] + uv + ["exifguard / bare rps"], rows)
    if p.cpu_ms:
        rows = []
        for lvl in levels:
            row = [str(lvl)]
            for v in uv[1:]:
                s = p.cpu_ms.get((v, lvl))
                row.append(f"{s.median:.1f}" if s and s.n else "–")
            rows.append(row)
        L += ["", "Proxy CPU time per request in those runs (utime + stime of the mitmdump process, all "
              "threads, ms; a 2-core machine saturates at about 2000 ms of CPU per second):", ""]
        L += _table(["concurrency"] + uv[1:], rows)
    if p.attribution:
        L += ["", "Where exifguard's added latency goes: the same requests through a copy of the addon "
              "whose `exifguard.carriers.rewrite_request` (carrier parsing + engine + residual-image "
              "scan) is timed (`scripts/benchlib/timed_addon.py`), median (min–max) ms:", ""]
        rows = []
        for shape, size, lat, wall, cpu in p.attribution:
            rows.append([shape, _mb(size), fmt_range_ms(lat), fmt_range_ms(wall), fmt_range_ms(cpu),
                         f"{wall.median / lat.median * 100:.0f}%" if lat.n and wall.n else "–"])
        L += _table(["shape", "body", "request latency", "rewrite_request wall", "rewrite_request CPU",
                     "share of latency"], rows)
    L += ["", f"Streamed response (SSE): the sink sends one event, waits {p.sse_delay:g} s, sends three more. "
          f"Time to first byte and to the end, median (min–max) ms:", ""]
    rows = []
    for v in p.variants:
        if v in p.ttfb:
            rows.append([v, fmt_range_ms(p.ttfb[v]), fmt_range_ms(p.sse_total[v])])
        else:
            rows.append([v, p.errors.get(f"{v} / SSE", "–")[:40], "–"])
    L += _table(["variant", "time to first byte", "time to last byte"], rows)
    errs = [f"- {k}: {v}" for k, v in p.errors.items()]
    if errs or p.notes:
        L += ["", "Problems during the run:", ""] + errs + [f"- {n}" for n in p.notes]
    L.append("")
    return L


# ---- part 3 ---------------------------------------------------------------------------------------
def floor_section(rows_in: list[FloorRow], corpus_rows: list[FloorRow]) -> list[str]:
    L = ["One copy of the same bytes in Python (`bytes(memoryview(buf))`) against `exifguard.scrub(buf)`, "
         "alternated call by call; median (min–max) ms.", ""]
    rows = []
    for r in rows_in:
        if r.error:
            rows.append([r.label, _mb(r.size), "–", "–", "–", "–", r.error[:60]])
            continue
        rows.append([r.label, _mb(r.size), fmt_range_ms(r.copy), fmt_range_ms(r.engine),
                     f"{r.size / MB / r.copy.median:.0f}", f"{r.size / MB / r.engine.median:.0f}",
                     fmt_ratio(r.ratio)])
    L += _table(["input", "size", "copy ms", "engine ms", "copy MB/s", "engine MB/s", "engine / copy"], rows)
    good = [r for r in corpus_rows if not r.error and r.copy.n]
    if good:
        ratios = sorted(r.ratio for r in good)
        cm = sum(r.copy.median for r in good)
        em = sum(r.engine.median for r in good)
        L += ["", f"Corpus ({len(good)} images, {len(corpus_rows) - len(good)} not cleanable): sum of per-image "
              f"medians: copy {fmt_ms(cm)} ms, engine {fmt_ms(em)} ms ({fmt_ratio(em / cm)}); per-image "
              f"ratio median {fmt_ratio(statistics.median(ratios))}, range {fmt_ratio(ratios[0])}–"
              f"{fmt_ratio(ratios[-1])}. On small images the engine's fixed cost (sniff, walker, verifier, "
              f"result objects) dominates, so the ratio is large without meaning much.", ""]
    L.append("")
    return L


# ---- targets --------------------------------------------------------------------------------------
def targets(c: CorpusResult | None, floor_rows: list[FloorRow] | None, p: ProxyResult | None) -> list[Target]:
    out: list[Target] = []
    if c is not None:
        eg = c.tools.get("exifguard (in-process)")
        stay = c.tools.get("exiftool (stay_open)")
        folder = c.tools.get("exiftool (one process, folder)")
        pp = c.tools.get("exiftool (process per file)")
        cli = c.tools.get("exifguard CLI (folder)")
        egm = _per_image_median(eg) if eg else float("nan")
        n_ok_folder = len(c.items) - len(folder.failures) if folder else 0
        cands = []
        if stay and stay.per_file:
            cands.append(("stay_open median per image", _per_image_median(stay)))
        if folder and folder.folder.n and n_ok_folder:
            cands.append(("one process over the folder, per image", folder.folder.median / len(c.items)))
        if eg and cands:
            label, fastest = min(cands, key=lambda kv: kv[1])
            ratio = fastest / egm
            out.append(Target("engine vs exiftool, fastest mode", "≥ 10x",
                              f"{fmt_ratio(ratio)} (exifguard {fmt_ms(egm)} ms vs exiftool {label} "
                              f"{fmt_ms(fastest)} ms)", ratio >= 10))
        if eg and pp and pp.per_file:
            pm = _per_image_median(pp)
            out.append(Target("engine vs one exiftool process per file", "≥ 100x",
                              f"{fmt_ratio(pm / egm)} ({fmt_ms(egm)} vs {fmt_ms(pm)} ms)", pm / egm >= 100))
        if cli and cli.folder.n:
            batch = []
            if folder and folder.folder.n:
                batch.append(("exiftool over the folder", folder.folder.median))
            if stay and stay.folder.n:
                batch.append(("exiftool -stay_open over the folder (start-up excluded)", stay.folder.median))
            if batch:
                label, best = min(batch, key=lambda kv: kv[1])
                ratio = best / cli.folder.median
                out.append(Target("CLI over a folder vs exiftool batch", "≥ 3x",
                                  f"{fmt_ratio(ratio)} (CLI {fmt_ms(cli.folder.median)} ms vs {label} "
                                  f"{fmt_ms(best)} ms, {len(c.items)} images)", ratio >= 3))
    if floor_rows:
        big = [r for r in floor_rows if r.size >= 9.5 * MB and not r.error and r.copy.n]
        if big:
            worst = max(big, key=lambda r: r.ratio)
            out.append(Target("10–50 MB JPEG: engine within 4x of one copy", "≤ 4x",
                              "; ".join(f"{_mb(r.size)}: {fmt_ratio(r.ratio)}" for r in big),
                              worst.ratio <= 4))
    if p is not None:
        five = [size for mb, size in p.sizes if abs(mb - 5) < 0.01] or [size for _, size in p.sizes]
        if five:
            size = five[0]
            parts, ok = [], True
            for shape in SHAPES:
                b = p.latency.get(("mitmdump (bare)", shape, size))
                e = p.latency.get(("mitmdump + exifguard", shape, size))
                if b and e:
                    ratio = e.median / b.median
                    ok = ok and ratio <= 1.10
                    parts.append(f"{shape} {ratio:.2f} (+{(ratio - 1) * 100:.0f}%)")
            if parts:
                out.append(Target(f"proxy latency, {_mb(size)} photo, exifguard / bare mitmdump", "≤ 1.10",
                                  "; ".join(parts), ok))
        top = max((lvl for _, lvl in p.rps), default=None)
        if top is not None:
            b, e = p.rps.get(("mitmdump (bare)", top)), p.rps.get(("mitmdump + exifguard", top))
            if b and e:
                loss = 1 - e.median / b.median
                out.append(Target(f"requests/s at concurrency {top}", "≤ 10% loss",
                                  f"{e.median:.1f} vs {b.median:.1f} rps ({loss * 100:+.0f}% loss)", loss <= 0.10))
        b, e = p.ttfb.get("mitmdump (bare)"), p.ttfb.get("mitmdump + exifguard")
        s = p.ttfb.get("mitmdump (responses streamed)")
        if b and e:
            extra = f"; vs bare mitmdump with streamed responses {fmt_ratio(e.median / s.median)}" if s else ""
            out.append(Target("SSE time to first byte, exifguard / bare mitmdump", "≤ 2x",
                              f"{fmt_ratio(e.median / b.median)} ({fmt_ms(e.median)} vs {fmt_ms(b.median)} ms"
                              f"{extra})", e.median / b.median <= 2))
    return out


def targets_section(ts: list[Target]) -> list[str]:
    if not ts:
        return ["No target was measured in this run.", ""]
    rows = [[t.name, t.goal, t.measured, "met" if t.met else ("**missed**" if t.met is False else "–")]
            for t in ts]
    return _table(["target", "goal", "measured", "result"], rows) + [""]


def env_section(env: dict[str, str], shared_note: str) -> list[str]:
    L = _table(["", ""], [[k, v] for k, v in env.items()])
    if shared_note:
        L += ["", shared_note]
    return L + [""]


# ---- part 4: ICAP behind Squid ----------------------------------------------------------------------
ICAP_BEGIN = "<!-- icap part: begin (scripts/bench --parts icap replaces this block) -->"
ICAP_END = "<!-- icap part: end -->"


def icap_targets(r) -> list[Target]:
    """Targets of issue 13 point 6 (r: benchlib.icap.IcapResult or None)."""
    if r is None:
        return []
    out: list[Target] = []
    a, b = r.latency.get("squid alone"), r.latency.get("squid + exifguard")
    if a and b and a.n and b.n:
        x = b.median / a.median
        out.append(Target(f"ICAP latency, {_mb(r.photo_bytes)} photo, Squid + exifguard / Squid alone", "≤ 1.2x",
                          f"{fmt_ratio(x)} ({fmt_ms(b.median)} vs {fmt_ms(a.median)} ms)", x <= 1.2))
    a, b = r.text_latency.get("squid alone"), r.text_latency.get("squid + exifguard")
    if a and b and a.n and b.n:
        x = b.median / a.median
        out.append(Target(f"ICAP non-image POST ({r.text_bytes / 1000:.0f} kB), Squid + exifguard / Squid alone",
                          "≤ 1.05x", f"{fmt_ratio(x)} ({fmt_ms(b.median)} vs {fmt_ms(a.median)} ms)", x <= 1.05))
    if r.rps_direct.get(1) and r.rps_direct.get(2):
        x = r.rps_direct[2] / r.rps_direct[1]
        out.append(Target(f"ICAP service uploads/s at concurrency {r.concurrency}, 2 workers / 1", "≥ 1.7x",
                          f"{fmt_ratio(x)} ({r.rps_direct[2]:.1f} vs {r.rps_direct[1]:.1f} REQMOD/s straight to "
                          "the service)", x >= 1.7))
    if r.rps.get(1) and r.rps.get(2):
        x = r.rps[2] / r.rps[1]
        out.append(Target(f"uploads/s through Squid + exifguard at concurrency {r.concurrency}, 2 workers / 1",
                          "≥ 1.7x", f"{fmt_ratio(x)} ({r.rps[2]:.1f} vs {r.rps[1]:.1f} uploads/s)", x >= 1.7))
    return out


def icap_section(r, not_run: str | None = None) -> list[str]:
    L = ["## 4. ICAP behind Squid", "", ICAP_BEGIN, ""]
    if r is None:
        L += [f"(not run: {not_run or '--parts'})", "", ICAP_END, ""]
        return L
    ts = icap_targets(r)
    if ts:
        L += targets_section(ts)
    L += [f"Squid {r.squid_version} (ssl_bump of the AI hosts, configuration from `exifguard squid-config`) "
          "→ `exifguard icap` → a local HTTPS sink, all on 127.0.0.1, on the machine above. "
          "\"Squid alone\" is the same configuration with `icap_enable off`. Each client request opens "
          "a new connection (CONNECT + TLS through Squid), as a browser's first upload does. "
          f"Run {r.when} on {os.cpu_count()} CPUs; 1-minute load average {r.load[0]:.2f} at the start of "
          f"this part and {r.load[1]:.2f} at its end"
          + (" (the machine was shared with other jobs: absolute times are inflated, the interleaved "
             "ratios are what the targets use)." if max(r.load) > 1.0 else "."), ""]
    rows = []
    for what, d, size in (("photo upload (multipart POST)", r.latency, r.photo_bytes),
                          ("non-image POST (JSON chat message)", r.text_latency, r.text_bytes)):
        a, b = d.get("squid alone"), d.get("squid + exifguard")
        if a and b and a.n and b.n:
            rows.append([what, _mb(size), fmt_range_ms(a), fmt_range_ms(b), fmt_ratio(b.median / a.median),
                         str(a.n)])
    L += _table(["request", "size", "Squid alone, ms", "Squid + exifguard (2 workers), ms", "ratio", "rounds"],
                rows) + [""]
    rows = [[str(w), f"{r.rps[w]:.1f}", str(r.rps_failed.get(w, 0)),
             f"{r.rps_direct[w]:.1f}" if w in r.rps_direct else "–",
             f"{r.peak_rss_kb.get(w, 0) / 1024:.0f} MB"] for w in sorted(r.rps)]
    if rows:
        L += [f"Throughput: {r.requests} uploads of a {_mb(r.small_photo_bytes)} photo (multipart) at concurrency "
              f"{r.concurrency}, through Squid + exifguard (new client connection each), and as REQMOD "
              "exchanges sent straight to the service (a new ICAP connection each). Peak RSS: the "
              "service's parent and worker processes together (VmHWM, after both runs). On 2 cores the "
              "client, Squid (one process), the sink and the service share the same CPUs, so a second "
              "worker process can only use what the others leave.", ""]
        L += _table(["worker processes", "uploads/s through Squid", "failed", "REQMOD/s straight to the service",
                     "peak RSS of the service"], rows) + [""]
    if r.errors:
        L += ["Errors: " + "; ".join(r.errors), ""]
    L += [ICAP_END, ""]
    return L


def splice_icap(existing: str, section: list[str]) -> str:
    """An existing report with its ICAP section replaced (or inserted before the analysis
    and profiles), so `--parts icap` alone keeps every other part's published results."""
    text = "\n".join(section).rstrip("\n")
    i, j = existing.find(ICAP_BEGIN), existing.find(ICAP_END)
    if i >= 0 and j > i:
        begin = existing.rfind("## 4. ICAP behind Squid", 0, i)
        start = begin if begin >= 0 else i
        return existing[:start] + text + existing[j + len(ICAP_END):]
    for marker in ("## Where the time goes", "## Profiles"):
        k = existing.find(marker)
        if k >= 0:
            return existing[:k] + text + "\n\n" + existing[k:]
    return existing.rstrip("\n") + "\n\n" + text + "\n"
