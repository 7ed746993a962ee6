"""The webhook loop's pace of nudged claims and fan-outs (dispatcher.webhook_loop): pure, no I/O."""

from __future__ import annotations

import pytest

from dispatcher.webhook_loop import NUDGE_MIN_SECONDS, POLL_SECONDS, fan_out_due, nudge_delay


@pytest.mark.parametrize(
    ("now", "last_claim", "every", "wait"),
    [
        (100.0, 100.0, 0.05, 0.05),  # nudged as the claim started: the whole interval
        (100.02, 100.0, 0.05, 0.03),  # part of it gone: the rest
        (100.05, 100.0, 0.05, 0.0),  # exactly over: at once
        (101.0, 100.0, 0.05, 0.0),  # long after (an idle loop woken): at once
        (100.0, 100.0, 0.0, 0.0),  # no interval: every nudge claims at once
        (99.0, 100.0, 0.05, 0.05),  # a clock behind the claim never waits more than the interval
    ],
)
def test_a_nudge_waits_out_the_rest_of_the_interval(
    now: float, last_claim: float, every: float, wait: float
) -> None:
    """A nudged claim comes no sooner than `every` after the previous claim, and never later."""
    assert nudge_delay(now, last_claim, every) == pytest.approx(wait)


def test_the_interval_is_short_beside_the_poll() -> None:
    """A nudge still claims far sooner than the 1 s poll would."""
    assert nudge_delay(0.0, 0.0) == NUDGE_MIN_SECONDS <= POLL_SECONDS / 10


@pytest.mark.parametrize(
    ("now", "woken", "nudged", "due"),
    [
        (100.0, True, False, True),  # woken from idle (nudge or poll), or a full batch: at once
        (100.01, False, True, False),  # nudged while busy, right after the last fan-out: later
        (100.06, False, True, True),  # nudged while busy, the interval over: now
        (100.5, False, False, False),  # busy, not nudged, within the poll: the claim alone
        (101.0, False, False, True),  # busy for a whole poll: fan out anyway (API callbacks)
    ],
)
def test_the_fan_out_runs_after_wake_ups_nudges_and_at_least_every_poll(
    now: float, woken: bool, nudged: bool, due: bool
) -> None:
    """A busy loop (claims back to back) still fans out after a nudge, no sooner than the nudge
    interval, and once a poll interval at least; an idle loop woken fans out first."""
    assert fan_out_due(now, 100.0, woken=woken, nudged=nudged, every=0.05) is due
