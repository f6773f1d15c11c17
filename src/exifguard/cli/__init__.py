"""The `exifguard` console script.

Each group of subcommands lives in its own module and registers itself:
`files` (inspect, scrub — offline cleaning) and `proxy` (run, cert, hosts, pac, report,
selftest, addon-path — the intercepting proxy).  With no arguments, `exifguard` runs the
proxy, as `./scripts/exifguard` does: an installed application starts by its name.
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
        description="Strip private metadata from photos before they reach AI chat services. "
                    "With no COMMAND, runs the proxy (the same as `run`).",
    )
    parser.add_argument("--version", action="version", version=f"exifguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from . import check, files, icap, proxy, service, sysproxy
    files.register(sub)
    proxy.register(sub)
    check.register(sub)
    service.register(sub)
    sysproxy.register(sub)
    icap.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["run"]  # `exifguard` alone starts the proxy, like ./scripts/exifguard
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
