"""The webhook loop's pace of nudged claims (dispatcher.webhook_loop.nudge_delay): pure, no I/O."""

from __future__ import annotations

import pytest

from dispatcher.webhook_loop import NUDGE_MIN_SECONDS, POLL_SECONDS, nudge_delay


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
