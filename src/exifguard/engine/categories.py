"""Map tag and carrier names to privacy categories.

The rules are deliberately name-based (like the corpus manifest's own rules) so a
tag we have never seen still lands in a sensible bucket: anything with "GPS" or
"Latitude" is a location, anything with "Serial" or "UniqueID" identifies a device
or person, and so on.  Unknown names fall back to the carrier's default.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .report import Category

_LOCATION = re.compile(r"GPS|Latitude|Longitude|Altitude|^City$|Country|Sub-?location|Province|^State$|"
                       r"^Location|LocationCreated|LocationShown|GeoTiff|ModelTiepoint|ModelTransformation|"
                       r"ModelPixelScale|GeoKey|GeoAscii|GeoDouble", re.I)
_THUMB = re.compile(r"Thumbnail|PreviewImage|JpgFromRaw|OtherImage|JPEGInterchangeFormat|"
                    r"PhotoshopThumbnail", re.I)
_IDENTITY = re.compile(r"Serial|UniqueID|CameraID|SensorID|BodyID|DocumentID|InstanceID|ContentIdentifier|"
                       r"UUID|DeviceID|OwnerID|^Artist$|Owner|Copyright|Rights|By-?line|Creator$|Author|"
                       r"Credit|^Source$|Writer|CaptionWriter|Contact|PersonInImage|RegionName|ImageCreator|"
                       r"Licensor|HostComputer|CameraOwner|Email|Phone|URL", re.I)
_TIME = re.compile(r"Date|Time(?!Zone)|TimeStamp|TimeCreated|SubSec|OffsetTime|RunTime|History", re.I)
_DEVICE = re.compile(r"^Make$|^Model$|Software|Lens|CreatorTool|Firmware|CameraType|UniqueCameraModel|"
                     r"MakerNote|Maker|ProcessingSoftware", re.I)
_TEXT = re.compile(r"Comment|Description|Caption|Title|Keywords|Subject|Headline|Instructions|Label|"
                   r"DocumentName|PageName|prompt|parameters|workflow|Text", re.I)

# What a carrier is about when we could not (or need not) look inside it.
_CARRIER_DEFAULTS: tuple[tuple[re.Pattern[str], Category], ...] = (
    (re.compile(r"thumbnail|MPF|secondary image|JFXX|preview", re.I), Category.THUMBNAIL),
    (re.compile(r"trailer|after (EOI|IEND|trailer)|past RIFF|motion|mpvd|video", re.I), Category.OTHER),
    (re.compile(r"COM|comment|tEXt|zTXt|iTXt|text", re.I), Category.TEXT),
    (re.compile(r"tIME", re.I), Category.TIME),
    (re.compile(r"IPTC|Photoshop|XMP|C2PA|JUMBF|caBX", re.I), Category.IDENTITY),
    (re.compile(r"sefd|APP5|serial", re.I), Category.IDENTITY),
)


@lru_cache(maxsize=8192)
def category_of_tag(tag: str) -> Category | None:
    """Best privacy category for one tag name, or None if it says nothing specific.

    Cached: a maker-note-rich JPEG names hundreds of tags and the same names recur
    across images, so without the cache the six regexes dominate the engine's time.
    The function is pure, so the cache cannot change a result.
    """
    if _LOCATION.search(tag):
        return Category.LOCATION
    if _THUMB.search(tag):
        return Category.THUMBNAIL
    if _IDENTITY.search(tag):
        return Category.IDENTITY
    if _DEVICE.search(tag):
        return Category.DEVICE
    if _TIME.search(tag):
        return Category.TIME
    if _TEXT.search(tag):
        return Category.TEXT
    return None


def categories_for(carrier: str, tags: tuple[str, ...]) -> frozenset[Category]:
    """Categories of a removed structure: from its tags, else from the carrier's name."""
    cats = {c for c in (category_of_tag(t) for t in tags) if c is not None}
    if not cats:
        for pattern, cat in _CARRIER_DEFAULTS:
            if pattern.search(carrier):
                cats.add(cat)
                break
    if not cats:
        cats.add(Category.OTHER)
    return frozenset(cats)
