"""The one error the engine raises.

`ScrubError` subclasses `ValueError` so callers that already treat bad input as a
value problem keep working.  Its message is written for a person: it names what
was wrong with the image and never echoes metadata values.
"""

from __future__ import annotations


class ScrubError(ValueError):
    """The image cannot be scrubbed safely: truncated, corrupt, hostile or unsupported.

    The caller must not forward the original bytes as if they were clean; the proxy's
    on-error policy decides what happens instead (block by default).
    """

    def __init__(self, message: str, *, format: str | None = None) -> None:
        super().__init__(message)
        self.format = format


class UnsupportedFormat(ScrubError):
    """The bytes look like an image (or nothing we know) that the engine cannot clean."""
