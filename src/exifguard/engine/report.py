"""What a scrub found and did, as plain data.

The split mirrors mat2: a `Removal` says *what was there* (carrier, tag names,
privacy categories, size) and never holds a private value unless the caller opted
in with `ScrubOptions.collect_values`.  Everything here is immutable so a result
can be logged, serialised or compared without surprises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Category(StrEnum):
    """Why a removed piece of metadata mattered to privacy."""

    LOCATION = "location"
    TIME = "time"
    DEVICE = "device"
    IDENTITY = "identity"
    TEXT = "text"
    THUMBNAIL = "thumbnail"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Removal:
    """One neutralised structure (segment, chunk, box, item, extension or trailer)."""

    carrier: str
    """Human name of the structure, e.g. "APP1 Exif", "PNG tEXt", "trailer after EOI"."""
    offset: int
    """Where the structure started in the input."""
    length: int
    """How many input bytes it occupied (all of them are neutralised)."""
    tags: tuple[str, ...] = ()
    """Names of the tags or fields found inside, e.g. ("GPSLatitude", "Make")."""
    categories: frozenset[Category] = frozenset({Category.OTHER})
    values: tuple[tuple[str, str], ...] = ()
    """(tag, value) pairs; empty unless `collect_values` was requested.  Private data."""

    def to_dict(self, *, with_values: bool = False) -> dict[str, object]:
        d: dict[str, object] = {
            "carrier": self.carrier,
            "offset": self.offset,
            "bytes": self.length,
            "tags": list(self.tags),
            "categories": sorted(c.value for c in self.categories),
        }
        if with_values and self.values:
            d["values"] = {k: v for k, v in self.values}
        return d


@dataclass(frozen=True, slots=True)
class Kept:
    """Something deliberately kept because rendering needs it."""

    what: str
    """e.g. "orientation", "colour profile", "Adobe APP14", "transparency"."""
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"what": self.what, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class ScrubResult:
    """The clean bytes and an account of what changed."""

    data: bytes
    format: str
    removed: tuple[Removal, ...] = ()
    kept: tuple[Kept, ...] = ()
    input_length: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.removed)

    @property
    def categories(self) -> frozenset[Category]:
        out: set[Category] = set()
        for r in self.removed:
            out |= r.categories
        return frozenset(out)

    @property
    def tags(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for r in self.removed:
            for t in r.tags:
                seen.setdefault(t, None)
        return tuple(seen)

    @property
    def removed_bytes(self) -> int:
        return sum(r.length for r in self.removed)

    def to_dict(self, *, with_values: bool = False) -> dict[str, object]:
        return {
            "format": self.format,
            "input_bytes": self.input_length,
            "output_bytes": len(self.data),
            "removed": [r.to_dict(with_values=with_values) for r in self.removed],
            "kept": [k.to_dict() for k in self.kept],
            "categories": sorted(c.value for c in self.categories),
        }


@dataclass(frozen=True, slots=True)
class ScrubOptions:
    """How to scrub.  Defaults are what the proxy sends."""

    preserve_length: bool = True
    keep_orientation: bool = True
    keep_icc: bool = True
    collect_values: bool = False
    max_input_bytes: int = 512 * 1024 * 1024
    max_structures: int = 100_000
    """Upper bound on segments/chunks/boxes/blocks walked: hostile files fail closed."""
    max_inflate_bytes: int = 8 * 1024 * 1024
    """Upper bound when decompressing text chunks only to report what they held."""


@dataclass(slots=True)
class Findings:
    """Accumulator a format walker fills while it rewrites; turned into a ScrubResult."""

    removed: list[Removal] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)

    def remove(self, carrier: str, offset: int, length: int, tags: tuple[str, ...] | list[str] = (),
               categories: frozenset[Category] | set[Category] | None = None,
               values: tuple[tuple[str, str], ...] | list[tuple[str, str]] = ()) -> None:
        from .categories import categories_for
        tags_t = tuple(dict.fromkeys(tags))
        cats = frozenset(categories) if categories else categories_for(carrier, tags_t)
        self.removed.append(Removal(carrier, offset, length, tags_t, cats, tuple(values)))

    def kept_from(self, offset: int, tag: str) -> None:
        """`tag` of the structure removed at `offset` was written back (e.g. Orientation
        into a fresh minimal Exif): it was not removed, so the report stops listing it."""
        from .categories import categories_for
        for k, r in enumerate(self.removed):
            if r.offset == offset and tag in r.tags:
                tags = tuple(t for t in r.tags if t != tag)
                cats = r.categories
                if cats == categories_for(r.carrier, r.tags):  # derived, not given: derive again
                    cats = categories_for(r.carrier, tags)
                self.removed[k] = Removal(r.carrier, r.offset, r.length, tags, cats,
                                          tuple(v for v in r.values if v[0] != tag))

    def keep(self, what: str, detail: str = "") -> None:
        if not any(k.what == what and k.detail == detail for k in self.kept):
            self.kept.append(Kept(what, detail))
