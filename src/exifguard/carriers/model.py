"""Public data types of the carrier layer (see /tmp carrier contract; names are frozen)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..engine import ScrubOptions, ScrubResult

#: A scrub function: (image bytes, options) -> ScrubResult, raising ScrubError.
Scrubber = Callable[[bytes, ScrubOptions], ScrubResult]


class UploadTracker:
    """Remembers, per chunked upload, whether its first chunk was an image.

    Why: a continuation chunk (offset > 0) has no magic bytes of its own.  If the upload
    began with an image we cannot clean the rest (a partial image), so it must be
    reported; if it began with something else it can pass.  Unknown uploads (start not
    seen, e.g. after a restart) are reported too: fail closed.  Keys are hashes of the
    upload URL (signed URLs are never stored); bounded in entries and age.
    """

    def __init__(self, max_entries: int = 4096, ttl_seconds: float = 3600.0) -> None:
        self._d: OrderedDict[str, tuple[float, bool]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.ttl = ttl_seconds

    @staticmethod
    def key(url: str) -> str:
        return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()

    def remember(self, url: str, is_image: bool) -> None:
        with self._lock:
            k = self.key(url)
            self._d[k] = (time.monotonic(), is_image)
            self._d.move_to_end(k)
            while len(self._d) > self.max_entries:
                self._d.popitem(last=False)

    def lookup(self, url: str) -> bool | None:
        """True: began with an image; False: began with something else; None: unknown."""
        with self._lock:
            k = self.key(url)
            v = self._d.get(k)
            if v is None:
                return None
            if time.monotonic() - v[0] > self.ttl:
                del self._d[k]
                return None
            return v[1]

    def forget(self, url: str) -> None:
        with self._lock:
            self._d.pop(self.key(url), None)


def _default_scrubber(data: bytes, options: ScrubOptions) -> ScrubResult:
    from .. import scrub
    return scrub(data, options=options)


@dataclass(frozen=True)
class CarrierOptions:
    scrub: ScrubOptions = ScrubOptions()
    rename_files: bool = False
    """Rewrite multipart filename= (and HuggingChat ``base64;<name>``, Meta x-entity-name)
    to a neutral name keeping the extension."""
    max_body_bytes: int = 256 * 1024 * 1024
    scrubber: Scrubber | None = None
    """Injected scrub function (tests, alternative engines); None = exifguard.scrub."""
    max_parts: int = 1000
    max_nesting: int = 4
    """Multipart-in-multipart / base64-in-part nesting bound."""
    max_json_depth: int = 256
    max_strings: int = 100_000
    """JSON/form strings examined per request; beyond it, a signature search decides."""
    max_images: int = 64
    uploads: UploadTracker | None = field(default_factory=UploadTracker, compare=False)
    """Per-upload state for chunked protocols; None disables it (continuations fail closed)."""
    deadline: float | None = field(default=None, compare=False)
    """A `time.monotonic()` instant after which inspection stops and the request is
    reported with a blocker (fail closed); None: no deadline.  Checked between chunks of
    work, so a caller that waits on another thread can also give up on its own."""

    def scrub_fn(self) -> Scrubber:
        return self.scrubber or _default_scrubber


@dataclass(frozen=True)
class ImageFinding:
    carrier: str
    format: str | None
    size: int
    filename: str | None
    result: ScrubResult | None
    error: str | None
    span: tuple[int, int] | None = None
    """Where the carrier (raw bytes, part payload, JSON string, form value) sat in the
    original body, end exclusive; None when unknown."""
    identifying_name: bool = False
    """The filename looks like it reveals a capture time or a person (value not kept)."""

    @property
    def ok(self) -> bool:
        return self.error is None and self.result is not None


@dataclass(frozen=True)
class RequestRewrite:
    body: bytes
    set_headers: dict[str, str]
    images: tuple[ImageFinding, ...]
    blockers: tuple[str, ...]
    original_body: bytes | None = field(default=None, repr=False, compare=False)
    timed_out: bool = False
    """Inspection stopped at `CarrierOptions.deadline` (the one blocker says so): the
    request was not inspected, so a caller may answer "try again" rather than "refused"."""

    @property
    def changed(self) -> bool:
        if self.set_headers:
            return True
        if self.original_body is None:
            return False
        return self.body is not self.original_body and self.body != self.original_body

    @property
    def has_errors(self) -> bool:
        return bool(self.blockers) or any(i.error is not None for i in self.images)
