"""Command line of scripts/fetch-corpus (see README.md next to this file)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

from . import describe, fetch, sources

REPO = Path(__file__).resolve().parents[2]
SOURCES = REPO / "tests" / "support" / "corpus-sources.json"
EXIFTOOL_HINT = ("install ExifTool (Debian/Ubuntu: sudo apt-get install libimage-exiftool-perl; "
                 "macOS: brew install exiftool; Windows: the installer from https://exiftool.org)")


def default_dest() -> Path:
    """The folder the tests read (tests/support/corpus.py resolves it the same way)."""
    env = os.environ.get("EXIFGUARD_CORPUS")
    return Path(env) if env else REPO.parent / "shared" / "corpus"


WINDOWS = os.name == "nt"


def _quote(path: Path | str) -> str:
    return f'"{path}"' if WINDOWS else shlex.quote(str(path))


def command() -> str:
    """How to run this script from the current folder (printed commands must run as printed:
    bash spelling, or PowerShell's on Windows, where the file runs through python)."""
    script = REPO / "scripts" / "fetch-corpus"
    try:
        rel = script.relative_to(Path.cwd())
        return f"python {rel}" if WINDOWS else "./" + rel.as_posix()
    except ValueError:
        return f"python {_quote(script)}" if WINDOWS else _quote(script)


def set_env(value: Path) -> str:
    """Setting EXIFGUARD_CORPUS for the commands that follow, in the local shell's spelling."""
    return f"$env:EXIFGUARD_CORPUS = {_quote(value)};" if WINDOWS else f"EXIFGUARD_CORPUS={_quote(value)}"


def _writable(folder: Path) -> str | None:
    """None when files can be created in `folder` (created if needed), else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".fetch-corpus-probe-"):
            pass
        return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _read_only_message(dest: Path, why: str) -> str:
    home = Path.home() / "exifguard-corpus"
    return (f"fetch-corpus: cannot write to {dest} ({why}).\n"
            f"  Fetch into a folder you own and point the tests at it:\n"
            f"    {set_env(home)} {command()} --dest {_quote(home)}\n"
            f"  then run the tests with EXIFGUARD_CORPUS={home} set.")


def _describe(dest: Path, present: list[sources.Source], changed: bool, log) -> str | None:
    """Write manifest.json + exiftool_g1.json for the files present; None on success, else why not."""
    manifest = dest / "manifest.json"
    if manifest.exists() and not describe.is_generated(manifest):
        log(f"fetch-corpus: {manifest} is the corpus's own manifest; left as it is")
        return None
    if not present:
        return "no corpus file is present to describe"
    g1 = dest / "exiftool_g1.json"
    if not changed and describe.complete(manifest, present) and g1.exists():
        return None
    try:
        import PIL  # noqa: F401  (decodes_with_pillow must be measured, not guessed)
    except ImportError:
        return ("Pillow is not importable by this Python: create the project's venv first "
                "(./scripts/test does it), then run this again; fetched files are kept")
    if not describe.find_exiftool():
        return f"cannot describe the corpus for the tests: {EXIFTOOL_HINT}, then run this again"
    try:
        entries, g1_data = describe.describe(dest, present)
    except (describe.DescribeError, OSError, ValueError) as exc:
        return f"cannot describe the corpus: {exc}"
    _write_atomic(g1, json.dumps(g1_data, indent=1, ensure_ascii=False) + "\n")
    _write_atomic(manifest, json.dumps(entries, indent=1, ensure_ascii=False) + "\n")
    log(f"fetch-corpus: wrote {manifest.name} and {g1.name} ({len(entries)} files, from ExifTool "
        f"and Pillow on this machine)")
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/fetch-corpus", description=(
        "Download the real-image test corpus from its public sources (GitHub, at pinned commits), "
        "verify each file's size and sha256, and write the manifest the tests read."))
    p.add_argument("--dest", type=Path, default=None,
                   help="corpus folder (default: $EXIFGUARD_CORPUS, else ../shared/corpus next to the checkout)")
    p.add_argument("--sources", type=Path, default=SOURCES,
                   help="sources list or corpus manifest to read (default tests/support/corpus-sources.json)")
    p.add_argument("--base-url", default=None,
                   help="fetch from a mirror laid out as <base>/<owner>/<repo>/<commit>/<path> "
                        "instead of https://raw.githubusercontent.com")
    p.add_argument("--attempts", type=int, default=4, help="tries per file on network errors (default 4)")
    p.add_argument("--backoff", type=float, default=2.0,
                   help="seconds before the first retry, doubled each time (default 2)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a try fails")
    p.add_argument("--no-describe", action="store_true",
                   help="only download and verify; do not write manifest.json/exiftool_g1.json")
    p.add_argument("--write-sources", type=Path, default=None, metavar="FILE",
                   help="write the source fields of --sources (a full manifest) to FILE and stop; "
                        "no metadata values are copied")
    p.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    a = p.parse_args(argv)

    def log(msg: str) -> None:
        if not a.quiet:
            print(msg, flush=True)

    try:
        srcs = sources.load(a.sources)
    except sources.SourcesError as exc:
        print(f"fetch-corpus: {exc}", file=sys.stderr)
        return 2
    if a.write_sources:
        _write_atomic(a.write_sources, sources.dump(srcs))
        print(f"fetch-corpus: wrote {len(srcs)} sources to {a.write_sources}")
        return 0

    dest = (a.dest or default_dest()).expanduser()
    todo = [s for s in srcs if not fetch.file_matches(dest / s.file, s)]
    if todo:
        why = _writable(dest)
        if why:
            print(_read_only_message(dest, why), file=sys.stderr)
            return 2
        for stale in fetch.stale_parts(dest):
            stale.unlink(missing_ok=True)
    log(f"fetch-corpus: {len(srcs)} files into {dest}: {len(srcs) - len(todo)} already there, "
        f"{len(todo)} to fetch from {a.base_url or sources.GITHUB_RAW}")

    def progress(o: fetch.Outcome, i: int, n: int) -> None:
        if o.status == "failed":
            print(f"  [{i}/{n}] FAILED {o.file}: {o.reason}", file=sys.stderr, flush=True)
        else:
            log(f"  [{i}/{n}] {o.status} {o.file}{f' ({o.reason})' if o.reason else ''}")

    outcomes = fetch.fetch_all(todo, dest, base_url=a.base_url, attempts=max(1, a.attempts),
                               backoff=max(0.0, a.backoff), timeout=a.timeout, progress=progress)
    failed = [o for o in outcomes if o.status == "failed"]
    fetched = [o for o in outcomes if o.status == "fetched"]
    already = len(srcs) - len(fetched) - len(failed)
    problem = None
    if not a.no_describe:
        present = [s for s in srcs if s.file not in {o.file for o in failed}]
        problem = _describe(dest, present, bool(fetched), log)

    print(f"fetch-corpus: {len(fetched)} fetched, {already} already there, "
          f"{len(failed)} failed")
    for o in failed:
        print(f"  failed {o.file}: {o.reason}")
    if problem:
        print(f"fetch-corpus: {problem}", file=sys.stderr)
    if failed:
        print(f"fetch-corpus: run {command()} again to retry the failed files "
              "(verified files are kept)", file=sys.stderr)
    if not failed and not problem and dest.resolve() != default_dest().resolve():
        print(f"fetch-corpus: the tests read this corpus with {set_env(dest).rstrip(';')}")
    return 1 if failed or problem else 0


if __name__ == "__main__":
    sys.exit(main())
