"""The retry policy: when the next attempt may run, as a pure function of time, attempt and chance.

No I/O and no clock or randomness of its own: callers pass `now` and `rand` (River's `NextRetryAt`,
stamina's `_compute_backoff`), so tests cover it exhaustively without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from shared.config import Settings
from shared.errors import ConfigError

PolicyKind = Literal["fixed", "exponential"]
# A provider's Retry-After is honoured up to a day; past that it is a bug or a typo, not advice.
MAX_RETRY_AFTER_SECONDS = 86_400.0


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a piece of work gets and how long to wait between them.

    `fixed`: `delay_seconds` between attempts. `exponential`: full jitter over
    `min(cap_seconds, base_seconds * factor ** (attempt - 1))`. `max_attempts` counts every attempt,
    the first included.
    """

    kind: PolicyKind = "fixed"
    max_attempts: int = 4
    delay_seconds: float = 25.0
    base_seconds: float = 5.0
    factor: float = 2.0
    cap_seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"a retry policy needs at least one attempt, got {self.max_attempts}")
        if min(self.delay_seconds, self.base_seconds, self.cap_seconds) < 0:
            raise ConfigError("retry delays must not be negative")
        if self.factor < 1:
            raise ConfigError(f"RETRY_FACTOR must be at least 1, got {self.factor}")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy RETRY_POLICY and its RETRY_* settings describe."""
        if settings.retry_policy == "exponential":
            return cls(
                kind="exponential",
                max_attempts=settings.retry_max_attempts,
                base_seconds=settings.retry_base_seconds,
                factor=settings.retry_factor,
                cap_seconds=settings.retry_cap_seconds,
            )
        return cls(
            kind="fixed",
            max_attempts=settings.retry_max_retries + 1,
            delay_seconds=settings.retry_delay_seconds,
        )


def backoff_seconds(attempt: int, policy: RetryPolicy, *, rand: float) -> float:
    """The policy's wait after attempt number `attempt` (1-based), ignoring the attempt limit."""
    if policy.kind == "fixed":
        return policy.delay_seconds
    try:
        ceiling = min(
            policy.cap_seconds, policy.base_seconds * policy.factor ** max(attempt - 1, 0)
        )
    except OverflowError:  # factor ** attempt beyond float range: the cap applies anyway
        ceiling = policy.cap_seconds
    # Full jitter (anywhere in [0, ceiling)) spreads the retries of a burst of failures apart.
    return min(max(rand, 0.0), 1.0) * ceiling


def next_attempt_at(
    now: datetime,
    attempt: int,
    policy: RetryPolicy,
    *,
    retry_after: float | None,
    rand: float,
) -> datetime | None:
    """When attempt `attempt + 1` may start after attempt `attempt` failed; None when none is left.

    A provider's Retry-After wins when it asks for a longer wait than the policy.
    """
    if attempt >= policy.max_attempts:
        return None
    delay = backoff_seconds(attempt, policy, rand=rand)
    if retry_after is not None and retry_after > delay:
        delay = min(retry_after, max(MAX_RETRY_AFTER_SECONDS, delay))
    return now + timedelta(seconds=delay)
