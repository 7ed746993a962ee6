"""dispatcher.webhook_decision: every answer class to an outcome, and the backoff's bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.webhook_decision import (
    BACKOFF_CAP_SECONDS,
    Delivered,
    GiveUp,
    Gone,
    Retry,
    backoff_seconds,
    decide,
)

MADE = datetime(2026, 5, 1, tzinfo=UTC)
WINDOW = timedelta(hours=72)


def outcome(status: int | None, *, attempt: int = 1, after: timedelta = timedelta(seconds=1)):  # type: ignore[no-untyped-def]
    return decide(
        status=status,
        error=None if status is not None else "no answer: ConnectError",
        attempt=attempt,
        created_at=MADE,
        now=MADE + after,
        retry_window=WINDOW,
        rand=0.0,
    )


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    """Any 2xx answer delivers."""
    assert outcome(status) == Delivered(status)


def test_410_is_gone_even_on_the_last_try() -> None:
    """410 Gone disables the endpoint, whenever it comes."""
    assert isinstance(outcome(410), Gone)
    assert isinstance(outcome(410, after=WINDOW), Gone)


@pytest.mark.parametrize("status", [None, 301, 400, 401, 404, 429, 500, 502, 503])
def test_anything_else_is_retried_within_the_window(status: int | None) -> None:
    """Other answers, redirects and no answer at all are retried, with the reason kept."""
    got = outcome(status)
    assert isinstance(got, Retry)
    assert got.at == MADE + timedelta(seconds=1) + timedelta(seconds=5)
    assert got.error == ("no answer: ConnectError" if status is None else f"answered HTTP {status}")


def test_the_last_retry_is_at_the_window_end_and_a_failure_then_gives_up() -> None:
    """Close to the end the retry lands exactly on it; a failure at or past it gives up."""
    near = outcome(500, attempt=40, after=WINDOW - timedelta(minutes=10))
    assert isinstance(near, Retry) and near.at == MADE + WINDOW
    last = outcome(500, attempt=41, after=WINDOW)
    assert isinstance(last, GiveUp) and last.error.endswith("gave up after 72 h of retries")


def test_backoff_doubles_from_5_s_to_an_hour() -> None:
    """5, 10, 20 ... seconds, capped at one hour, with no jitter at rand 0."""
    assert [backoff_seconds(n, 0.0) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff_seconds(11, 0.0) == BACKOFF_CAP_SECONDS
    assert backoff_seconds(10_000, 0.0) == BACKOFF_CAP_SECONDS
    assert backoff_seconds(0, 0.0) == 5.0


@given(st.integers(min_value=-5, max_value=10_000), st.floats(min_value=-1, max_value=2))
def test_no_backoff_exceeds_its_cap_or_falls_under_three_quarters(
    attempt: int, rand: float
) -> None:
    """Jitter only shortens, by at most a quarter; nothing ever exceeds the cap."""
    seconds = backoff_seconds(attempt, rand)
    ceiling = min(BACKOFF_CAP_SECONDS, 5.0 * 2.0 ** min(max(attempt, 1) - 1, 32))
    assert 0.75 * ceiling <= seconds <= ceiling <= BACKOFF_CAP_SECONDS
