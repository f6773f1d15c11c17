"""Pure decision logic: what happens to a request that carries images.

No mitmproxy, no I/O: given the mode, the on-error policy and what the carrier
layer found, decide whether the request is forwarded cleaned, forwarded untouched,
or answered by exifguard with a 4xx — and what each image's audit action is.

    mode     on_error  request outcome                         image actions
    strip    *         all images clean -> forward cleaned      stripped
    strip    block     any error/blocker -> 422 from exifguard  blocked (all images)
    strip    pass      image error       -> forward; clean ones stripped, failed ones passed
    strip    pass      blocker (signed)  -> forward original    passed (all images)
    audit    *         forward original, byte-identical        audit
    block    *         any image -> 403 from exifguard          blocked

Requests without images are always forwarded untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Mode(StrEnum):
    STRIP = "strip"
    AUDIT = "audit"
    BLOCK = "block"


class OnError(StrEnum):
    BLOCK = "block"
    PASS = "pass"


class Action(StrEnum):
    STRIPPED = "stripped"
    BLOCKED = "blocked"
    PASSED = "passed"
    AUDIT = "audit"


class Outcome(StrEnum):
    FORWARD_CLEANED = "forward cleaned"
    FORWARD_ORIGINAL = "forward original"
    RESPOND = "respond"


def parse_mode(value: str) -> Mode:
    try:
        return Mode(value.strip().lower())
    except ValueError:
        raise ValueError(f"exifguard_mode must be one of strip, audit, block (got {value!r})") from None


def parse_on_error(value: str) -> OnError:
    try:
        return OnError(value.strip().lower())
    except ValueError:
        raise ValueError(f"exifguard_on_error must be block or pass (got {value!r})") from None


@dataclass(frozen=True, slots=True)
class ImageState:
    """What the policy needs to know about one image found in a request."""

    ok: bool
    """The engine cleaned it (ScrubResult present, no error)."""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    actions: tuple[Action, ...]
    """One per image, in the order given."""
    status: int | None = None
    text: str | None = None
    """Plain-text body of exifguard's own 4xx answer (outcome RESPOND)."""
    warning: str | None = None
    """Something the person must be told (an image forwarded uncleaned)."""


BLOCK_STATUS = 403
ERROR_STATUS = 422


def block_text(reason: str) -> str:
    """The short explanation a person sees (via the app's error, or in devtools)."""
    reason = reason.strip().rstrip(".")
    return (f"exifguard blocked this upload: {reason}. "
            "exifguard removes hidden photo metadata (location, device, time) before images "
            "leave this computer; this image was not sent. Try another copy of the image "
            "(for example a screenshot or an export as JPEG/PNG), or change the exifguard "
            "policy (exifguard_on_error=pass) if you accept sending it unchanged.\n")


def decide(mode: Mode, on_error: OnError, images: Sequence[ImageState],
           blockers: Sequence[str] = ()) -> Decision:
    """Apply the policy table in the module docstring."""
    n = len(images)
    if n == 0 and not blockers:
        return Decision(Outcome.FORWARD_ORIGINAL, ())
    if mode is Mode.AUDIT:
        return Decision(Outcome.FORWARD_ORIGINAL, (Action.AUDIT,) * n)
    if mode is Mode.BLOCK:
        if n == 0:  # the carrier layer could not inspect the body (e.g. its own internal error)
            return Decision(Outcome.RESPOND, (), BLOCK_STATUS,
                            block_text(f"the upload could not be inspected ({_first_reason(blockers)}), "
                                       "and image uploads are blocked (exifguard_mode=block)"))
        what = "an image" if n == 1 else f"{n} images"
        return Decision(Outcome.RESPOND, (Action.BLOCKED,) * n, BLOCK_STATUS,
                        block_text(f"{what} in an upload to an AI service, and image uploads "
                                   "are blocked (exifguard_mode=block)"))
    errors = [i.error or "the image could not be cleaned" for i in images if not i.ok]
    reasons = list(blockers) + errors
    if not reasons:
        return Decision(Outcome.FORWARD_CLEANED, (Action.STRIPPED,) * n)
    if on_error is OnError.BLOCK:
        return Decision(Outcome.RESPOND, (Action.BLOCKED,) * n, ERROR_STATUS,
                        block_text(_first_reason(reasons)))
    # on_error=pass: the person accepted forwarding what we cannot clean.
    if blockers:
        return Decision(Outcome.FORWARD_ORIGINAL, (Action.PASSED,) * n,
                        warning=f"forwarded unchanged: {_first_reason(reasons)}")
    actions = tuple(Action.STRIPPED if i.ok else Action.PASSED for i in images)
    return Decision(Outcome.FORWARD_CLEANED, actions,
                    warning=f"forwarded uncleaned image(s): {_first_reason(reasons)}")


def _first_reason(reasons: Sequence[str]) -> str:
    first = reasons[0]
    more = len(reasons) - 1
    return first if not more else f"{first} (and {more} more problem{'s' if more > 1 else ''})"
