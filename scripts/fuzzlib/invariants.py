"""What must hold for every input, and the checks that say so.

Engine (`exifguard.scrub`, both `preserve_length` modes):
  * only ScrubError escapes (anything else is a bug: the proxy would have to guess);
  * same length when preserve_length;
  * no canary the input carried survives in the output — raw, UTF-16, hex, base64, or
    inside a zlib/deflate/gzip/brotli stream (`support.canary` plus raw deflate and zip);
  * bounded time (> SLOW_SECONDS is a finding) and memory (peak RSS growth).
Carriers (`exifguard.carriers.rewrite_request`):
  * it never raises; an "internal error" blocker or image error is a finding;
  * an accepted request (no blocker, no image error) carries no canary anywhere in its
    body, after URL-, JSON- and base64-decoding and inflating what it holds;
  * an accepted request keeps its body length (the engine preserves length).
The batched ExifTool check lives in `oracle.py`.
"""

from __future__ import annotations

import base64
import binascii
import re
import resource
import signal
import struct
import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote_to_bytes

from . import seeds as _seeds  # noqa: F401  (puts tests/ on sys.path for `support`)
from . import structure

from support import canary  # noqa: E402  tests/support/canary.py

SLOW_SECONDS = 2.0
HANG_SECONDS = 30.0
RSS_GROWTH_MB = 1024
SRC = str(Path(__file__).resolve().parents[2] / "src" / "exifguard")


@dataclass
class Violation:
    target: str
    kind: str
    """exception | length | canary | slow | hang | memory | raised | internal-error | exiftool"""
    signature: str
    """Deduplication key: the same bug found twice has the same signature."""
    message: str
    mode: str = ""
    details: dict = field(default_factory=dict)

    @property
    def review_only(self) -> bool:
        """Kinds that need a person's judgement (see README): a canary that ended up inside
        kept pixel data, or an ExifTool key that is unlisted but names nothing private."""
        return self.kind in REVIEW_KINDS


REVIEW_KINDS = frozenset({"canary-pixel", "exiftool-unlisted", "length-changed", "canary-outside-image",
                          "canary-past-image-end", "canary-misaligned-base64"})
PIXEL_KINDS = frozenset({"IDAT", "fdAT", "scan", "VP8 ", "VP8L", "ALPH", "image", "jxlc", "jxlp", "mdat",
                         "pixels", "idat", "palette",
                         "FFDB", "FFC4"})  # JPEG quantisation/Huffman tables: their values decide pixels


class Hang(BaseException):
    """Raised by the alarm inside a call that runs past HANG_SECONDS (BaseException so no
    `except Exception` in the code under test swallows it)."""


def _alarm(signum, frame):  # pragma: no cover - only on a real hang
    raise Hang()


class Guard:
    """Hang protection (SIGALRM, main thread only) and peak-RSS growth tracking."""

    def __init__(self, hang_seconds: float = HANG_SECONDS, rss_growth_mb: int = RSS_GROWTH_MB) -> None:
        self.hang = hang_seconds
        self.rss_limit_kb = rss_growth_mb * 1024
        self.base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.can_alarm = hasattr(signal, "setitimer")
        self._old_alarm = None
        if self.can_alarm:
            try:
                self._old_alarm = signal.signal(signal.SIGALRM, _alarm)
            except ValueError:  # not the main thread
                self.can_alarm = False

    def close(self) -> None:
        """Give SIGALRM back to whoever had it (pytest plugins, a caller's own timer)."""
        if self.can_alarm and self._old_alarm is not None:
            signal.signal(signal.SIGALRM, self._old_alarm)
            self.can_alarm = False

    def __enter__(self) -> "Guard":
        if self.can_alarm:
            signal.setitimer(signal.ITIMER_REAL, self.hang)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.can_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def rss_growth_kb(self) -> int:
        """Peak RSS growth since start; re-based after each report so one spike reports once."""
        now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        grown = now - self.base_kb
        if grown > self.rss_limit_kb:
            self.base_kb = now
            return grown
        return 0


