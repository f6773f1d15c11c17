"""Proxy subcommands: run, cert, pac, report, selftest (being built)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add the proxy subcommands to the `exifguard` parser."""
