"""exifguard: strip private metadata from images before they leave for AI chat services.

Public API:
    scrub(data, *, preserve_length=True, keep_orientation=True, keep_icc=True) -> ScrubResult
    ScrubError, ScrubResult, Removal, Kept, Category, sniff
"""

from .engine import Category, Kept, Removal, ScrubError, ScrubOptions, ScrubResult, scrub, sniff

__all__ = ["Category", "Kept", "Removal", "ScrubError", "ScrubOptions", "ScrubResult", "scrub", "sniff"]
__version__ = "0.1.0"