def where(exc: BaseException) -> str:
    """Innermost frame inside exifguard: 'engine/formats/png.py:123 in _walk'."""
    tb = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in tb if f.filename.startswith(SRC)] or tb[-1:]
    if not inside:
        return "?"
    f = inside[-1]
    return f"{f.filename[len(SRC) + 1:] if f.filename.startswith(SRC) else Path(f.filename).name}:{f.lineno} in {f.name}"


# -- canary search ---------------------------------------------------------------------------

_B64_RUN = re.compile(rb"[A-Za-z0-9+/_\-]{48,}={0,2}")


def _raw_deflate_streams(data: bytes, limit: int = 64) -> list[bytes]:
    """Streams canary.find does not see: zip local entries (raw deflate) and gzip members."""
    out: list[bytes] = []
    k = 0
    while len(out) < limit:
        k = data.find(b"PK\x03\x04", k)
        if k < 0 or k + 30 > len(data):
            break
        method = struct.unpack_from("<H", data, k + 8)[0]
        nlen, xlen = struct.unpack_from("<HH", data, k + 26)
        start = k + 30 + nlen + xlen
        if method == 8:
            try:
                d = zlib.decompressobj(-15)
                out.append(d.decompress(data[start:start + canary.MAX_INFLATE], canary.MAX_INFLATE))
            except zlib.error:
                pass
        k += 4
    k = 0
    while len(out) < limit:
        k = data.find(b"\x1f\x8b\x08", k)
        if k < 0:
            break
        try:
            d = zlib.decompressobj(31)
            out.append(d.decompress(data[k:k + canary.MAX_INFLATE], canary.MAX_INFLATE))
        except zlib.error:
            pass
        k += 3
    return [s for s in out if s]


def _partial_zlib_streams(data: bytes, limit: int = 256) -> list[bytes]:
    """What a lenient inflater recovers from zlib streams that break off or turn corrupt:
    `canary.find` drops a stream on its first error, but the text before the error is there
    for anyone to read."""
    out: list[bytes] = []
    i, n = 0, len(data)
    while len(out) < limit:
        j = data.find(b"\x78", i)
        if j < 0 or j + 1 >= n:
            break
        i = j + 1
        if (data[j] << 8 | data[j + 1]) % 31:
            continue
        got = _inflate_until_error(data, j, 4096)
        if got is None:  # broke inside the first piece: again byte by byte, near the start (random
            got = _inflate_until_error(data[:j + 1024], j, 1)  # headers fail within a few bytes)
        if got:
            out.append(got)
    return out


def _inflate_until_error(data: bytes, j: int, step: int) -> bytes | None:
    """Inflate from `j` feeding `step` bytes at a time; the output before an error, or None
    when the error came before any output."""
    d = zlib.decompressobj()
    parts: list[bytes] = []
    total = 0
    try:
        for k in range(j, min(len(data), j + canary.MAX_INFLATE), step):
            got = d.decompress(data[k:k + step], canary.MAX_INFLATE - total)
            parts.append(got)
            total += len(got)
            if d.eof or total >= canary.MAX_INFLATE:
                break
    except zlib.error:
        if not total:
            return None
    return b"".join(parts)


def find_markers(data: bytes, markers: tuple[bytes, ...] | list[bytes]) -> list[str]:
    """Every place a marker survives in an image output: 'MARKER-prefix:raw@12', ..."""
    hits: list[str] = []
    if not markers:
        return hits
    extra = _raw_deflate_streams(data) + _partial_zlib_streams(data)
    for m in markers:
        for h in canary.find(data, m):
            hits.append(f"{m[:6].decode('latin-1')}…:{h}")
        for s in extra:
            for h in canary.find(s, m):
                hits.append(f"{m[:6].decode('latin-1')}…:deflate>{h}")
    return hits


