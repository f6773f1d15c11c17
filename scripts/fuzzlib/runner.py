"""The fuzzing loop: pick an input, mutate it, check every invariant, keep what reaches new code.

One process, in-process calls (a Python engine has no crashes to isolate, and forking per
input would cost more than the call).  A run is reproducible for a given --seed and
--execs budget (a --seconds budget stops at a time-dependent point).
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import sys
import traceback
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import minimize as _min
from . import oracle as _oracle
from . import seeds as _seeds
from . import structure, wrappers
from .coverage import Coverage
from .invariants import MODES, SLOW_SECONDS, Guard, Violation, check_carriers, check_engine, describe
from .mutate import Mutator


RAW_SHAPES = {"raw", "raw_mislabelled", "junk_prefixed", "text_then_image", "multipart", "multipart_nested",
              "protobuf", "grpc_web", "zip_stored", "pdf_stream"}


def image_end(img: bytes) -> int:
    """Where the image's own structures end (before a trailer our parser sees)."""
    regions = structure.parse(img)
    tails = [r.start for r in regions if r.kind in ("trailer", "after-trailer")]
    if tails:
        return min(tails)
    if img[:4] == b"RIFF" and len(img) >= 8:
        return min(len(img), 8 + int.from_bytes(img[4:8], "little"))
    if structure.sniff_kind(img) in ("ISOBMFF", "JXL"):  # end of the last top-level box that fits
        ends = [r.end for r in regions if r.level == 0 and r.end <= len(img)
                and (r.len_at is None or int.from_bytes(img[r.len_at:r.len_at + r.len_size], "big")
                     in (0, r.end - r.start))]
        return max(ends) if ends else len(img)
    if img.endswith(_seeds.MARK):
        return len(img) - len(_seeds.MARK)
    return len(img)


def build_request(img: bytes, shape: str, wseed: int, wrap: bool, touch: bool) -> wrappers.Req:
    """The request for this image; the wrapper RNG is its own so a shrunk image can be
    re-wrapped the same way while minimising."""
    wr = random.Random(wseed)
    req = wrappers.SHAPES[shape](img, wr)
    return wrappers.mutate_wrapper(req, wr, touch_image=touch) if wrap else req


def has_image_data(img: bytes) -> bool:
    """More than magic bytes: a frame header / image data structure our parser recognises
    (an "image" of SOI+EOI is accepted by the engine but is no image a carrier must find)."""
    kinds = {r.kind for r in structure.parse(img)}
    fmt = structure.sniff_kind(img)
    if fmt == "JPEG":
        return any(k in kinds for k in ("FFC0", "FFC1", "FFC2", "FFC3", "FFC9", "FFCA", "FFCB")) and "FFDA" in kinds
    if fmt == "TIFF":
        return "tag0111" in kinds or "tag0144" in kinds
    if fmt == "BMP":
        return "pixels" in kinds
    return bool(kinds & {"IDAT", "VP8 ", "VP8L", "image", "jxlc", "jxlp", "mdat", "idat"})


def engine_accepts(img: bytes) -> bool:
    """The canary check on a carrier applies to images the engine cleans on their own: such an
    image, wrapped anywhere, must be found and cleaned or the request blocked.  (Whether a
    damaged image is "plausible" enough to block is the carrier's call, not the fuzzer's.)"""
    from exifguard import ScrubError, scrub
    if not has_image_data(img):
        return False
    try:
        scrub(img)
        return True
    except ScrubError:
        return False
    except Exception:  # noqa: BLE001 - the engine target reports this one
        return False


@dataclass
class Entry:
    data: bytes
    markers: tuple[bytes, ...]
    name: str
    shape: str = ""
    picked: int = 0


@dataclass
class Finding:
    violation: Violation
    count: int
    path: Path | None
    input_len: int
    min_len: int


@dataclass
class Config:
    seconds: float | None = 60.0
    execs: int | None = None
    targets: tuple[str, ...] = ("engine", "carriers")
    seed: int = 1
    corpus: Path | None = None
    use_corpus: bool = True
    max_seed_bytes: int = 1_500_000
    out: Path | None = None
    trace_rate: float = 0.25
    exiftool_every: int = 10
    """Queue every Nth accepted output for the ExifTool batch (0: never)."""
    exiftool_batch: int = 40
    minimize_seconds: float = 30.0
    progress_seconds: float = 60.0
    quiet: bool = False
    backend: str = "loop"
    """"loop" (default, reproducible) or "atheris" (libFuzzer; see atheris_backend.py)."""


