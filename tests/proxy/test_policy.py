import pytest

from exifguard.proxy.policy import (Action, ImageState, Mode, OnError, Outcome, block_text, decide,
                                    parse_mode, parse_on_error)

OK = ImageState(ok=True)
BAD = ImageState(ok=False, error="JPEG: truncated Exif segment")


@pytest.mark.parametrize("mode,on_error,images,blockers,outcome,actions,status", [
    (Mode.STRIP, OnError.BLOCK, [], [], Outcome.FORWARD_ORIGINAL, (), None),
    (Mode.STRIP, OnError.BLOCK, [OK, OK], [], Outcome.FORWARD_CLEANED, (Action.STRIPPED,) * 2, None),
    (Mode.STRIP, OnError.BLOCK, [OK, BAD], [], Outcome.RESPOND, (Action.BLOCKED,) * 2, 422),
    (Mode.STRIP, OnError.BLOCK, [OK], ["body hash covered by AWS SigV4"], Outcome.RESPOND, (Action.BLOCKED,), 422),
    (Mode.STRIP, OnError.PASS, [OK, BAD], [], Outcome.FORWARD_CLEANED, (Action.STRIPPED, Action.PASSED), None),
    (Mode.STRIP, OnError.PASS, [OK], ["signed"], Outcome.FORWARD_ORIGINAL, (Action.PASSED,), None),
    (Mode.AUDIT, OnError.BLOCK, [OK, BAD], [], Outcome.FORWARD_ORIGINAL, (Action.AUDIT,) * 2, None),
    (Mode.AUDIT, OnError.BLOCK, [OK], ["signed"], Outcome.FORWARD_ORIGINAL, (Action.AUDIT,), None),
    (Mode.BLOCK, OnError.PASS, [OK], [], Outcome.RESPOND, (Action.BLOCKED,), 403),
    (Mode.BLOCK, OnError.BLOCK, [], [], Outcome.FORWARD_ORIGINAL, (), None),
    # regression: the carrier layer's own failure comes back as a blocker without images;
    # block mode used to forward that uninspected body
    (Mode.BLOCK, OnError.BLOCK, [], ["internal error in the carrier layer"], Outcome.RESPOND, (), 403),
    (Mode.STRIP, OnError.BLOCK, [], ["internal error in the carrier layer"], Outcome.RESPOND, (), 422),
])
def test_policy_table(mode, on_error, images, blockers, outcome, actions, status):
    d = decide(mode, on_error, images, blockers)
    assert d.outcome is outcome
    assert d.actions == actions
    assert d.status == status
    if outcome is Outcome.RESPOND:
        assert d.text.startswith("exifguard blocked this upload: ")
    if on_error is OnError.PASS and (blockers or any(not i.ok for i in images)) and mode is Mode.STRIP:
        assert d.warning


def test_block_text_names_exifguard_and_the_reason_without_values():
    t = block_text("JPEG: truncated Exif segment.")
    assert "exifguard" in t and "JPEG: truncated Exif segment." in t and ".." not in t
    d = decide(Mode.STRIP, OnError.BLOCK, [BAD, BAD])
    assert "and 1 more problem" in d.text


def test_option_parsing():
    assert parse_mode(" Audit ") is Mode.AUDIT
    assert parse_on_error("PASS") is OnError.PASS
    with pytest.raises(ValueError, match="strip, audit, block"):
        parse_mode("clean")
    with pytest.raises(ValueError):
        parse_on_error("ignore")
