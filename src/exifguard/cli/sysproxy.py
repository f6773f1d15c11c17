"""Placeholder for the `sysproxy` command (being built)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Nothing registered yet."""
