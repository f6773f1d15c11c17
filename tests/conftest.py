"""Shared pytest set-up: make `support` importable from every test folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

# CI gates a landing: property tests there explore a fixed, reproducible set of examples
# (a new counterexample found on a developer machine is kept in .hypothesis/ and becomes
# a regression test instead of a random CI failure).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# No test may show a real desktop notification (the proxies the tests start notify when an
# upload is blocked, and many tests block uploads on purpose): without a session bus,
# exifguard's notifier finds no desktop and says so once at start.
os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
if os.environ.get("XDG_RUNTIME_DIR") and Path(os.environ["XDG_RUNTIME_DIR"], "bus").exists():
    import tempfile

    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="exifguard-tests-runtime-")
