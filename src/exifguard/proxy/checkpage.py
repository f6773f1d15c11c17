"""Placeholder: the /.well-known/exifguard check page addon (being built)."""

from __future__ import annotations


class CheckPage:
    """Answers /.well-known/exifguard on intercepted hosts (not built yet)."""

    name = "exifguard_checkpage"
