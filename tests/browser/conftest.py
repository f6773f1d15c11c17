"""Browser-journey fixtures; the machinery lives in harness.py."""

from .harness import journey  # noqa: F401  (pytest fixture)
