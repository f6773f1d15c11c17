"""Optional libFuzzer backend (atheris): edge coverage from bytecode instrumentation.

Why optional: atheris is not a dependency of exifguard (it needs a libFuzzer build; a wheel
exists for CPython 3.11 on x86-64 Linux).  When it imports, `scripts/fuzz --backend atheris`
runs each target in a child process where exifguard is instrumented and libFuzzer drives
the loop, with our structure-aware mutators as its custom mutator (libFuzzer's own byte
mutations are mixed in).  The invariants are the same functions as in the default loop.
The child writes findings (unminimised) and running totals to the --out folder; the parent
restarts it if libFuzzer stops (a timeout or an out-of-memory report is itself a finding),
then minimises what was found, in-process, with the default loop's machinery.

Carrier inputs are encoded for libFuzzer as: byte 0 = shape, bytes 1..4 = wrapper RNG seed,
byte 5 = wrapper flags, the rest = the image.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> bool:
    try:
        import atheris  # noqa: F401
        return True
    except ImportError:
        return False


def encode_carrier(img: bytes, shape_index: int, wseed: int, flags: int) -> bytes:
    return bytes([shape_index & 0xFF]) + struct.pack(">I", wseed & 0xFFFFFFFF) + bytes([flags & 0xFF]) + img


def decode_carrier(data: bytes) -> tuple[str, int, bool, bool, bytes] | None:
    from . import wrappers
    if len(data) < 7:
        return None
    shapes = sorted(wrappers.SHAPES)
    shape = shapes[data[0] % len(shapes)]
    wseed = struct.unpack(">I", data[1:5])[0]
    flags = data[5]
    return shape, wseed, bool(flags & 1), bool(flags & 2), data[6:]


# -- child ----------------------------------------------------------------------------------

def child(argv: list[str]) -> None:  # pragma: no cover - runs under libFuzzer
    p = argparse.ArgumentParser()
    p.add_argument("--target", choices=("engine", "carriers"), required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--exiftool-every", type=int, default=10)
    a, rest = p.parse_known_args(argv)

    import atheris

    from . import oracle as _oracle
    from . import runner, seeds, structure, wrappers
    from .invariants import Guard, check_carriers, check_engine
    from .mutate import Mutator

    with atheris.instrument_imports(include=["exifguard"]):
        import importlib
        import pkgutil

        import exifguard
        import exifguard.carriers
        for m in pkgutil.walk_packages(exifguard.__path__, "exifguard."):
            if m.name.startswith(("exifguard.proxy", "exifguard.cli")):
                continue
            try:
                importlib.import_module(m.name)
            except Exception:  # noqa: BLE001 - an optional module missing is no reason to stop
                pass

    guard = Guard()
    batch = _oracle.ExifToolBatch()
    markers = (seeds.MARK,)
    seen: set[str] = set()
    stats = {"execs": 0, "accepted": 0, "exiftool": 0, "started": time.time()}
    stats_path = a.out / f"atheris-{a.target}-{os.getpid()}.json"
    last = [0.0]
    pool: list[bytes] = [s.data for s in seeds.generated()]

    def save(v, data: bytes, carrier: tuple | None) -> None:
        key = f"{v.target}|{v.signature}"
        if key in seen:
            return
        seen.add(key)
        h = hashlib.sha1(key.encode()).hexdigest()[:10]
        d = a.out / v.target / f"{v.kind}-{h}"
        if d.exists():
            return
        d.mkdir(parents=True, exist_ok=True)
        (d / "input.bin").write_bytes(data)
        (d / "min.bin").write_bytes(data)
        info = {"target": v.target, "kind": v.kind, "signature": v.signature, "message": v.message,
                "mode": v.mode, "details": v.details, "markers": [seeds.MARK.decode()],
                "carrier": list(carrier) if carrier else None, "backend": "atheris", "minimized": False}
        if carrier:
            req = runner.build_request(data, *carrier)
            (d / "body.bin").write_bytes(req.body)
            (d / "min-body.bin").write_bytes(req.body)
            info["request"] = req.to_json()
        (d / "info.json").write_text(json.dumps(info, indent=1, default=str))
        print(f"fuzz[atheris]: NEW {v.target}/{v.kind}: {v.message}", flush=True)

    def oracle_add(target: str, fmt: str, out: bytes, inp: bytes, carrier: tuple | None) -> None:
        stats["accepted"] += 1
        if not a.exiftool_every or stats["accepted"] % a.exiftool_every:
            return
        if batch.add(_oracle.Pending(target, fmt, out, inp, {"markers": markers, "carrier": carrier})):
            for v, it in batch.flush():
                if not v.review_only:
                    save(v, it.input, it.context.get("carrier"))
            stats["exiftool"] = batch.checked

    def flush_stats() -> None:
        now = time.time()
        if now - last[0] > 5:
            last[0] = now
            stats_path.write_text(json.dumps(stats))

    def one_input(data: bytes) -> None:
        stats["execs"] += 1
        flush_stats()
        if a.target == "engine":
            o = check_engine(data, markers, guard)
            for v in o.violations:
                if not v.review_only:
                    save(v, data, None)
            for fmt, out, mode in o.accepted:
                if mode == "preserve":
                    oracle_add("engine", fmt, out, data, None)
            return
        dec = decode_carrier(data)
        if dec is None:
            return
        shape, wseed, wrap, touch, img = dec
        req = runner.build_request(img, shape, wseed, wrap, touch)
        end = req.span[0] + runner.image_end(img) if req.span and shape in runner.RAW_SHAPES else None
        o = check_carriers(req.method, req.url, req.headers, req.body, markers, guard,
                           runner.engine_accepts(img), shape, end, False, img)
        for v in o.violations:
            if not v.review_only:
                save(v, img, (shape, wseed, wrap, touch))
        for fmt, out in o.accepted_images:
            oracle_add("carriers", fmt, out, img, (shape, wseed, wrap, touch))

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if a.target == "carriers":
            dec = decode_carrier(data)
            if dec is None:
                return encode_carrier(rng.choice(pool), rng.randrange(256), rng.randrange(1 << 32), 0)
            shape, wseed, wrap, touch, img = dec
            head = bytearray(data[:6])
            r = rng.random()
            if r < 0.15:
                head[0] = rng.randrange(256)
            elif r < 0.3:
                head[1:5] = rng.randbytes(4)
                head[5] = rng.randrange(4)
            else:
                img = _mutate_image(img, rng, max_size - 6)
            return (bytes(head) + img)[:max_size]
        return _mutate_image(data, rng, max_size)

    def _mutate_image(img: bytes, rng: random.Random, max_size: int) -> bytes:
        if rng.random() < 0.25 or structure.sniff_kind(img) is None:
            return atheris.Mutate(img, max_size)
        m = Mutator(rng, lambda: rng.choice(pool), max_len=max_size)
        out = m.mutate(img)
        if len(out) < max_size and rng.random() < 0.05:
            pool.append(out)
            del pool[:-500]
        return out[:max_size]

    atheris.Setup([sys.argv[0], *rest], one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


# -- parent ---------------------------------------------------------------------------------

def run(cfg, summary) -> None:
    """Run each target under libFuzzer for its share of cfg.seconds; fill `summary`."""
    from . import seeds, wrappers
    assert cfg.out is not None
    targets = list(cfg.targets)
    share = (cfg.seconds or 60.0) / len(targets)
    state = cfg.out / "atheris-state"
    gen = seeds.generated()
    corp = seeds.corpus(cfg.corpus, cfg.max_seed_bytes) if cfg.use_corpus else []
    summary.seeds, summary.corpus_seeds = len(gen), len(corp)
    shapes = sorted(wrappers.SHAPES)
    from .runner import image_end
    for t in targets:
        sd = state / t / "seeds"
        wd = state / t / "corpus"
        sd.mkdir(parents=True, exist_ok=True)
        wd.mkdir(parents=True, exist_ok=True)
        for k, s in enumerate(gen + corp):  # corpus copies stay in the temp --out folder, never the repo
            data = s.data if t == "engine" else encode_carrier(s.data[:image_end(s.data)], k % len(shapes), k, 0)
            (sd / f"{k:04d}").write_bytes(data)
        deadline = time.monotonic() + share
        restarts = 0
        while time.monotonic() < deadline - 5 and restarts < 50:
            left = int(deadline - time.monotonic())
            cmd = [sys.executable, "-m", "fuzzlib.atheris_backend", "--target", t, "--out", str(cfg.out),
                   "--exiftool-every", str(cfg.exiftool_every), str(wd), str(sd),
                   f"-max_total_time={left}", f"-seed={cfg.seed + restarts}", "-rss_limit_mb=3072",
                   "-timeout=60", "-max_len=1600000", "-print_final_stats=1", "-print_pcs=0",
                   f"-artifact_prefix={cfg.out}/{t}-libfuzzer-"]
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE.parents[1] / "src"),
                                                               os.environ.get("PYTHONPATH", "")]))
            log = cfg.out / f"atheris-{t}-{restarts}.log"
            with log.open("w") as fh:
                proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
            text = log.read_text(errors="replace")
            execs = [int(x.split(":")[-1]) for x in text.splitlines() if x.startswith("stat::number_of_executed_units")]
            summary.execs[t] += execs[-1] if execs else _child_execs(cfg.out, t)
            covs = [ln for ln in text.splitlines() if " cov: " in ln]
            if covs:  # libFuzzer's edge count and corpus size, from its last status line
                parts = covs[-1].split()
                summary.coverage += int(parts[parts.index("cov:") + 1])
                if "corp:" in parts:
                    summary.queue[t] = parts[parts.index("corp:") + 1].split("/")[0]
            if proc.returncode not in (0,) and "Done" not in text:
                why = ("libFuzzer timeout" if "timeout" in text.lower() else "out of memory" if "out-of-memory" in text
                       else f"exit {proc.returncode}")
                if not cfg.quiet:
                    print(f"fuzz[atheris]: {t} child stopped ({why}); restarting", flush=True)
            restarts += 1
            if proc.returncode == 0:
                break
        for f in (cfg.out).glob(f"atheris-{t}-*.json"):
            st = json.loads(f.read_text())
            summary.accepted[t] += st.get("accepted", 0)
            summary.exiftool_checked += st.get("exiftool", 0)
            f.unlink()


def _child_execs(out: Path, target: str) -> int:
    n = 0
    for f in out.glob(f"atheris-{target}-*.json"):
        try:
            n = max(n, json.loads(f.read_text()).get("execs", 0))
        except ValueError:
            pass
    return n


if __name__ == "__main__":
    child(sys.argv[1:])
