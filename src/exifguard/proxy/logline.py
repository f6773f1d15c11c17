"""The one concise human line per image in mitmproxy's event log.

    exifguard: claude.ai image (JPEG, 3.1 MB) — removed location (GPS), device (Make,
    Model), 4 timestamps, 2 serial numbers, thumbnail; kept orientation, colour profile

Categories and tag *names* only; metadata values appear only when the person opted
in (exifguard_log_values).  Every piece of text that came from the network (host,
tag names, error text, values) goes through `escape()`, so a hostile file cannot
inject terminal escapes or fake log lines.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

from ..engine.categories import category_of_tag
from ..engine.report import Category, Kept, Removal

_MAX_NAMES = 3


def escape(text: object, limit: int = 200) -> str:
    """Escape control/format/separator characters (\\x1b, \\n, U+202E, U+2028 ...) and clip."""
    s = str(text)
    out = []
    for ch in s:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn") and ch != " ":
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(ch)
    r = "".join(out)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def human_size(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    if n < 1_000_000:
        return f"{n / 1000:.1f} KB"
    return f"{n / 1_000_000:.1f} MB"


def _names(tags: Iterable[str]) -> str:
    t = list(dict.fromkeys(escape(x, 40) for x in tags))
    if not t:
        return ""
    shown = ", ".join(t[:_MAX_NAMES])
    if len(t) > _MAX_NAMES:
        shown += f", +{len(t) - _MAX_NAMES} more"
    return f" ({shown})"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {plural or word + 's'}"


def describe_removed(removed: Sequence[Removal]) -> str:
    """"location (GPS), device (Make, Model), 4 timestamps, 2 serial numbers, thumbnail"."""
    by_cat: dict[Category, list[str]] = {c: [] for c in Category}
    carriers_only: dict[Category, list[str]] = {c: [] for c in Category}
    for r in removed:
        tagged = False
        for t in r.tags:
            c = category_of_tag(t)
            if c is not None and c in r.categories:
                by_cat[c].append(t)
                tagged = True
            elif c is None and len(r.categories) == 1:
                by_cat[next(iter(r.categories))].append(t)
                tagged = True
        if not tagged:
            for c in r.categories:
                carriers_only[c].append(r.carrier)
    parts: list[str] = []
    loc = by_cat[Category.LOCATION]
    if loc or carriers_only[Category.LOCATION]:
        gps = [t for t in loc if t.upper().startswith("GPS")]
        other = [t for t in loc if not t.upper().startswith("GPS")]
        parts.append("location" + _names((["GPS"] if gps else []) + other
                                          or carriers_only[Category.LOCATION]))
    dev = by_cat[Category.DEVICE]
    if dev or carriers_only[Category.DEVICE]:
        parts.append("device" + _names(dev or carriers_only[Category.DEVICE]))
    times = list(dict.fromkeys(by_cat[Category.TIME]))
    if times:
        parts.append(_plural(len(times), "timestamp"))
    elif carriers_only[Category.TIME]:
        parts.append("time" + _names(carriers_only[Category.TIME]))
    ident = list(dict.fromkeys(by_cat[Category.IDENTITY]))
    serials = [t for t in ident if "serial" in t.lower() or "uniqueid" in t.lower()]
    others = [t for t in ident if t not in serials]
    if serials:
        parts.append(_plural(len(serials), "serial number"))
    if others or carriers_only[Category.IDENTITY]:
        parts.append("identity" + _names(others or carriers_only[Category.IDENTITY]))
    if by_cat[Category.TEXT] or carriers_only[Category.TEXT]:
        parts.append("text" + _names(by_cat[Category.TEXT] or carriers_only[Category.TEXT]))
    if by_cat[Category.THUMBNAIL] or carriers_only[Category.THUMBNAIL]:
        parts.append("thumbnail")
    other_n = len(set(by_cat[Category.OTHER])) + len(carriers_only[Category.OTHER])
    if other_n:
        names = by_cat[Category.OTHER] or carriers_only[Category.OTHER]
        parts.append("other" + _names(names))
    return ", ".join(parts)


def describe_kept(kept: Sequence[Kept]) -> str:
    return ", ".join(dict.fromkeys(escape(k.what, 40) for k in kept))


def image_line(*, host: str, action: str, fmt: str | None, size: int,
               removed: Sequence[Removal] = (), kept: Sequence[Kept] = (),
               error: str | None = None, values: Sequence[tuple[str, str]] = ()) -> str:
    """One line for one image; `action` is stripped|audit|blocked|passed."""
    what = f"{escape(host, 100)} image ({escape(fmt or 'unknown format', 20)}, {human_size(size)})"
    removed_text = describe_removed(removed)
    kept_text = describe_kept(kept)
    if action == "blocked":
        line = f"exifguard: BLOCKED {what}"
        line += f" — {escape(error)}" if error else " — image uploads are blocked by policy"
    elif action == "passed":
        line = f"exifguard: WARNING: forwarded {what} WITHOUT cleaning"
        if error:
            line += f" — {escape(error)}"
    else:
        verb = "would remove" if action == "audit" else "removed"
        line = f"exifguard: {what} — "
        line += f"{verb} {removed_text}" if removed_text else "no private metadata found"
        if kept_text:
            line += f"; kept {kept_text}"
        if action == "audit":
            line += " (audit mode: sent unchanged)"
    if values:
        line += "; values: " + ", ".join(f"{escape(k, 40)}={escape(v, 80)}" for k, v in values)
    return line
