"""What one webhook attempt's answer means, as a value: pure, no I/O (dispatcher/webhooks.py
writes it).

2xx: delivered. 410 Gone: the receiver asks us to stop (the endpoint is disabled at once). Any
other answer, no answer, a timeout or a refused address: tried again after a backoff that starts
at 5 s and doubles to a cap of 1 h (less up to a quarter at random, so that the retries of one
outage do not come back in step), until the retry window (WEBHOOK_RETRY_HOURS, 72 h) after the
delivery was made; the last try is at the window's end, and a failure then gives up.

A retry parks its endpoint: the endpoint's other deliveries wait for this one (the probe), for
PARK_SECONDS and at least until `answer_by` (its retry plus the longest its answer may take), so a
dead endpoint costs one POST per backoff step instead of one per pending delivery. A success
releases them at once; a parked backlog that wakes with its endpoint still dead costs the POSTs in
flight before the first failure parks it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

BACKOFF_FIRST_SECONDS: Final = 5.0
BACKOFF_CAP_SECONDS: Final = 3600.0
BACKOFF_JITTER: Final = 0.25
GONE: Final = 410
# How long a failing endpoint's other deliveries wait for its probe (the backoff's cap: a parked
# backlog is rewritten at most this often), and the margin past the probe's POST before they may
# come due.
PARK_SECONDS: Final = BACKOFF_CAP_SECONDS
PARK_MARGIN_SECONDS: Final = 5.0


@dataclass(frozen=True)
class Delivered:
    """The receiver answered 2xx."""

    status: int


@dataclass(frozen=True)
class Retry:
    """Try again at `at`; `error` says why this attempt failed."""

    at: datetime
    status: int | None
    error: str


@dataclass(frozen=True)
class GiveUp:
    """Failed for the whole retry window: the delivery fails."""

    status: int | None
    error: str


@dataclass(frozen=True)
class Gone:
    """410: the delivery fails and its endpoint is disabled with every pending delivery."""

    status: int
    error: str


Outcome = Delivered | Retry | GiveUp | Gone


def backoff_seconds(attempt: int, rand: float) -> float:
    """Seconds before the retry after failed attempt `attempt` (1, 2, ...), `rand` in [0, 1]:
    5 s doubling per attempt to the 1 h cap, less up to a quarter; never above the cap."""
    doublings = min(max(attempt, 1) - 1, 32)  # 5 * 2**10 is past the cap already
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_FIRST_SECONDS * 2.0**doublings)
    return ceiling * (1.0 - BACKOFF_JITTER * min(max(rand, 0.0), 1.0))


def decide(
    *,
    status: int | None,
    error: str | None,
    attempt: int,
    created_at: datetime,
    now: datetime,
    retry_window: timedelta,
    rand: float,
) -> Outcome:
    """The outcome of attempt `attempt` of a delivery made at `created_at`, answered `status`
    (None: no answer; `error` says why) at `now`."""
    if status is not None and 200 <= status < 300:
        return Delivered(status)
    if status == GONE:
        return Gone(status, "the endpoint answered 410 Gone")
    reason = error or f"answered HTTP {status}"
    deadline = created_at + retry_window
    if now >= deadline:
        hours = retry_window.total_seconds() / 3600
        return GiveUp(status, f"{reason}; gave up after {hours:g} h of retries")
    at = min(now + timedelta(seconds=backoff_seconds(attempt, rand)), deadline)
    return Retry(at, status, reason)


def answer_by(retry_at: datetime, timeout_seconds: float) -> datetime:
    """When the probe retried at `retry_at` has been answered: past the end of its POST
    (`timeout_seconds`), with a margin; a failing endpoint's other deliveries wait at least until
    then."""
    return retry_at + timedelta(seconds=timeout_seconds + PARK_MARGIN_SECONDS)