def find_markers_deep(body: bytes, markers: tuple[bytes, ...] | list[bytes]) -> list[str]:
    """As find_markers, after URL-decoding, JSON-unescaping and base64-decoding the body.

    Base64 is *decoded* (every run of 48+ alphabet characters, at all four alignments) and
    the full marker searched in the result, rather than matching the marker's base64 form
    in the text: that form only pins the marker's middle bytes, so it also matches a
    truncated canary, which the image-level checks (full marker) would not call a leak."""
    if not markers:
        return []

    def plain(hits: list[str]) -> list[str]:
        return [h for h in hits if "base64/" not in h]

    hits = plain(find_markers(body, markers))
    views = {body}
    if b"%" in body or b"+" in body:
        views.add(unquote_to_bytes(body.replace(b"+", b" ")))
        views.add(unquote_to_bytes(body))
    if b"\\" in body:
        views.add(body.replace(b"\\/", b"/").replace(b"\\n", b"\n").replace(b"\\r", b"\r"))
    for v in list(views):
        if v is not body:
            hits += [f"decoded>{h}" for h in plain(find_markers(v, markers))]
        text = v.replace(b"\\n", b"").replace(b"\r\n", b"").replace(b"\n", b"")
        for m in _B64_RUN.finditer(text):
            run = m.group(0).rstrip(b"=")
            for shift in range(4):
                part = run[shift:]
                part = part[:len(part) - len(part) % 4]
                for alt in (False, True):
                    try:
                        raw = (base64.urlsafe_b64decode if alt else base64.b64decode)(part)
                    except (binascii.Error, ValueError):
                        continue
                    # "~": only readable when decoding from inside the run (misaligned text)
                    tag = f"base64@{m.start() + shift}" + ("~" if shift else "")
                    hits += [f"{tag}>{h}" for h in plain(find_markers(raw, markers))]
    return sorted(set(hits))


def region_at(data: bytes, offset: int) -> str:
    """Name of the innermost structure holding `offset` (for readable, dedupable canary findings)."""
    best = None
    for r in structure.parse(data):
        if r.start <= offset < r.end and (best is None or r.end - r.start <= best.end - best.start):
            best = r
    return best.kind if best else "?"


def _first_offset(data: bytes, hits: list[str], markers: tuple[bytes, ...]) -> int | None:
    """Offset of the first raw hit, else the start of the first zlib stream holding a marker."""
    for pattern in (r":raw@(\d+)$", r":(?:utf-16le|utf-16be|hex|HEX|base64/\d)@(\d+)$"):
        for h in hits:
            m = re.search(pattern, h)
            if m:
                return int(m.group(1))
    i = 0
    while True:
        j = data.find(b"\x78", i)
        if j < 0 or j + 1 >= len(data):
            return None
        if (data[j] << 8 | data[j + 1]) % 31 == 0:
            try:
                text = zlib.decompressobj().decompress(data[j:j + canary.MAX_INFLATE], canary.MAX_INFLATE)
            except zlib.error:
                text = b""
            if any(canary.find(text, m) for m in markers):
                return j
        i = j + 1


def classify(data: bytes, hits: list[str], markers: tuple[bytes, ...]) -> tuple[str, str]:
    """("canary" | "canary-pixel", name of the structure holding the first hit)."""
    if structure.sniff_kind(data) == "JXLCS":  # a bare codestream is image data throughout
        return "canary-pixel", "jxlc"
    at = _first_offset(data, hits, markers)
    place = region_at(data, at) if at is not None else hits[0].split(":", 1)[1].split("@")[0]
    pixel = place in PIXEL_KINDS or (
        # a palette image's PLTE holds its colours and tRNS one alpha per colour (image data);
        # elsewhere PLTE is only a hint and tRNS a single colour key
        place in ("PLTE", "tRNS") and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 and data[25] == 3)
    return ("canary-pixel" if pixel else "canary"), place


# -- engine ----------------------------------------------------------------------------------

@dataclass
class EngineOutcome:
    violations: list[Violation]
    accepted: list[tuple[str, bytes, str]]
    """(format, output, mode) of every accepted output: for the ExifTool batch."""
    seconds: float = 0.0


MODES = (("preserve", True), ("compact", False))


