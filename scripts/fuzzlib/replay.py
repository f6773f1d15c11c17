"""Regression files: export a minimised finding into tests/fuzz/regressions, and replay them.

Layout: tests/fuzz/regressions/<target>/<name>.bin (the image for the engine, the request
body for carriers) plus <name>.json: what was found, the request line and headers for
carriers, and "status": "open" (bug not fixed yet: the replay test expects the failure)
or "fixed" (the invariant must hold).

Export refuses inputs that may hold a real person's metadata: findings that started from
a corpus file, and any file with a printable run of 8+ bytes that no generated seed holds
(splices can carry corpus bytes into a generated input).  Describe those instead.

    python -m fuzzlib.replay export FINDING_DIR NAME [--status open|fixed]
    python -m fuzzlib.replay check [FILE.bin ...]     (all regression files by default)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from . import seeds
from .invariants import Guard, Violation, check_carriers, check_engine

REGRESSIONS = seeds.REPO / "tests" / "fuzz" / "regressions"
_PRINTABLE = re.compile(rb"[\x20-\x7e]{8,}")


def _generated_text() -> bytes:
    from .mutate import TOKENS
    return b"\n".join([s.data for s in seeds.generated()] + list(TOKENS) + [seeds.MARK])


def _corpus_blobs() -> list[bytes]:
    folder = seeds.DEFAULT_CORPUS / "images"
    if not folder.is_dir():
        return []
    return [p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()]


def foreign_text(data: bytes) -> list[bytes]:
    """Printable runs (8+ bytes) that may come from a corpus file.

    With the corpus present: runs holding an 8-byte window that a corpus file contains and
    no generated seed does.  Without it: runs holding an 8-byte window that no generated
    seed, mutation token or chunk/box name explains (stricter, may refuse a harmless
    mutation; use --force after looking)."""
    known = _generated_text()
    corpus = _corpus_blobs()
    from .mutate import BOX_TYPES, PNG_TYPES, RIFF_TYPES
    names = set(BOX_TYPES) | set(PNG_TYPES) | set(RIFF_TYPES)
    out = []
    for m in _PRINTABLE.finditer(data):
        run = m.group(0)
        windows = [run[i:i + 8] for i in range(len(run) - 7)]
        unknown = [w for w in windows if w not in known]
        if corpus:
            if any(any(w in blob for blob in corpus) for w in unknown):
                out.append(run)
            continue
        stripped = run
        for n in names:
            stripped = stripped.replace(n, b"\n")
        if any(len(p) >= 8 and p not in known for p in stripped.split(b"\n")) and unknown:
            out.append(run)
    return out


def export(finding: Path, name: str, status: str, force: bool = False) -> Path:
    info = json.loads((finding / "info.json").read_text())
    if info.get("from_corpus") and not force:
        raise SystemExit("refusing: this finding started from a corpus file (describe it instead)")
    target = info["target"]
    data = (finding / ("min-body.bin" if target == "carriers" else "min.bin")).read_bytes()
    odd = foreign_text((finding / "min.bin").read_bytes())  # the image (a body adds wrapper text)
    if odd and not force:
        raise SystemExit(f"refusing: {len(odd)} printable run(s) not from generated seeds (corpus splice?)")
    dest = REGRESSIONS / target
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"{name}.bin").write_bytes(data)
    meta = {"kind": info["kind"], "signature": info["signature"], "message": info["message"],
            "status": status, "mode": info.get("mode", "")}
    if target == "carriers":
        r = info["request"]
        meta.update({"method": r["method"], "url": r["url"], "headers": r["headers"], "shape": r["shape"]})
    (dest / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return dest / f"{name}.bin"


def cases() -> list[Path]:
    return sorted(REGRESSIONS.glob("*/*.bin"))


def replay(path: Path, guard: Guard | None = None) -> list[Violation]:
    """Every invariant violation this regression file still shows (review-only kinds excluded)."""
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    data = path.read_bytes()
    markers = (seeds.MARK,)
    if path.parent.name == "carriers":
        headers = [tuple(h) for h in meta.get("headers", [])]
        out = check_carriers(meta.get("method", "POST"), meta.get("url", "https://claude.ai/upload"),
                             headers, data, markers, guard, True, meta.get("shape", ""))
        found = out.violations
        images = out.accepted_images
    else:
        eo = check_engine(data, markers, guard)
        found = eo.violations
        images = [(f, o) for f, o, m in eo.accepted if m == "preserve"]
    from . import oracle
    if oracle.available():
        for fmt, img in images:
            tags = oracle.leaks_of(fmt, img, markers)
            if tags:
                found.append(Violation(path.parent.name, "exiftool", f"exiftool:{fmt}:{tags[0]}",
                                       f"ExifTool reads privacy tags: {', '.join(tags[:5])}"))
    return [v for v in found if not v.review_only]


def recheck(finding: Path) -> tuple[str, list[Violation]]:
    """Does a saved finding (a --out folder entry) still reproduce on the current tree?
    Returns ("open" | "fixed", violations now seen on its minimised input)."""
    info = json.loads((finding / "info.json").read_text())
    markers = tuple(m.encode("latin-1") for m in info.get("markers") or [seeds.MARK.decode()])
    from . import oracle
    if info["target"] == "engine":
        data = (finding / "min.bin").read_bytes()
        eo = check_engine(data, markers)
        now = list(eo.violations)
        if info["kind"] == "exiftool" and oracle.available():
            for fmt, out, mode in eo.accepted:
                if mode == "preserve" and oracle.leaks_of(fmt, out, markers):
                    now.append(Violation("engine", "exiftool", info["signature"], "ExifTool still reads it"))
    else:
        r = info["request"]
        body = (finding / "min-body.bin").read_bytes()
        img = (finding / "min.bin").read_bytes()
        from .runner import RAW_SHAPES, image_end
        end = r["span"][0] + image_end(img) if r.get("span") and r["shape"] in RAW_SHAPES else None
        from .runner import engine_accepts
        co = check_carriers(r["method"], r["url"], [tuple(h) for h in r["headers"]], body, markers, None,
                            engine_accepts(img), r["shape"], end, False, img)
        now = list(co.violations)
        if info["kind"] == "exiftool" and oracle.available():
            for fmt, img in co.accepted_images:
                if oracle.leaks_of(fmt, img, markers):
                    now.append(Violation("carriers", "exiftool", info["signature"], "ExifTool still reads it"))
    sig = info["signature"]
    same = [v for v in now if v.signature == sig
            or (v.kind == info["kind"] and not info["kind"].startswith("canary"))]
    if same:
        return "open", now
    if any(v.review_only and v.kind.startswith(info["kind"].split("-")[0]) for v in now):
        return "review", now  # still seen, but now classified as needing judgement (see README)
    return "fixed", now


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzzlib.replay")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("finding", type=Path)
    e.add_argument("name")
    e.add_argument("--status", choices=("open", "fixed"), default="open")
    e.add_argument("--force", action="store_true")
    c = sub.add_parser("check")
    c.add_argument("files", nargs="*", type=Path)
    r = sub.add_parser("recheck", help="re-run saved findings (an --out folder) on the current tree")
    r.add_argument("out", type=Path)
    r.add_argument("--all", action="store_true", help="include review-only kinds")
    a = p.parse_args(argv)
    if a.cmd == "recheck":
        from .invariants import REVIEW_KINDS
        for info_path in sorted(a.out.glob("*/*/info.json")):
            info = json.loads(info_path.read_text())
            if info["kind"] in REVIEW_KINDS and not a.all:
                continue
            status, now = recheck(info_path.parent)
            print(f"{status:6} {info['target']:8} {info['signature'][:70]:70} {info_path.parent}")
        return 0
    if a.cmd == "export":
        print(export(a.finding, a.name, a.status, a.force))
        return 0
    bad = 0
    for f in a.files or cases():
        vs = replay(f)
        print(f"{f.parent.name}/{f.name}: " + ("ok" if not vs else "; ".join(v.message for v in vs)))
        bad += bool(vs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
