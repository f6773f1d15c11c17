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