def check_engine(data: bytes, markers: tuple[bytes, ...], guard: Guard | None = None,
                 modes: tuple[tuple[str, bool], ...] = MODES, traced: bool = False) -> EngineOutcome:
    """`traced`: running under the coverage tracer, whose overhead makes timings meaningless
    (the runner re-times a slow traced input untraced)."""
    from exifguard import ScrubError, scrub

    guard = guard or Guard()
    out = EngineOutcome([], [])
    for mode, keep_len in modes:
        t0, c0 = time.perf_counter(), time.process_time()
        res = None
        try:
            with guard:
                res = scrub(data, preserve_length=keep_len)
        except ScrubError as exc:
            if "internal error" in str(exc):
                out.violations.append(Violation("engine", "internal-error", f"{mode}:{str(exc)[:60]}",
                                                str(exc)[:200], mode))
        except Hang:
            out.violations.append(Violation("engine", "hang", f"hang:{mode}:{structure.sniff_kind(data)}",
                                            f"scrub ran over {guard.hang:.0f} s", mode))
        except RecursionError as exc:
            out.violations.append(Violation("engine", "exception", f"RecursionError:{where(exc)}",
                                            f"RecursionError at {where(exc)}", mode))
        except Exception as exc:  # noqa: BLE001 - exactly what the fuzzer looks for
            out.violations.append(Violation("engine", "exception", f"{type(exc).__name__}:{where(exc)}",
                                            f"{type(exc).__name__} at {where(exc)}", mode))
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        out.seconds += dt
        if cpu > SLOW_SECONDS and not traced:  # CPU time: a loaded machine is not our bug
            out.violations.append(Violation("engine", "slow", f"slow:{mode}:{structure.sniff_kind(data)}",
                                            f"scrub took {cpu:.2f} s CPU ({dt:.2f} s wall) on {len(data)} bytes",
                                            mode))
        grown = guard.rss_growth_kb()
        if grown:
            out.violations.append(Violation("engine", "memory", f"memory:{mode}:{structure.sniff_kind(data)}",
                                            f"peak RSS grew by {grown // 1024} MB", mode))
        if res is None:
            continue
        if keep_len and len(res.data) != len(data):
            out.violations.append(Violation("engine", "length", f"length:{res.format}",
                                            f"{res.format}: {len(data)} -> {len(res.data)} bytes", mode))
        hits = find_markers(res.data, markers)
        if hits:
            kind, place = classify(res.data, hits, markers)
            out.violations.append(Violation("engine", kind, f"{kind}:{res.format}:{place}",
                                            f"{res.format} output keeps the canary in {place} ({hits[0]})",
                                            mode, {"hits": hits[:8]}))
        else:
            out.accepted.append((res.format, res.data, mode))
    return out


# -- carriers --------------------------------------------------------------------------------

@dataclass
class CarrierOutcome:
    violations: list[Violation]
    accepted_images: list[tuple[str, bytes]]
    accepted: bool = False
    seconds: float = 0.0


