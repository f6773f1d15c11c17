"""Name what an XMP packet holds (for the report), without an XML parser.

XMP is removed wholesale; we only list property names such as `exif:GPSLatitude`
or `dc:creator` so a person sees why it mattered.  A regex over element and
attribute names is enough for that and cannot be tricked into entity expansion.
"""

from __future__ import annotations

import re

# Both branches start with a literal character class (no look-behind), so the regex
# engine can skip ahead to the next `<` or whitespace instead of trying every offset.
_PROP = re.compile(rb"<([A-Za-z][\w.-]*):([A-Za-z][\w.-]*)(?=[\s>/])|\s([A-Za-z][\w.-]*):([A-Za-z][\w.-]*)\s*=\s*[\"']")
_SKIP_PREFIXES = {b"x", b"rdf", b"xml", b"xmlns", b"stEvt", b"stRef", b"stDim", b"stFnt"}
MAX_SCAN = 4 * 1024 * 1024
MAX_NAMES = 256


def xmp_property_names(packet: bytes) -> list[str]:
    """Property names (local part, ExifTool style) found in an XMP packet, first seen first."""
    names: dict[str, None] = {}
    for m in _PROP.finditer(packet[:MAX_SCAN]):
        prefix = m.group(1) or m.group(3)
        local = m.group(2) or m.group(4)
        if prefix in _SKIP_PREFIXES or prefix == b"xmlns":
            continue
        name = local.decode("ascii", "replace")
        if name[:1].islower():
            name = name[:1].upper() + name[1:]
        names.setdefault(name, None)
        if len(names) >= MAX_NAMES:
            break
    return list(names)


_ORIENT = re.compile(rb"tiff:Orientation\s*(?:=\s*[\"']\s*(\d+)|>\s*(\d+)\s*<)")


def xmp_orientation(packet: bytes) -> int | None:
    """`tiff:Orientation` from an XMP packet (attribute or element form), if present."""
    m = _ORIENT.search(packet[:MAX_SCAN])
    if not m:
        return None
    try:
        return int(m.group(1) or m.group(2))
    except ValueError:
        return None
