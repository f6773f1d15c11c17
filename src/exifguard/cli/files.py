"""Offline subcommands: inspect and scrub (being built)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add the offline subcommands to the `exifguard` parser."""