def check_carriers(method: str, url: str, headers: list[tuple[str, str]], body: bytes,
                   markers: tuple[bytes, ...], guard: Guard | None = None,
                   check_canary: bool = True, label: str = "",
                   image_end: int | None = None, traced: bool = False,
                   wrapped_image: bytes | None = None) -> CarrierOutcome:
    """`image_end`: where the wrapped image's last structure ends in the body; a canary only
    after it sits in bytes the carrier cannot know belong to the image (classified apart)."""
    from exifguard.carriers import CarrierOptions, rewrite_request

    guard = guard or Guard()
    out = CarrierOutcome([], [])
    t0, c0 = time.perf_counter(), time.process_time()
    rw = None
    try:
        with guard:
            rw = rewrite_request(method, url, headers, body, CarrierOptions(uploads=None))
    except Hang:
        out.violations.append(Violation("carriers", "hang", f"hang:{label}", f"rewrite_request ran over "
                                        f"{guard.hang:.0f} s"))
    except BaseException as exc:  # noqa: BLE001 - it must never raise
        if isinstance(exc, KeyboardInterrupt):
            raise
        out.violations.append(Violation("carriers", "raised", f"{type(exc).__name__}:{where(exc)}",
                                        f"rewrite_request raised {type(exc).__name__} at {where(exc)}"))
    out.seconds = dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    if cpu > SLOW_SECONDS and not traced:
        out.violations.append(Violation("carriers", "slow", f"slow:{label}",
                                        f"rewrite_request took {cpu:.2f} s CPU ({dt:.2f} s wall) on {len(body)} bytes"))
    grown = guard.rss_growth_kb()
    if grown:
        out.violations.append(Violation("carriers", "memory", f"memory:{label}",
                                        f"peak RSS grew by {grown // 1024} MB"))
    if rw is None:
        return out
    errors = list(rw.blockers) + [i.error for i in rw.images if i.error]
    internal = [e for e in errors if "internal error" in e]
    if internal:
        sig = re.sub(r"\d+", "N", internal[0])[:90]
        out.violations.append(Violation("carriers", "internal-error", f"internal:{sig}", internal[0][:200]))
    out.accepted = not rw.has_errors
    if not out.accepted:
        return out
    if len(rw.body) != len(body):  # legal when nothing declares the size (percent-encoding varies)
        out.violations.append(Violation("carriers", "length-changed", f"length:{label}",
                                        f"accepted body changed length {len(body)} -> {len(rw.body)}"))
    if check_canary:
        hits = find_markers_deep(rw.body, markers)
        if hits:
            n_img = len(rw.images)
            raw_at = [int(m.group(1)) for h in hits if (m := re.search(r"^[^>]*:raw@(\d+)$", h))]
            if any(h.split(":", 1)[-1].startswith("zlib>") for h in hits):  # where the stream starts
                z = _first_offset(rw.body, [], markers)
                if z is not None:
                    raw_at.append(z)
                    hits = [h for h in hits if not h.split(":", 1)[-1].startswith("zlib>")] + [f"zlib@{z}"]
            spans = [i.span for i in rw.images if i.span]
            direct = [h for h in hits if not h.startswith(("decoded>", "base64@"))]
            outside = bool(raw_at) and bool(spans) and len(raw_at) == len(direct) and all(
                not any(a <= k < b for a, b in spans) for k in raw_at)
            past = bool(raw_at) and image_end is not None and min(raw_at) >= image_end
            seen = "past-image-end" if past else ("image-found" if n_img else "image-unseen")
            kind = "canary-past-image-end" if past else "canary"
            if all("~>" in h for h in hits):
                kind = "canary-misaligned-base64"  # no decoder reading the run from its start sees it
            if outside and not past:  # the carrier delimited the image(s); the canary lies outside
                kind = "canary-outside-image"
            for img in rw.images:  # the engine kept it inside a cleaned image: say where
                ih = find_markers(img.result.data, markers) if img.result is not None else []
                if ih:
                    kind, place = classify(img.result.data, ih, markers)
                    seen = f"engine-kept:{img.result.format}:{place}"
                    break
                if img.result is not None and img.span and raw_at:
                    a, b = img.span  # a canary straddling the image's end: judge its inside part
                    inside = [k - a for k in raw_at if a <= k < b]
                    if inside and region_at(img.result.data, inside[0]) in PIXEL_KINDS:
                        kind = "canary-pixel"
                        seen = f"engine-kept:{img.result.format}:{region_at(img.result.data, inside[0])}"
                        break
            if kind == "canary" and wrapped_image is not None and not n_img:
                # not found: would the engine have kept the canary anyway (pixel data)?
                from exifguard import ScrubError, scrub
                try:
                    alone = scrub(wrapped_image).data
                    ah = find_markers(alone, markers)
                    if ah and classify(alone, ah, markers)[0] == "canary-pixel":
                        kind, seen = "canary-pixel", "engine-would-keep:" + classify(alone, ah, markers)[1]
                except ScrubError:
                    pass
            wrapped = structure.sniff_kind(wrapped_image) if wrapped_image else None
            out.violations.append(Violation("carriers", kind, f"{kind}:{label}:{seen}" + (f":{wrapped}" if wrapped else ""),
                                            f"accepted {label} body ({n_img} image(s) found) keeps the canary "
                                            f"({hits[0]})", details={"hits": hits[:8]}))
    for img in rw.images:
        if img.result is not None:
            out.accepted_images.append((img.result.format, img.result.data))
    return out


def describe(v: Violation) -> str:
    return f"[{v.target}] {v.kind}: {v.message}" + (f" (mode {v.mode})" if v.mode else "")


if __name__ == "__main__":  # pragma: no cover - quick manual check: python -m fuzzlib.invariants FILE
    d = Path(sys.argv[1]).read_bytes()
    for v in check_engine(d, (_seeds.MARK,)).violations:
        print(describe(v))
