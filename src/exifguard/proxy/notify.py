"""Placeholder: desktop notifications for blocked uploads (being built)."""

from __future__ import annotations


class Notifier:
    """Tells the person when an upload is blocked (not built yet)."""

    name = "exifguard_notify"
