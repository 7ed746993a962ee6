"""Per-key limits as pure decisions: how much quota a process reserves at a time, how it spends
what it reserved, and what Retry-After says. No I/O: api/limits.py reads and writes.

rate_per_minute and daily_message_limit are counted per UTC window (minute, day) in
sms_api_key_usage, shared by every API process. A process reserves a chunk of a window's quota
with one guarded UPSERT (never past the limit) and spends it locally; what it does not spend dies
with the window. So the key never exceeds its limit, and is refused early by at most
processes x (chunk - 1) per window (plus as much again for each process restarted within it); a
chunk is 1 below a limit of 200, so small limits are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

Kind = Literal["minute", "day"]
# The error code of each limit (README, Errors).
RATE_LIMITED: Final = "rate_limited"
DAILY_LIMIT_REACHED: Final = "daily_limit_reached"
RECIPIENT_RATE_LIMITED: Final = "recipient_rate_limited"
CODES: Final[dict[Kind, str]] = {"minute": RATE_LIMITED, "day": DAILY_LIMIT_REACHED}
# The share of a window's limit one reservation takes: 1/CHUNK_DIVISOR of it, at least 1.
CHUNK_DIVISOR: Final = 100
RECIPIENT_WINDOW: Final = timedelta(hours=1)


def chunk(limit: int) -> int:
    """How much of a window's `limit` one reservation takes: 1% of it, at least 1."""
    return max(1, limit // CHUNK_DIVISOR)


def want(short: int, limit: int) -> int:
    """What to ask the database for when the local share is `short` of a need: that, or a chunk
    if more."""
    return max(short, chunk(limit))


def retry_after(seconds: float) -> int:
    """A Retry-After value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


@dataclass
class Share:
    """This process's unspent quota of one key's current window (minute or day).

    Times are the process's monotonic clock, placed from the database's clock at reservation:
    `spend_until` is the window's end as seen before the reservation was sent (early by the round
    trip, so a share is never spent after its window ended in the database), `ends_at` the end as
    seen after the answer came (late by the round trip, so Retry-After never sends a client back
    before the window turned).
    """

    window_start: datetime
    limit: int
    spend_until: float
    ends_at: float
    tokens: int = 0
    # The smallest need the database refused in this window: `used` only grows within a window,
    # so anything as large is refused without asking again (until the limit changes).
    refused_from: int | None = None

    def live(self, now: float, limit: int) -> bool:
        """Whether the share still belongs to the current window of a key whose limit is `limit`
        (a changed limit starts over: a refusal under the old one no longer holds)."""
        return now < self.spend_until and limit == self.limit

    def take(self, need: int) -> bool:
        """Spend `need` tokens if there are that many."""
        if self.tokens < need:
            return False
        self.tokens -= need
        return True

    def known_refused(self, need: int) -> bool:
        """Whether the database already refused a need this large in this window."""
        return self.refused_from is not None and need >= self.refused_from

    def refused(self, need: int) -> None:
        """Remember that the database refused `need` in this window."""
        self.refused_from = need if self.refused_from is None else min(self.refused_from, need)

    def retry_after(self, now: float) -> int:
        """Seconds until this window ends (Retry-After)."""
        return retry_after(self.ends_at - now)


def recipient_retry_after(fits_at: datetime | None, now: datetime) -> int:
    """Retry-After of recipient_rate_limited: until enough of the recipient's counted messages
    have left the trailing hour (`fits_at`); None (the request alone is over the limit): an hour."""
    if fits_at is None:
        return retry_after(RECIPIENT_WINDOW.total_seconds())
    return retry_after((fits_at - now).total_seconds())
