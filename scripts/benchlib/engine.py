"""Part 1: the engine against the tools people would otherwise use.

Corpus images (by format) and large generated JPEGs are cleaned by every tool in
interleaved rounds (round k starts with a different tool), so a load spike from the
other tenants of a shared machine hits all tools alike.  Then one untimed pass judges
what each tool left behind (ExifTool oracle + allowlists, canaries, pixels).
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

from . import gen, tools
from .common import REPO, Series, rotate, run_proc
from .tools import ToolFailed

HEAVY = ("exiftool (process per file)", "mat2 (one process, folder)", "Pillow re-save")


def _load_support(name: str):
    """tests/support/<name>.py by path (the suite's own oracle), without importing tests/."""
    path = REPO / "tests" / "support" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_support_{name}", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@dataclass
class Item:
    name: str
    path: Path
    fmt: str
    size: int
    canaries: tuple[bytes, ...] = ()  # private strings from the manifest that occur in the file

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


def _sniff_fmt(data: bytes) -> str:
    try:
        from exifguard import sniff
        return sniff(data) or "unknown"
    except Exception:
        return "unknown"


def load_corpus(folder: Path, *, limit_per_format: int | None = None) -> tuple[list[Item], list[str]]:
    """Corpus images; `broken_*` files are skipped (peers are not expected to handle them)."""
    manifest = {}
    mpath = folder.parent / "manifest.json"
    if mpath.exists():
        for e in json.loads(mpath.read_text()):
            manifest[Path(e["file"]).name] = e
    canary = _load_support("canary")
    items, skipped = [], []
    per_fmt: dict[str, int] = {}
    paths = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    # with a per-format limit, take the smallest images (a quick smoke run)
    paths.sort(key=(lambda p: (p.stat().st_size, p.name)) if limit_per_format else (lambda p: p.name))
    for p in paths:
        e = manifest.get(p.name, {})
        if p.name.startswith("broken_"):
            skipped.append(p.name)
            continue
        data = p.read_bytes()
        fmt = e.get("format") or _sniff_fmt(data)
        if limit_per_format is not None and per_fmt.get(fmt, 0) >= limit_per_format:
            continue
        per_fmt[fmt] = per_fmt.get(fmt, 0) + 1
        values = []
        priv = e.get("privacy", {})
        for group in ("serials", "people", "location_text"):
            values += [v for v in (priv.get(group) or {}).values() if isinstance(v, str)]
        values += [v for v in (e.get("comment_tags") or {}).values() if isinstance(v, str)]
        if gen.CANARY in data:
            values.append(gen.CANARY.decode())
        found = []
        for v in values:
            v = v.strip()
            if len(v) >= 6 and v.isprintable():
                m = v.encode()
                if m not in found and canary.find(data, m):
                    found.append(m)
        items.append(Item(p.name, p, fmt, len(data), tuple(found)))
    return items, skipped


# ---- results -------------------------------------------------------------------------------
@dataclass
class ToolResult:
    per_file: dict[str, Series] = field(default_factory=dict)   # per-file tools
    failures: dict[str, str] = field(default_factory=dict)
    folder: Series = field(default_factory=Series)               # folder tools: whole-folder time
    folder_ok: int = 0
    peak_kb: list[int] = field(default_factory=list)             # RSS (subprocess) peaks
    py_peak: list[int] = field(default_factory=list)             # tracemalloc peaks (bytes)
    startup: float = float("nan")
    note: str = ""


@dataclass
class Thorough:
    ok: int = 0
    failed: int = 0
    leaking: int = 0
    canary: int = 0
    pixels_changed: int = 0
    pixels_unknown: int = 0
    frames_changed: int = 0  # Pillow's frame count differs (MPF secondary images, HEIF thumbnails...)
    same_length: int = 0
    leak_keys: dict[str, int] = field(default_factory=dict)  # tag -> files (names only)


@dataclass
class CorpusResult:
    items: list[Item]
    skipped: list[str]
    rounds: int
    heavy_rounds: int
    tools: dict[str, ToolResult]
    thorough: dict[str, Thorough]


def _inproc_pass(name: str, fn, items: list[Item], datas: dict[str, bytes], res: ToolResult,
                 inner: int) -> None:
    total = 0.0
    for it in items:
        data = datas[it.name]
        if it.name in res.failures:
            continue
        samples = []
        for _ in range(inner):
            t0 = time.perf_counter()
            try:
                fn(data)
            except (ToolFailed, ValueError) as exc:
                res.failures[it.name] = str(exc).split(":")[0][:60] if isinstance(exc, ToolFailed) \
                    else type(exc).__name__
                break
            dt = time.perf_counter() - t0
            samples.append(dt)
            res.per_file.setdefault(it.name, Series()).add(dt)
        if len(samples) == inner:
            total += sorted(samples)[inner // 2]
    res.folder.add(total)


def run_corpus(items: list[Item], work: Path, *, rounds: int, heavy_rounds: int,
               log=print) -> CorpusResult:
    tools.register_heif()
    tools.PYCACHE = work / "pycache"
    tools.warm_cli(items[0].path, work / "warm")
    datas = {it.name: it.data for it in items}
    files = [it.path for it in items]
    names = list(tools.IN_PROCESS) + ["exiftool (stay_open)", "exiftool (process per file)"] + list(tools.FOLDER_TOOLS)
    if not tools.available("exiftool"):
        names = [n for n in names if "exiftool" not in n]
    if not tools.available("mat2"):
        names = [n for n in names if "mat2" not in n]
    results = {n: ToolResult() for n in names}
    last_out: dict[str, Path] = {}
    stay = tools.ExiftoolStayOpen() if "exiftool (stay_open)" in names else None
    if stay:
        results["exiftool (stay_open)"].startup = stay.startup
    try:
        for r in range(rounds):
            for name in rotate(names, r):
                if name in HEAVY and r >= heavy_rounds:
                    continue
                res = results[name]
                out = work / "out" / _slug(name) / f"r{r}"
                t_start = time.perf_counter()
                if name in tools.IN_PROCESS:
                    inner = 1 if name == "Pillow re-save" else 3
                    _inproc_pass(name, tools.IN_PROCESS[name], items, datas, res, inner)
                elif name == "exiftool (stay_open)":
                    assert stay
                    out.mkdir(parents=True, exist_ok=True)
                    total = 0.0
                    for it in items:
                        if it.name in res.failures:
                            continue
                        try:
                            dt = stay.clean(it.path, out / it.name)
                        except ToolFailed as exc:
                            res.failures[it.name] = str(exc)
                            continue
                        res.per_file.setdefault(it.name, Series()).add(dt)
                        total += dt
                    res.folder.add(total)
                    last_out[name] = out
                elif name == "exiftool (process per file)":
                    out.mkdir(parents=True, exist_ok=True)
                    total = 0.0
                    for it in items:
                        if it.name in res.failures:
                            continue
                        try:
                            dt, kb = tools.exiftool_one(it.path, out / it.name)
                        except ToolFailed as exc:
                            res.failures[it.name] = str(exc)
                            continue
                        res.per_file.setdefault(it.name, Series()).add(dt)
                        res.peak_kb.append(kb)
                        total += dt
                    res.folder.add(total)
                    last_out[name] = out
                else:
                    fr = tools.FOLDER_TOOLS[name](files, out)
                    res.folder.add(fr.seconds)
                    res.peak_kb.append(fr.maxrss_kb)
                    res.folder_ok = len(fr.outputs)
                    res.note = fr.note
                    for it in items:
                        if it.name not in fr.outputs:
                            res.failures[it.name] = "no output"
                    last_out[name] = out
                prev = work / "out" / _slug(name) / f"r{r - 1}"
                if r and prev.exists() and last_out.get(name) != prev:
                    shutil.rmtree(prev, ignore_errors=True)
                log(f"  corpus round {r + 1}/{rounds}: {name}: {time.perf_counter() - t_start:.1f} s")
        if stay:
            results["exiftool (stay_open)"].peak_kb.append(stay.peak_rss_kb())
    finally:
        if stay:
            stay.close()
    # Python-level peak allocation of the in-process tools (separate, untimed pass)
    for name, fn in tools.IN_PROCESS.items():
        res = results[name]
        for it in items:
            if it.name in res.failures:
                continue
            gc.collect()
            tracemalloc.start()
            try:
                fn(datas[it.name])
            except (ToolFailed, ValueError):
                pass
            res.py_peak.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    thorough = judge(items, datas, results, last_out, work / "judge", log=log)
    return CorpusResult(items, [], rounds, heavy_rounds, results, thorough)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _frame_digest(data: bytes) -> tuple[str, int] | None:
    """(digest of the first frame's size, mode and pixels, number of frames), or None."""
    from PIL import Image
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        h = hashlib.sha256(f"{im.size}{im.mode}".encode())
        h.update(im.tobytes())
        return h.hexdigest(), getattr(im, "n_frames", 1)
    except Exception:
        return None


def judge(items: list[Item], datas: dict[str, bytes], results: dict[str, ToolResult],
          last_out: dict[str, Path], work: Path, *, log=print) -> dict[str, Thorough]:
    """Untimed: what does each tool leave behind, and does it change pixels?"""
    oracle = _load_support("oracle")
    canary = _load_support("canary")
    tools.register_heif()
    orig_pix = {it.name: _frame_digest(datas[it.name]) for it in items}
    outputs: dict[str, dict[str, Path]] = {"original (no tool)": {it.name: it.path for it in items}}
    for name in results:
        if name in tools.IN_PROCESS:
            d = work / _slug(name)
            d.mkdir(parents=True, exist_ok=True)
            outs = {}
            for it in items:
                if it.name in results[name].failures:
                    continue
                try:
                    data = tools.IN_PROCESS[name](datas[it.name])
                except (ToolFailed, ValueError):
                    continue
                p = d / it.name
                p.write_bytes(data)
                outs[it.name] = p
            outputs[name] = outs
        elif name in last_out:
            d = last_out[name]
            outs = {}
            for it in items:
                if it.name in results[name].failures:
                    continue
                for cand in (d / it.name, d / f"{Path(it.name).stem}.cleaned{Path(it.name).suffix}"):
                    if cand.exists():
                        outs[it.name] = cand
                        break
            outputs[name] = outs
    verdicts: dict[str, Thorough] = {}
    for name, outs in outputs.items():
        t = Thorough(ok=len(outs), failed=len(items) - len(outs))
        tags = oracle.exiftool_files(list(outs.values())) if (outs and tools.available("exiftool")) else {}
        for it in items:
            p = outs.get(it.name)
            if p is None:
                continue
            data = p.read_bytes()
            bad = oracle.leaks(it.fmt, tags.get(str(p), {})) if tags else []
            if bad:
                t.leaking += 1
                for k in bad:
                    t.leak_keys[k] = t.leak_keys.get(k, 0) + 1
            if any(canary.find(data, m) for m in it.canaries):
                t.canary += 1
            if len(data) == it.size:
                t.same_length += 1
            before, after = orig_pix[it.name], _frame_digest(data)
            if before is None or after is None:
                t.pixels_unknown += 1
            else:
                if before[0] != after[0]:
                    t.pixels_changed += 1
                if before[1] != after[1]:
                    t.frames_changed += 1
        verdicts[name] = t
        log(f"  judged {name}: {t.ok} cleaned, {t.leaking} leak a privacy tag, {t.canary} keep a canary")
    return verdicts


# ---- large generated photos ----------------------------------------------------------------------
@dataclass
class LargeResult:
    sizes: list[tuple[float, int]]  # (nominal MB, actual bytes)
    times: dict[str, dict[int, Series]]  # tool -> actual size -> series
    failures: dict[str, dict[int, str]]
    rss_kb: dict[str, dict[int, int]]  # subprocess peak RSS or in-process RSS growth
    py_peak: dict[int, int]  # exifguard tracemalloc peak per size
    canary_left: dict[str, bool]
    rounds: int


LARGE_TOOLS = ["exifguard (in-process)", "exifguard CLI (one file)", "piexif.remove", "Pillow re-save",
               "exiftool (stay_open)", "exiftool (process per file)", "mat2 (one file)"]


def run_large(sizes_mb: list[float], work: Path, *, rounds: int, log=print) -> LargeResult:
    photos = gen.make_photos(work / "photos", sizes_mb)
    sizes = [(mb, p.stat().st_size) for mb, p in zip(sizes_mb, photos)]
    tools.PYCACHE = work / "pycache"
    tools.warm_cli(photos[0], work / "warm")
    names = [n for n in LARGE_TOOLS
             if not (("exiftool" in n and not tools.available("exiftool"))
                     or ("mat2" in n and not tools.available("mat2")))]
    times: dict[str, dict[int, Series]] = {n: {} for n in names}
    fails: dict[str, dict[int, str]] = {n: {} for n in names}
    rss: dict[str, dict[int, int]] = {n: {} for n in names}
    canary_left: dict[str, bool] = {}
    stay = tools.ExiftoolStayOpen() if "exiftool (stay_open)" in names else None
    try:
        for r in range(rounds):
            for name in rotate(names, r):
                for (mb, size), photo in zip(sizes, photos):
                    out = work / "large_out" / _slug(name) / f"r{r}"
                    out.mkdir(parents=True, exist_ok=True)
                    dst = out / photo.name
                    try:
                        dt, kb, data_out = _large_one(name, photo, dst, stay)
                    except ToolFailed as exc:
                        fails[name][size] = str(exc)
                        continue
                    times[name].setdefault(size, Series()).add(dt)
                    if kb:
                        rss[name][size] = max(rss[name].get(size, 0), kb)
                    if data_out is not None and size == sizes[0][1]:
                        canary_left[name] = gen.CANARY in data_out
                    if dst.exists():
                        dst.unlink()
                log(f"  large round {r + 1}/{rounds}: {name} done")
        if stay:
            for size in times.get("exiftool (stay_open)", {}):
                rss["exiftool (stay_open)"][size] = stay.peak_rss_kb()
    finally:
        if stay:
            stay.close()
    # memory of the in-process tools: RSS growth in a fresh child (Pillow's pixel buffers are
    # not visible to tracemalloc), plus exifguard's Python-level peak
    for name, tool in (("exifguard (in-process)", "exifguard"), ("piexif.remove", "piexif"),
                       ("Pillow re-save", "pillow")):
        for (mb, size), photo in zip(sizes, photos):
            kb = memprobe(tool, photo)
            if kb is not None:
                rss[name][size] = kb
    py_peak = {}
    from exifguard import scrub
    for (mb, size), photo in zip(sizes, photos):
        data = photo.read_bytes()
        gc.collect()
        tracemalloc.start()
        try:
            scrub(data)
        except ValueError:
            pass
        py_peak[size] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del data
    return LargeResult(sizes, times, fails, rss, py_peak, canary_left, rounds)


def _large_one(name: str, photo: Path, dst: Path, stay) -> tuple[float, int, bytes | None]:
    if name in tools.IN_PROCESS:
        data = photo.read_bytes()
        t0 = time.perf_counter()
        try:
            out = tools.IN_PROCESS[name](data)
        except ValueError as exc:
            raise ToolFailed(type(exc).__name__) from exc
        return time.perf_counter() - t0, 0, out
    if name == "exifguard CLI (one file)":
        p = run_proc(tools.cli_argv() + ["scrub", "-q", str(photo), "-o", str(dst)], env=tools.cli_env())
        if p.returncode or not dst.exists():
            raise ToolFailed(f"exit {p.returncode}")
        return p.seconds, p.maxrss_kb, dst.read_bytes()
    if name == "exiftool (stay_open)":
        dt = stay.clean(photo, dst)
        return dt, 0, dst.read_bytes()
    if name == "exiftool (process per file)":
        dt, kb = tools.exiftool_one(photo, dst)
        return dt, kb, dst.read_bytes()
    if name == "mat2 (one file)":
        copy = dst.parent / photo.name.replace(".jpg", ".in.jpg")
        shutil.copyfile(photo, copy)
        p = run_proc(["mat2", str(copy)])
        cleaned = copy.with_name(copy.stem + ".cleaned.jpg")
        copy.unlink()
        if not cleaned.exists():
            raise ToolFailed(f"mat2 exit {p.returncode}")
        data = cleaned.read_bytes()
        cleaned.unlink()
        return p.seconds, p.maxrss_kb, data
    raise AssertionError(name)


def memprobe(tool: str, photo: Path) -> int | None:
    """Peak RSS growth (kB) of one clean in a fresh interpreter: VmHWM after - VmRSS before."""
    code = (
        "import sys, io\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[3])\n"
        "from benchlib import tools\n"
        "from benchlib.common import proc_status_kb\n"
        "import os\n"
        "data = Path(sys.argv[2]).read_bytes()\n"
        "fn = {'exifguard': tools.exifguard_inproc, 'piexif': tools.piexif_remove, 'pillow': tools.pillow_resave}[sys.argv[1]]\n"
        "import exifguard, PIL.Image, piexif\n"
        "try:\n"
        "    open('/proc/self/clear_refs', 'w').write('5')\n"
        "except OSError:\n"
        "    pass\n"
        "before = proc_status_kb(os.getpid(), 'VmRSS')\n"
        "out = fn(data)\n"
        "print(proc_status_kb(os.getpid(), 'VmHWM') - before)\n"
    )
    try:
        p = subprocess.run([sys.executable, "-c", code, tool, str(photo), str(Path(__file__).parents[1])],
                           capture_output=True, text=True, timeout=300)
        return int(p.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None


def slope(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y over x."""
    n = len(points)
    if n < 2:
        return float("nan"), float("nan")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return float("nan"), float("nan")
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - b * mx, b


def cleanup(work: Path) -> None:
    for sub in ("out", "judge", "large_out"):
        shutil.rmtree(work / sub, ignore_errors=True)
    os.sync()
