"""Offline subcommands: `exifguard inspect` and `exifguard scrub`.

`inspect` shows what the proxy would remove from each file (tag names and privacy
categories, never values unless `--show-values`).  `scrub` writes clean copies; by
default the output is exactly what the proxy would send (same byte length).

Files are handled one by one: a bad file gets a one-line error and a non-zero exit,
good files in the same call are still written, and no partial or unscrubbed output
file is ever left behind (writes go to a temporary file that is renamed into place).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from ..engine import ScrubError, ScrubOptions, ScrubResult, scrub
from ..engine.report import Category

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2

_CATEGORY_ORDER = [Category.LOCATION, Category.TIME, Category.DEVICE, Category.IDENTITY,
                   Category.TEXT, Category.THUMBNAIL, Category.OTHER]


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add the offline subcommands to the `exifguard` parser."""
    p = sub.add_parser("inspect", help="show what metadata would be removed (names, not values)",
                       description="Show, per file, which metadata exifguard would remove and what it "
                                   "keeps. Values are private and hidden unless --show-values.")
    p.add_argument("files", nargs="+", metavar="FILE", help="image files (any format exifguard reads)")
    p.add_argument("--json", action="store_true", help="machine-readable output, one JSON document")
    p.add_argument("--show-values", action="store_true",
                   help="also print the metadata values (private data; control characters escaped)")
    p.set_defaults(func=cmd_inspect)

    s = sub.add_parser("scrub", help="write clean copies of image files",
                       description="Write copies without metadata. Pixels are never re-encoded; by "
                                   "default the output keeps the input's exact byte length.")
    s.add_argument("files", nargs="+", metavar="FILE", help="image files to clean (never modified without "
                   "--in-place)")
    dest = s.add_mutually_exclusive_group(required=True)
    dest.add_argument("-o", "--output", metavar="OUT",
                      help="output file (one input), or folder: several inputs, an existing folder, or a "
                           "name ending in / (created if missing)")
    dest.add_argument("--in-place", action="store_true", help="replace each file with its clean version")
    s.add_argument("--compact", action="store_true",
                   help="drop removed structures instead of padding them (smaller, length changes)")
    s.add_argument("--no-orientation", action="store_true",
                   help="do not keep EXIF Orientation (the image may display rotated)")
    s.add_argument("--strip-icc", action="store_true",
                   help="remove ICC colour profiles too (colours may shift)")
    s.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    s.set_defaults(func=cmd_scrub)


