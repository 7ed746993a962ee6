"""The webhook loop's pace of nudged claims and fan-outs (dispatcher.webhook_loop): pure, no I/O."""

from __future__ import annotations

import pytest

from dispatcher.webhook_loop import (
    FAN_OUT_EVERY_SECONDS,
    NUDGE_MIN_SECONDS,
    POLL_SECONDS,
    fan_out_due,
    idle_timeout,
    nudge_delay,
)


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
    ("now", "more", "pending", "due"),
    [
        (100.0, True, False, True),  # the last fan-out filled its batch: again at once
        (100.1, False, True, False),  # nudged (or woken) within the interval: put off
        (100.25, False, True, True),  # nudged (or woken), the interval over: now
        (100.5, False, False, False),  # nothing new, within the poll: the claim alone
        (101.0, False, False, True),  # a whole poll without one: fan out anyway (API callbacks)
    ],
)
def test_the_fan_out_runs_after_full_batches_nudges_and_at_least_every_poll(
    now: float, more: bool, pending: bool, due: bool
) -> None:
    """Under a steady SMS load (a nudge per batch) the fan-out runs once an interval, not once
    a nudge; a full batch runs again at once, and the poll bounds the wait for API events."""
    assert fan_out_due(now, 100.0, more=more, pending=pending, every=0.25) is due


def test_the_fan_out_interval_is_short_beside_the_poll() -> None:
    """Putting the fan-out off delays a webhook far less than the poll would."""
    assert NUDGE_MIN_SECONDS < FAN_OUT_EVERY_SECONDS <= POLL_SECONDS / 4


@pytest.mark.parametrize(
    ("now", "pending", "wait"),
    [
        (100.1, True, 0.151),  # a fan-out put off: until it is due, a hair past
        (100.3, True, 0.001),  # already due: at once
        (100.1, False, POLL_SECONDS),  # nothing waits: the poll
        (99.0, True, POLL_SECONDS),  # a clock behind the fan-out never waits past the poll
    ],
)
def test_an_idle_loop_wakes_for_a_fan_out_it_put_off(
    now: float, pending: bool, wait: float
) -> None:
    """Events whose fan-out was put off are not left for the poll when no nudge follows."""
    assert idle_timeout(now, 100.0, pending=pending, every=0.25) == pytest.approx(wait)
