"""The `exifguard` console script.

Each group of subcommands lives in its own module and registers itself:
`files` (inspect, scrub — offline cleaning) and `proxy` (run, cert, pac, report,
selftest — the intercepting proxy).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__


def build_parser() -> argparse.ArgumentParser:
    from .locations import command_prefix
    parser = argparse.ArgumentParser(
        prog=command_prefix(),  # usage lines show what to type here (./scripts/exifguard in a checkout)
        description="Strip private metadata from photos before they reach AI chat services.",
    )
    parser.add_argument("--version", action="version", version=f"exifguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from . import files, proxy
    files.register(sub)
    proxy.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