@dataclass
class Summary:
    execs: Counter = field(default_factory=Counter)
    accepted: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    coverage: int = 0
    queue: dict = field(default_factory=dict)
    exiftool_checked: int = 0
    findings: dict[str, Finding] = field(default_factory=dict)
    seeds: int = 0
    corpus_seeds: int = 0
    fuzzer_errors: int = 0

    @property
    def total(self) -> int:
        return sum(self.execs.values())

    def by_kind(self) -> Counter:
        return Counter(f"{f.violation.target}/{f.violation.kind}" for f in self.findings.values())

    @property
    def bugs(self) -> list[Finding]:
        """Findings that break an invariant outright (not the review-only kinds)."""
        return [f for f in self.findings.values() if not f.violation.review_only]

    def text(self) -> str:
        rate = self.total / self.seconds if self.seconds else 0.0
        lines = [f"fuzz: {self.total} executions in {self.seconds:.0f} s ({rate:.1f}/s); "
                 + ", ".join(f"{t} {n} ({self.accepted[t]} accepted)" for t, n in sorted(self.execs.items())),
                 f"fuzz: seeds {self.seeds} generated + {self.corpus_seeds} corpus; queue "
                 + ", ".join(f"{k} {v}" for k, v in self.queue.items())
                 + f"; {self.coverage} arcs covered; ExifTool read {self.exiftool_checked} accepted outputs"
                 + (f"; {self.fuzzer_errors} fuzzer-internal errors" if self.fuzzer_errors else ""),
                 f"fuzz: {len(self.findings)} distinct findings"
                 + (": " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_kind().items())) if self.findings else "")]
        for f in sorted(self.findings.values(), key=lambda f: (f.violation.review_only, f.violation.target,
                                                                  f.violation.kind)):
            lines.append(("  ? " if f.violation.review_only else "  - ") + f"{describe(f.violation)} x{f.count}; input {f.input_len} B -> {f.min_len} B"
                         + (f"; saved {f.path}" if f.path else ""))
        return "\n".join(lines)


