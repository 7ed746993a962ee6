"""Per-key limits on the send paths: 429 with Retry-After, and nothing written.

rate_per_minute and daily_message_limit: each API process reserves quota in chunks from
sms_api_key_usage (api_key_usage_reserve, one autocommit statement) and spends it locally
(shared/quota.py has the arithmetic and what it guarantees). A key without limits never touches
the table. recipient_hourly_limit is counted by the enqueue statement itself, against the key's
messages of the trailing hour, under an advisory lock per (key, recipient) that the statement
takes first (sms_recipients_recent, migration 0017); only a refused request asks the database
again, for Retry-After.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from api.connections import Connect
from api.errors import ApiError
from shared import metrics, quota
from shared.apikeys import Caller
from shared.messages import RecipientLimitReached
from shared.queries import q
from shared.quota import Kind, Share
from shared.validation import Problem

_MESSAGES: dict[str, str] = {
    quota.RATE_LIMITED: "this API key's send requests per minute are used up",
    quota.DAILY_LIMIT_REACHED: "this API key's messages for the day (UTC) are used up",
    quota.RECIPIENT_RATE_LIMITED: "this API key sent the most messages an hour allows to",
}


def too_many(
    caller: Caller, code: str, retry_after: int, fields: Sequence[str] = (), detail: str = ""
) -> ApiError:
    """The 429 of a limit (one error per field at fault, or one without a field), counted per
    key and code."""
    metrics.child(metrics.API_KEY_LIMITED, str(caller.id), code).inc()
    message = f"{_MESSAGES[code]}{detail}; retry after {retry_after} s"
    headers = {"Retry-After": str(retry_after)}
    if not fields:
        return ApiError(429, code=code, message=message, headers=headers)
    return ApiError(429, [Problem(f, code, message) for f in fields], headers=headers)


@dataclass
class Admission:
    """What one request took from this process's shares; given back when it writes nothing.

    `with admission:` around the write gives it back when the block raises.
    """

    taken: list[tuple[Share, int]] = field(default_factory=list)

    def refund(self) -> None:
        """Put back what was taken (into a share whose window ended, it dies with the share)."""
        for share, amount in self.taken:
            share.tokens += amount
        self.taken.clear()

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self.refund()


class Quota:
    """This process's shares of every key's per-minute and per-day quota (AppState.quota).

    `clock` gives the time windows are counted in; None (production) means the database's.
    """

    def __init__(
        self,
        clock: Callable[[], datetime | None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self._shares: dict[tuple[int, Kind], Share] = {}
        self._refills: dict[tuple[int, Kind], asyncio.Lock] = {}

    async def admit(self, connect: Connect, caller: Caller, messages: int) -> Admission:
        """Spend one send request of rate_per_minute and `messages` of daily_message_limit, or
        raise the 429 (spending nothing). `connect` (autocommit) is asked only for a refill."""
        admission = Admission()
        wanted: list[tuple[Kind, int | None, int]] = [
            ("minute", caller.limits.rate_per_minute, 1),
            ("day", caller.limits.daily_message_limit, messages),
        ]
        try:
            for kind, limit, need in wanted:
                if limit is not None:
                    share = await self._spend(connect, caller, kind, limit, need)
                    admission.taken.append((share, need))
        except BaseException:
            admission.refund()
            raise
        return admission

    async def _spend(
        self, connect: Connect, caller: Caller, kind: Kind, limit: int, need: int
    ) -> Share:
        slot = (caller.id, kind)
        share = self._spent_locally(slot, limit, need, caller, kind)
        if share is not None:
            return share
        # The connection before the lock: one that waited for a connection while holding it
        # would wait on the requests queued behind it, which may hold every pooled one.
        conn = await connect()
        # One refill per key and window at a time: requests that queue here mostly find the
        # refill's chunk waiting for them instead of each reserving their own.
        async with self._refills.setdefault(slot, asyncio.Lock()):
            share = self._spent_locally(slot, limit, need, caller, kind)
            if share is not None:
                return share
            current = self._shares.get(slot)
            live = current is not None and current.live(self._monotonic(), limit)
            have = current.tokens if current is not None and live else 0
            share, granted = await self._reserve(conn, caller.id, kind, limit, need - have)
            if current is not None and current.window_start == share.window_start:
                # The same window (its left-over tokens stay): renew its clock and its limit.
                if current.limit != limit:
                    current.limit, current.refused_from = limit, None
                current.spend_until, current.ends_at = share.spend_until, share.ends_at
                share = current
            else:  # a new window: what was left of the old one dies with it
                self._shares[slot] = share
            if granted:
                share.tokens += granted
                if share.take(need):
                    return share
            share.refused(need)
            raise too_many(caller, quota.CODES[kind], share.retry_after(self._monotonic()))

    def _spent_locally(
        self, slot: tuple[int, Kind], limit: int, need: int, caller: Caller, kind: Kind
    ) -> Share | None:
        """The share `need` was spent from without asking the database, None when it must ask;
        raises the 429 when the database already refused as much in this window."""
        share = self._shares.get(slot)
        now = self._monotonic()
        if share is None or not share.live(now, limit):
            return None
        if share.take(need):
            return share
        if share.known_refused(need):
            raise too_many(caller, quota.CODES[kind], share.retry_after(now))
        return None

    async def _reserve(
        self, conn: AsyncConnection[Any], key_id: int, kind: Kind, limit: int, short: int
    ) -> tuple[Share, int]:
        """Reserve a chunk (or `short`, if more) of the key's current window; when that does not
        fit, exactly `short`. The window's share (no tokens yet) and what was granted (0: none)."""
        ask = quota.want(short, limit)
        while True:
            sent = self._monotonic()
            cur = await conn.execute(
                q("api_key_usage_reserve"),
                {"api_key_id": key_id, "kind": kind, "want": ask, "limit": limit,
                 "now": self._clock()},
            )  # fmt: skip
            row = await cur.fetchone()
            received = self._monotonic()
            assert row is not None  # always one row
            db_now, start, ends, used = row
            left = (ends - db_now).total_seconds()
            share = Share(start, limit, spend_until=sent + left, ends_at=received + left)
            if used is not None:
                return share, ask
            if ask == short:
                return share, 0
            ask = short


async def recipient_limited(
    conn: AsyncConnection[Any],
    caller: Caller,
    refused: RecipientLimitReached,
    to_numbers: Sequence[str],
    fields: Sequence[str],
) -> ApiError:
    """The 429 recipient_rate_limited of a request the enqueue refused (`to_numbers[i]` is item
    i's recipient, `fields[i]` its field): it names the field of the first item to each recipient
    over the limit, with Retry-After until enough of the key's messages to them leave the hour."""
    limit = caller.limits.recipient_hourly_limit
    assert limit is not None  # only a key with the limit is refused by it
    counts = Counter(to_numbers)
    at_fault = [to_numbers[i] for i in refused.ordinals]
    cur = await conn.execute(
        q("messages_recipient_hour"),
        {"api_key_id": caller.id, "limit": limit, "to_numbers": at_fault,
         "counts": [counts[to] for to in at_fault]},
    )  # fmt: skip
    over = await cur.fetchall()
    # Asked after the refusal's locks were released: a recipient whose oldest message has left
    # the hour since then is no longer over (no row), and may be tried again at once.
    retry_after = max(
        (quota.recipient_retry_after(fits_at, now) for _, now, fits_at in over), default=1
    )
    return too_many(
        caller,
        quota.RECIPIENT_RATE_LIMITED,
        retry_after,
        fields=[fields[i] for i in refused.ordinals],
        detail=f" one recipient ({limit})",
    )
