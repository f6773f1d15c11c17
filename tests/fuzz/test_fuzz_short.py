"""A short, derandomised fuzzing pass over the engine and the carrier layer (CI runs it).

Fixed seed and a fixed execution budget, generated canary seeds only (works without the
corpus), so the same inputs are tried on every run of the same code.  Every invariant of
scripts/fuzz is checked on every input; findings that need a person's judgement
(review-only kinds, see scripts/fuzzlib/README.md) are not failures.  Known open bugs are
listed in KNOWN_OPEN (a part of the finding's signature), each reported in the fuzz findings note; remove
an entry when its fix lands (the test then guards it).
"""

from __future__ import annotations

import signal

import pytest

from fuzzlib import oracle
from fuzzlib.runner import Config, Fuzzer

SEED = 20261205
EXECS = 30_000

KNOWN_OPEN: tuple[str, ...] = ()


def _unexpected(summary) -> list[str]:
    return [f"{f.violation.target}/{f.violation.kind}: {f.violation.message} (saved {f.path})"
            for f in summary.bugs if not any(k in f.violation.signature for k in KNOWN_OPEN)]


HANDLERS_BEFORE: dict[int, object] = {}


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    HANDLERS_BEFORE.update({s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGALRM)})
    cfg = Config(seconds=None, execs=EXECS, seed=SEED, use_corpus=False, out=tmp_path_factory.mktemp("fuzz"),
                 trace_rate=0.25, exiftool_every=30, minimize_seconds=3.0, quiet=True)
    return Fuzzer(cfg).run()


def test_short_pass_breaks_no_invariant(short_run) -> None:
    assert short_run.total >= EXECS
    bad = _unexpected(short_run)
    assert not bad, "fuzz findings:\n" + "\n".join(bad)


def test_short_pass_exercised_both_targets_and_the_oracle(short_run) -> None:
    """Guards the fuzzer itself: both targets ran, outputs were accepted, coverage grew beyond
    the seeds, and (where ExifTool is installed) the batched oracle read outputs."""
    assert short_run.execs["engine"] > EXECS // 3 and short_run.execs["carriers"] > EXECS // 3
    assert short_run.accepted["engine"] > 0 and short_run.accepted["carriers"] > 0
    assert short_run.queue["engine"] > short_run.seeds
    if oracle.available():
        assert short_run.exiftool_checked > 0


def test_short_pass_gives_the_signal_handlers_back(short_run) -> None:
    """The fuzzer catches SIGTERM (to print its summary) and uses SIGALRM (hang guard); run
    inside pytest it must restore both, or CI could no longer stop or time out the suite."""
    for sig, before in HANDLERS_BEFORE.items():
        assert signal.getsignal(sig) == before