class Fuzzer:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.cov = Coverage()
        self.guard = Guard()
        self.summary = Summary()
        self.oracle = _oracle.ExifToolBatch(cfg.exiftool_batch)
        self.mut = Mutator(self.rng, self._splice_source)
        self.engine_q: list[Entry] = []
        self.carrier_q: list[Entry] = []
        self._accepted_n = 0
        self._cur_fmt: str | None = None
        self._origin: Entry | None = None
        self.corpus_names: set[str] = set()
        self.out = cfg.out

    # -- corpus ---------------------------------------------------------------------------
    def load_seeds(self) -> None:
        gen = _seeds.generated()
        self.summary.seeds = len(gen)
        corp = _seeds.corpus(self.cfg.corpus, self.cfg.max_seed_bytes) if self.cfg.use_corpus else []
        self.summary.corpus_seeds = len(corp)
        self.corpus_names = {s.name for s in corp}
        for s in gen + corp:
            markers = tuple(dict.fromkeys((_seeds.MARK, *s.markers)))
            self.engine_q.append(Entry(s.data, markers, s.name))
        shapes = sorted(wrappers.SHAPES)
        # carrier seeds end where the image's structures end: bytes after EOI/IEND/RIFF size
        # cannot be attributed to the image inside a wrapper (see README, "explained")
        cut = [(s.name, s.data[:image_end(s.data)]) for s in gen]
        for k, (name, img) in enumerate(cut):  # every generated seed in one shape, round robin
            self.carrier_q.append(Entry(img, (_seeds.MARK,), name, shapes[k % len(shapes)]))
        for k, shape in enumerate(shapes):  # and every shape at least once with a JPEG and a PNG
            for name, img in cut[:1] + [c for c in cut if c[0].startswith("png")][:1]:
                self.carrier_q.append(Entry(img, (_seeds.MARK,), name, shape))

    def _splice_source(self) -> bytes:
        q = self.engine_q
        if self._cur_fmt and self.rng.random() < 0.7:
            same = [e for e in q[-400:] if structure.sniff_kind(e.data) == self._cur_fmt]
            if same:
                return self.rng.choice(same).data
        return self.rng.choice(q).data

    def _pick(self, q: list[Entry]) -> Entry:
        # favour recent (new-coverage) entries and rarely picked ones
        if len(q) > 8 and self.rng.random() < 0.4:
            e = self.rng.choice(q[-max(8, len(q) // 5):])
        else:
            e = self.rng.choice(q)
        e.picked += 1
        return e

    # -- one execution per target ---------------------------------------------------------
    def step_engine(self, fresh: Entry | None = None) -> None:
        e = fresh or self._pick(self.engine_q)
        self._origin = e
        self._cur_fmt = structure.sniff_kind(e.data)
        data = e.data if fresh else self.mut.mutate(e.data)
        trace = fresh is not None or self.rng.random() < self.cfg.trace_rate
        if trace:
            outcome = self.cov.run(check_engine, data, e.markers, self.guard, MODES, True)
            if outcome.seconds > SLOW_SECONDS:  # re-time without the tracer's overhead
                outcome.violations += [v for v in check_engine(data, e.markers, self.guard).violations
                                       if v.kind == "slow"]
            if self.cov.new and not fresh and len(data) <= 4 * 1024 * 1024:
                self.engine_q.append(Entry(data, e.markers, e.name + "+"))
        else:
            outcome = check_engine(data, e.markers, self.guard)
        self.summary.execs["engine"] += 1
        for v in outcome.violations:
            self.record(v, data, e.markers)
        if outcome.accepted:
            self.summary.accepted["engine"] += 1
        for fmt, out, mode in outcome.accepted:
            if mode == "preserve":
                self._maybe_oracle("engine", fmt, out, data, {"mode": mode, "markers": e.markers})

    def _build(self, img: bytes, shape: str, wseed: int, wrap: bool, touch: bool) -> wrappers.Req:
        return build_request(img, shape, wseed, wrap, touch)

    def step_carriers(self, fresh: Entry | None = None) -> None:
        e = fresh or self._pick(self.carrier_q)
        self._origin = e
        img = e.data
        self._cur_fmt = structure.sniff_kind(img)
        if not fresh and self.rng.random() < 0.5:
            img = self.mut.mutate(img)
        shape = e.shape if fresh or self.rng.random() < 0.6 else self.rng.choice(sorted(wrappers.SHAPES))
        wseed = self.rng.randrange(1 << 30)
        wrap = not fresh and self.rng.random() < 0.4
        touch = wrap and self.rng.random() < 0.2
        req = self._build(img, shape, wseed, wrap, touch)
        plausible = engine_accepts(img)
        img_end = req.span[0] + image_end(img) if req.span and req.shape in RAW_SHAPES else None
        args = (req.method, req.url, req.headers, req.body, e.markers, self.guard, plausible, shape, img_end, False,
                img)
        trace = fresh is not None or self.rng.random() < self.cfg.trace_rate
        if trace:
            outcome = self.cov.run(check_carriers, *args[:9], True, img)
            if outcome.seconds > SLOW_SECONDS:
                outcome.violations += [v for v in check_carriers(*args).violations if v.kind == "slow"]
            if self.cov.new and not fresh and len(img) <= 4 * 1024 * 1024:
                self.carrier_q.append(Entry(img, e.markers, e.name + "+", shape))
        else:
            outcome = check_carriers(*args)
        self.summary.execs["carriers"] += 1
        if outcome.accepted:
            self.summary.accepted["carriers"] += 1
        for v in outcome.violations:
            self.record(v, img, e.markers, req, carrier=(shape, wseed, wrap, touch))
        for fmt, out in outcome.accepted_images:
            self._maybe_oracle("carriers", fmt, out, img, {"markers": e.markers, "req": req,
                                                           "carrier": (shape, wseed, wrap, touch)})

    def _maybe_oracle(self, target: str, fmt: str, out: bytes, inp: bytes, ctx: dict) -> None:
        if not self.cfg.exiftool_every:
            return
        self._accepted_n += 1
        if self._accepted_n % self.cfg.exiftool_every:
            return
        if self.oracle.add(_oracle.Pending(target, fmt, out, inp, ctx)):
            self.flush_oracle()

    def flush_oracle(self) -> None:
        for v, it in self.oracle.flush():
            self.record(v, it.input, it.context.get("markers", ()), it.context.get("req"),
                        carrier=it.context.get("carrier"))
        self.summary.exiftool_checked = self.oracle.checked

    # -- findings -------------------------------------------------------------------------
    def _reproduces(self, v: Violation, markers: tuple[bytes, ...], carrier: tuple | None):
        if v.kind == "exiftool":
            first = v.details.get("tags", [""])[0]

            def fails(cand: bytes) -> bool:
                if v.target == "engine":
                    from exifguard import ScrubError, scrub
                    try:
                        res = scrub(cand)
                    except ScrubError:
                        return False
                    return first in _oracle.leaks_of(res.format, res.data, markers)
                assert carrier is not None
                r = self._build(cand, *carrier)
                o = check_carriers(r.method, r.url, r.headers, r.body, markers, self.guard, False)
                return any(first in _oracle.leaks_of(f, d, markers) for f, d in o.accepted_images)
            return fails
        if v.target == "engine":
            modes = tuple(m for m in MODES if m[0] == v.mode) or MODES

            def fails(cand: bytes) -> bool:
                return any(x.signature == v.signature for x in check_engine(cand, markers, self.guard, modes).violations)
            return fails
        assert carrier is not None

        def fails(cand: bytes) -> bool:
            if v.kind.startswith("canary") and not engine_accepts(cand):
                return False  # keep an image the engine accepts: a bare canary in a body is no finding
            r = self._build(cand, *carrier)
            end = r.span[0] + image_end(cand) if r.span and r.shape in RAW_SHAPES else None
            o = check_carriers(r.method, r.url, r.headers, r.body, markers, self.guard, True, r.shape, end,
                               False, cand)
            return any(x.signature == v.signature for x in o.violations)
        return fails

    def record(self, v: Violation, data: bytes, markers: tuple[bytes, ...], req: wrappers.Req | None = None,
               carrier: tuple | None = None) -> None:
        """`data` is the image (engine: the input; carriers: the image inside the request)."""
        key = f"{v.target}|{v.signature}"
        f = self.summary.findings.get(key)
        if f is not None:
            f.count += 1
            return
        small = data
        if v.kind not in ("slow", "hang", "memory", "exiftool-unlisted") and self.cfg.minimize_seconds > 0:
            secs = self.cfg.minimize_seconds / (3 if v.kind == "exiftool" else 1)
            small = _min.minimize(data, self._reproduces(v, markers, carrier), seconds=secs,
                                  max_tries=300 if v.kind == "exiftool" else 4000)
        small_req = self._build(small, *carrier) if carrier else None
        path = self.save(v, data, small, markers, req, small_req)
        self.summary.findings[key] = Finding(v, 1, path, len(data), len(small))
        if not self.cfg.quiet:
            print(f"fuzz: NEW {describe(v)} ({len(data)} B -> {len(small)} B)", flush=True)

    def save(self, v: Violation, data: bytes, small: bytes, markers: tuple[bytes, ...],
             req: wrappers.Req | None, small_req: wrappers.Req | None) -> Path | None:
        if self.out is None:
            return None
        h = hashlib.sha1(f"{v.target}|{v.signature}".encode()).hexdigest()[:10]
        d = self.out / v.target / f"{v.kind}-{h}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "input.bin").write_bytes(data)
        (d / "min.bin").write_bytes(small)
        if req is not None and small_req is not None:
            (d / "body.bin").write_bytes(req.body)
            (d / "min-body.bin").write_bytes(small_req.body)
        info = {"target": v.target, "kind": v.kind, "signature": v.signature, "message": v.message,
                "mode": v.mode, "details": v.details, "markers": [m.decode("latin-1") for m in markers],
                "request": small_req.to_json() if small_req else None, "seed": self.cfg.seed,
                "origin": self._origin.name if self._origin else None,
                "from_corpus": bool(self._origin and self._origin.name.rstrip("+") in self.corpus_names)}
        (d / "info.json").write_text(json.dumps(info, indent=1, default=str))
        return d

    # -- atheris results ------------------------------------------------------------------
    def adopt(self, d: Path) -> None:
        """Minimise a finding the atheris child saved and add it to the summary."""
        info = json.loads((d / "info.json").read_text())
        from .invariants import Violation
        v = Violation(info["target"], info["kind"], info["signature"], info["message"], info.get("mode", ""),
                      info.get("details") or {})
        carrier = tuple(info["carrier"]) if info.get("carrier") else None
        data = (d / "input.bin").read_bytes()
        small = data
        markers = (_seeds.MARK,)
        if not info.get("minimized") and v.kind not in ("slow", "hang", "memory") and self.cfg.minimize_seconds > 0:
            small = _min.minimize(data, self._reproduces(v, markers, carrier), seconds=self.cfg.minimize_seconds,
                                  max_tries=300 if v.kind == "exiftool" else 4000)
            (d / "min.bin").write_bytes(small)
            if carrier:
                req = build_request(small, *carrier)
                (d / "min-body.bin").write_bytes(req.body)
                info["request"] = req.to_json()
            info["minimized"] = True
            (d / "info.json").write_text(json.dumps(info, indent=1, default=str))
        self.summary.findings[f"{v.target}|{v.signature}"] = Finding(v, 1, d, len(data), len(small))

    def run_atheris(self) -> Summary:
        from . import atheris_backend
        assert self.out is not None
        start = time.monotonic()
        atheris_backend.run(self.cfg, self.summary)
        for info_path in sorted(self.out.glob("*/*/info.json")):
            self.adopt(info_path.parent)
        self.summary.seconds = time.monotonic() - start
        return self.summary

    # -- loop -----------------------------------------------------------------------------
    def run(self) -> Summary:
        cfg = self.cfg
        if cfg.backend == "atheris":
            return self.run_atheris()
        self.load_seeds()
        start = time.monotonic()
        stop = start + cfg.seconds if cfg.seconds else None
        last_progress = start
        # every seed once, unmutated, traced: the coverage baseline
        if "engine" in cfg.targets:
            for e in list(self.engine_q):
                self.step_engine(e)
        if "carriers" in cfg.targets:
            for e in list(self.carrier_q):
                self.step_carriers(e)
        stop_now = []

        def _term(signum, frame):  # SIGTERM: stop after this input and print the summary
            stop_now.append(signum)
        old_term = None
        try:
            old_term = signal.signal(signal.SIGTERM, _term)
        except ValueError:  # not the main thread
            pass
        try:
            self._loop(start, stop, last_progress, stop_now)
        finally:  # a library caller (the CI test) gets its signal handlers back
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            self.guard.close()
        self.flush_oracle()
        self.summary.seconds = time.monotonic() - start
        self.summary.coverage = len(self.cov)
        self.summary.queue = {"engine": len(self.engine_q), "carriers": len(self.carrier_q)}
        return self.summary

    def _loop(self, start: float, stop: float | None, last_progress: float, stop_now: list) -> None:
        cfg = self.cfg
        targets = [t for t in cfg.targets if t in ("engine", "carriers")]
        weights = {"engine": 0.55, "carriers": 0.45}
        while True:
            now = time.monotonic()
            if (stop is not None and now >= stop) or stop_now:
                break
            if cfg.execs is not None and self.summary.total >= cfg.execs:
                break
            t = targets[0] if len(targets) == 1 else self.rng.choices(targets, [weights[x] for x in targets])[0]
            try:
                if t == "engine":
                    self.step_engine()
                else:
                    self.step_carriers()
            except Exception as exc:  # noqa: BLE001 - a bug in the fuzzer must not end a long run
                self.summary.fuzzer_errors += 1
                if self.summary.fuzzer_errors <= 5:
                    print(f"fuzz: internal error in the fuzzer itself ({type(exc).__name__}: {exc} at "
                          f"{traceback.extract_tb(exc.__traceback__)[-1].name}); continuing", flush=True)
            if not cfg.quiet and now - last_progress >= cfg.progress_seconds:
                last_progress = now
                s = self.summary
                print(f"fuzz: {now - start:.0f} s, {s.total} execs ({s.total / (now - start):.1f}/s), "
                      f"{len(self.cov)} arcs, queue {len(self.engine_q)}/{len(self.carrier_q)}, "
                      f"{len(s.findings)} findings", flush=True)


def run(cfg: Config) -> Summary:
    return Fuzzer(cfg).run()


if __name__ == "__main__":  # pragma: no cover
    print(run(Config(seconds=float(sys.argv[1]) if len(sys.argv) > 1 else 10)).text())
