"""The retry policy as a pure function: no database, no clock, no sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.config import load_settings
from shared.errors import ConfigError
from shared.retry import MAX_RETRY_AFTER_SECONDS, RetryPolicy, next_attempt_at

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
FIXED = RetryPolicy.from_settings(load_settings({}))
EXPO = RetryPolicy(kind="exponential", max_attempts=8, base_seconds=5, factor=2, cap_seconds=600)


def test_default_policy_is_fixed_25_seconds_four_attempts() -> None:
    """The default RETRY_POLICY is fixed: 25 s apart, 3 retries, so 4 attempts in all."""
    assert (FIXED.kind, FIXED.delay_seconds, FIXED.max_attempts) == ("fixed", 25.0, 4)


def test_fixed_policy_schedules_three_retries_then_none() -> None:
    """Attempts 1-3 are followed 25 s later by the next; after attempt 4 nothing is left."""
    for attempt in (1, 2, 3):
        got = next_attempt_at(NOW, attempt, FIXED, retry_after=None, rand=0.7)
        assert got == NOW + timedelta(seconds=25)
    assert next_attempt_at(NOW, 4, FIXED, retry_after=None, rand=0.7) is None


def test_exponential_settings_build_the_policy() -> None:
    """RETRY_POLICY=exponential reads base, factor, cap and maximum attempts from the env."""
    env = {
        "RETRY_POLICY": "exponential",
        "RETRY_BASE_SECONDS": "2",
        "RETRY_FACTOR": "3",
        "RETRY_CAP_SECONDS": "100",
        "RETRY_MAX_ATTEMPTS": "5",
    }
    policy = RetryPolicy.from_settings(load_settings(env))
    assert policy == RetryPolicy(
        kind="exponential", max_attempts=5, base_seconds=2, factor=3, cap_seconds=100
    )


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(1, 5), (2, 10), (3, 20), (4, 40), (7, 320), (8, None)]
)
def test_exponential_full_jitter_spans_zero_to_the_ceiling(attempt: int, ceiling: int) -> None:
    """Delays span 0 (rand=0) to base*factor^(n-1) (rand->1); none after the last attempt."""
    low = next_attempt_at(NOW, attempt, EXPO, retry_after=None, rand=0.0)
    high = next_attempt_at(NOW, attempt, EXPO, retry_after=None, rand=0.999999)
    if ceiling is None:
        assert low is None and high is None
        return
    assert low == NOW
    assert high is not None
    assert ceiling * 0.999 <= (high - NOW).total_seconds() < ceiling


def test_exponential_delay_is_capped() -> None:
    """Late attempts wait at most the cap, however large factor ** attempt grows."""
    policy = RetryPolicy(kind="exponential", max_attempts=10_000, base_seconds=1, cap_seconds=60)
    got = next_attempt_at(NOW, 5_000, policy, retry_after=None, rand=1.0)
    assert got == NOW + timedelta(seconds=60)


@pytest.mark.parametrize("policy", [FIXED, EXPO], ids=["fixed", "exponential"])
def test_retry_after_wins_when_longer(policy: RetryPolicy) -> None:
    """A provider's Retry-After longer than the policy's delay is honoured, even past the cap."""
    got = next_attempt_at(NOW, 1, policy, retry_after=900.0, rand=0.5)
    assert got == NOW + timedelta(seconds=900)


def test_shorter_retry_after_does_not_shorten_the_delay() -> None:
    """A Retry-After shorter than the policy's delay changes nothing."""
    got = next_attempt_at(NOW, 1, FIXED, retry_after=3.0, rand=0.5)
    assert got == NOW + timedelta(seconds=25)


def test_absurd_retry_after_is_bounded() -> None:
    """A Retry-After of years is read as a day, not as an overflow."""
    got = next_attempt_at(NOW, 1, FIXED, retry_after=1e15, rand=0.5)
    assert got == NOW + timedelta(seconds=MAX_RETRY_AFTER_SECONDS)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"delay_seconds": -1}, {"factor": 0.5}, {"cap_seconds": -5}],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    """A policy with no attempts, negative delays or a shrinking factor is a ConfigError."""
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@given(
    attempt=st.integers(min_value=1, max_value=2_000),
    rand=st.floats(min_value=0.0, max_value=1.0),
    base=st.floats(min_value=0.0, max_value=1_000.0),
    factor=st.floats(min_value=1.0, max_value=10.0),
    cap=st.floats(min_value=0.0, max_value=100_000.0),
    retry_after=st.none() | st.floats(min_value=0.0, max_value=10_000_000.0),
)
def test_no_delay_exceeds_the_cap_or_goes_negative(
    attempt: int, rand: float, base: float, factor: float, cap: float, retry_after: float | None
) -> None:
    """Property: every delay is in [0, cap], unless a longer Retry-After asked for more."""
    policy = RetryPolicy(
        kind="exponential", max_attempts=10_000, base_seconds=base, factor=factor, cap_seconds=cap
    )
    got = next_attempt_at(NOW, attempt, policy, retry_after=retry_after, rand=rand)
    assert got is not None
    delay = (got - NOW).total_seconds()
    assert delay >= 0
    if retry_after is None or delay > cap + 1e-6:
        bound = cap if retry_after is None else max(cap, min(retry_after, MAX_RETRY_AFTER_SECONDS))
        assert delay <= bound + 1e-6