def escape(text: str) -> str:
    """Make untrusted text safe for a terminal: control characters become \\xNN escapes."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def _human_size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n}"


#: tag names the engine lists inside a removed EXIF block although the clean copy keeps
#: them (rewritten into a fresh minimal block), by the `Kept.what` that keeps them
_REWRITTEN_TAGS = {"orientation": ("Orientation",)}


def as_reported(result: ScrubResult) -> ScrubResult:
    """The result as `inspect` shows it: a tag that is kept is not also listed as removed.

    Why: the JPEG and PNG walkers neutralise the whole EXIF block and write a minimal
    one holding only Orientation, and they list every tag of the old block as removed,
    Orientation included, so `inspect` said "Orientation" under removed *and*
    "kept: orientation".  With --no-orientation nothing is kept and it stays listed.
    """
    kept = {name for k in result.kept for name in _REWRITTEN_TAGS.get(k.what, ())}
    if not kept:
        return result
    removed = tuple(replace(r, tags=tuple(t for t in r.tags if t not in kept),
                            values=tuple(v for v in r.values if v[0] not in kept))
                    for r in result.removed)
    return replace(result, removed=removed)


def describe(result: ScrubResult, *, show_values: bool = False) -> list[str]:
    """Human lines for one result: a line per removed carrier, then what was kept."""
    lines = []
    for r in result.removed:
        cats = ", ".join(c.value for c in _CATEGORY_ORDER if c in r.categories)
        tags = ", ".join(escape(t) for t in r.tags[:12])
        if len(r.tags) > 12:
            tags += f", … (+{len(r.tags) - 12})"
        line = f"  - {escape(r.carrier)} ({_human_size(r.length)}; {cats})"
        if tags:
            line += f": {tags}"
        lines.append(line)
        if show_values:
            for k, v in r.values:
                lines.append(f"      {escape(k)} = {escape(v)}")
    if not result.removed:
        lines.append("  nothing to remove")
    if result.kept:
        lines.append("  kept: " + ", ".join(escape(k.what + (f" ({k.detail})" if k.detail else ""))
                                           for k in result.kept))
    return lines


def _options(args: argparse.Namespace, *, collect_values: bool = False) -> ScrubOptions:
    return ScrubOptions(preserve_length=not getattr(args, "compact", False),
                        keep_orientation=not getattr(args, "no_orientation", False),
                        keep_icc=not getattr(args, "strip_icc", False),
                        collect_values=collect_values)


def _read(path: Path, limit: int) -> bytes:
    """The file's bytes, refusing directories, devices/FIFOs and files over the engine limit.

    Why check before reading: `read_bytes()` on a multi-gigabyte file or on /dev/zero
    would exhaust memory (or never return) before the engine's own size check runs.
    """
    st = path.stat()
    if path.is_dir():
        raise ScrubError("is a directory")
    if not path.is_file():
        raise ScrubError("is not a regular file")
    if st.st_size > limit:
        raise ScrubError(f"is too large to scrub ({st.st_size} bytes; limit {limit})")
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ScrubError(f"is too large to scrub (more than {limit} bytes)")
    if not data:
        raise ScrubError("is empty")
    return data


def _err(path: str, message: str) -> None:
    print(f"exifguard: {escape(path)}: {escape(message)}", file=sys.stderr)


def cmd_inspect(args: argparse.Namespace) -> int:
    opts = _options(args, collect_values=args.show_values)
    failed = 0
    docs = []
    for name in args.files:
        try:
            result = as_reported(scrub(_read(Path(name), opts.max_input_bytes), options=opts))
        except (ScrubError, OSError) as exc:
            failed += 1
            msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if args.json:
                docs.append({"file": name, "error": msg})
            else:
                _err(name, msg)
            continue
        if args.json:
            d = result.to_dict(with_values=args.show_values)
            d["file"] = name
            docs.append(d)
        else:
            cats = ", ".join(c.value for c in _CATEGORY_ORDER if c in result.categories) or "none"
            print(f"{escape(name)}: {result.format}, {_human_size(result.input_length)} — "
                  f"{len(result.removed)} item(s) to remove; privacy: {cats}")
            for line in describe(result, show_values=args.show_values):
                print(line)
    if args.json:
        json.dump(docs, sys.stdout, indent=2, ensure_ascii=True)
        print()
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _atomic_write(dest: Path, data: bytes, mode: int | None, *, durable: bool) -> None:
    """Write via a temporary file in the destination folder, then rename: never partial.

    `durable` flushes the data to disk before the rename.  It matters only when the
    rename replaces an existing file (an in-place scrub): without it a crash right
    after the rename could leave an empty file where the person's photo was.  A new
    output file needs no such care (the original is untouched), and skipping the
    fsync there makes scrubbing a folder several times faster.
    """
    fd, tmp = tempfile.mkstemp(prefix=".exifguard-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _is_folder_arg(arg: str, out: Path) -> bool:
    """Does `-o` name a folder?  An existing directory, or a name ending in a separator.

    Why the separator counts: `scrub one.jpg -o cleaned/` used to write a *file* named
    `cleaned` (and the next run with two inputs then failed on it); the trailing slash
    is how people say "a folder" on the command line (cp, rsync).
    """
    seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
    return out.is_dir() or arg.endswith(seps)


def _targets(args: argparse.Namespace) -> list[tuple[str, Path]] | str:
    """Pair every input with its output path, or return a usage error message."""
    inputs = list(args.files)
    if args.in_place:
        # a symlink is followed: replacing the link itself would leave the metadata in
        # the file it points to while reporting the file as cleaned
        return [(n, Path(n).resolve()) for n in inputs]
    out = Path(args.output)
    folder = _is_folder_arg(args.output, out)
    if len(inputs) == 1 and not folder:
        if out.resolve() == Path(inputs[0]).resolve():
            return "output is the input file; use --in-place to replace it"
        parent = out.parent
        if not parent.is_dir():
            # checked here, once: the write would fail with ENOENT, which reads as if
            # the *input* were missing
            return (f"cannot write {out}: the output folder {parent}{os.sep} does not exist "
                    f"(create it first: mkdir -p {shlex.quote(str(parent))})")
        return [(inputs[0], out)]
    if out.exists() and not out.is_dir():
        return f"{out} is a file; with several inputs -o must name a directory"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the output folder {out}: {exc.strerror or exc}"
    pairs: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for n in inputs:
        base = Path(n).name
        if base in seen:
            return f"two inputs are both named {base!r}; scrub them into separate directories"
        seen.add(base)
        pairs.append((n, out / base))
    return pairs


def _new_file_mode(src_mode: int) -> int:
    """A clean copy's permission bits: the input's, less the umask (as `cp` does).

    Why: the temporary file the copy is written through is created 0600, so a 0644
    photo used to come out 0600 and a web server or a second user could not read it.
    """
    mask = os.umask(0)
    os.umask(mask)
    return src_mode & 0o777 & ~mask


def cmd_scrub(args: argparse.Namespace) -> int:
    pairs = _targets(args)
    if isinstance(pairs, str):
        _err("scrub", pairs)
        return EXIT_USAGE
    opts = _options(args)
    failed = 0
    for name, dest in pairs:
        src = Path(name)
        try:
            data = _read(src, opts.max_input_bytes)
            result = scrub(data, options=opts)
            src_mode = src.stat().st_mode
            mode = src_mode & 0o777 if args.in_place else _new_file_mode(src_mode)
            _atomic_write(dest, result.data, mode, durable=args.in_place or dest.exists())
        except (ScrubError, OSError) as exc:
            failed += 1
            msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            _err(name, f"{msg} (nothing written)")
            continue
        if not args.quiet:
            cats = ", ".join(c.value for c in _CATEGORY_ORDER if c in result.categories)
            what = f"removed {len(result.removed)} item(s)" + (f" ({cats})" if cats else "") \
                if result.removed else "already clean"
            print(f"{escape(name)} -> {escape(str(dest))}: {result.format}, {what}")
    return EXIT_SOME_FAILED if failed else EXIT_OK
