"""`python -m exifguard.icap [icap|squid-config] ...`: the ICAP commands without the main CLI.

Lets the service run (and its tests start it) whether or not the `exifguard` console
script has registered these subcommands.
"""

import argparse
import sys

from ..cli import icap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exifguard.icap")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    icap.register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
