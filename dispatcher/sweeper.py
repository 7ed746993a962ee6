"""Status sweeper: ask the provider about accepted messages whose final callback never came.

Its pace follows the backlog. Each provider has a read budget of STATUS_SWEEP_READS_PER_SECOND
for this dispatcher: a token bucket that saves up at most one second of reads. One pass
(`Sweeper.run_once`) claims, per provider, as many stale messages as the budget allows (all of
them when fewer are stale), asks the provider about them FETCH_CONCURRENCY at a time, and says
when it wants to run again: as soon as the budget holds another batch while a backlog is left,
IDLE_SECONDS once it has caught up.

A lookup that times out or fails for a passing reason (connection, 5xx, 429) is due again after a
short backoff that doubles with each failure in a row (`recheck_delay`); one the provider refuses
(sid unknown, bad credentials) waits the normal STATUS_SWEEP_AFTER_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from shared import metrics
from shared.config import Settings
from shared.errors import ConfigError
from shared.providers.base import Category, Provider, ProviderError, StatusUpdate
from shared.queries import q
from shared.status import apply_update

log = logging.getLogger(__name__)

# Lookups in flight at once, per provider: 16 at a typical 150-300 ms per read reach the default
# budget of 50 reads/s without looking like a burst to the provider.
FETCH_CONCURRENCY: Final = 16
# Caught up: one claim that finds nothing is all an idle pass costs, and 10 s is little next to
# STATUS_SWEEP_AFTER_SECONDS (900 s by default).
IDLE_SECONDS: Final = 10.0
# The budget saves up this much time's worth of reads; it is also the batch one pass claims.
BURST_SECONDS: Final = 1.0
# First wait after a passing lookup failure; it doubles with each failure in a row.
RECHECK_FIRST_SECONDS: Final = 15.0
# Lookup failures that say nothing about the message: the next read may well succeed.
_PASSING: Final = frozenset({Category.RETRYABLE, Category.AMBIGUOUS})


class ReadBudget:
    """A token bucket of provider reads: `rate` per second, at most BURST_SECONDS' worth saved.

    Times are seconds on the caller's clock; the bucket starts full at the first time it sees.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ConfigError(f"STATUS_SWEEP_READS_PER_SECOND must be positive, got {rate:g}")
        self.rate = rate
        self.batch = max(1.0, rate * BURST_SECONDS)
        self.tokens = self.batch
        self._at: float | None = None

    def available(self, at: float) -> int:
        """Whole reads the budget allows at time `at` (refilled since it last looked)."""
        if self._at is not None and at > self._at:
            self.tokens = min(self.batch, self.tokens + (at - self._at) * self.rate)
        self._at = at if self._at is None else max(self._at, at)
        return max(int(self.tokens), 0)

    def spend(self, reads: int) -> None:
        self.tokens -= reads

    def batch_in(self, at: float) -> float:
        """Seconds from `at` until the budget holds a whole batch again."""
        self.available(at)
        return max(0.0, (self.batch - self.tokens) / self.rate)


def next_pass_in(allowed: int, claimed: int, batch_in: float) -> float:
    """Seconds until a provider wants the next pass: when the budget refills while stale
    messages are left (it claimed all it was allowed), IDLE_SECONDS once it has caught up."""
    if claimed < allowed:
        return IDLE_SECONDS
    return min(batch_in, IDLE_SECONDS)


def recheck_delay(failures: int, after: float, retry_after: float | None = None) -> float:
    """Seconds before a lookup that failed `failures` times in a row (>= 1) is tried again.

    Doubles from RECHECK_FIRST_SECONDS, capped at `after` (STATUS_SWEEP_AFTER_SECONDS: never later
    than the normal interval); a provider's Retry-After is honoured within that cap.
    """
    backoff = RECHECK_FIRST_SECONDS * 2.0 ** min(max(failures, 1) - 1, 32)
    return min(max(backoff, retry_after or 0.0), after)


def is_passing(error: BaseException) -> bool:
    """Whether a failed lookup is worth asking again soon (timeout, connection, 5xx, 429)."""
    if isinstance(error, ProviderError):
        return error.category in _PASSING
    return isinstance(error, TimeoutError | psycopg.Error)


@dataclass(frozen=True)
class Outcome:
    """The bookkeeping one lookup leaves: failures in a row, and when to ask again if soon."""

    message_id: UUID
    failures: int
    recheck_in: float | None  # seconds after the claim; None: the normal interval


@dataclass(frozen=True)
class SweepPass:
    """What one pass did, and when the sweeper wants the next one."""

    claimed: int
    retrying: int  # lookups that failed for a passing reason: due again soon
    next_in: float  # seconds


class Sweeper:
    """One dispatcher's status sweeper: a read budget per provider, and its one pass."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        providers: Mapping[str, Provider],
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.providers = providers
        self.settings = settings
        self.clock = clock
        self.budgets = {
            name: ReadBudget(settings.status_sweep_reads_per_second) for name in providers
        }

    async def __call__(self) -> float:
        """One pass on the real clocks; seconds until the next (the Runner's Sweep)."""
        return (await self.run_once()).next_in

    async def run_once(self, *, now: datetime | None = None) -> SweepPass:
        """Claim what each provider's budget allows, look it up, record the answers.

        Claims in a short committed transaction (SKIP LOCKED, bumping status_checked_at), so
        several dispatchers never ask about the same message at once; fetches with no transaction
        open; applies each answer through shared.status.apply_update(source="sweep"). `now` is
        for tests: the claim's clock (default: the database's) and the budget's (default: the
        monotonic clock).
        """
        started = self._time(now)
        allowed = {name: budget.available(started) for name, budget in self.budgets.items()}
        claimed = await self._claim(allowed, now) if any(allowed.values()) else []
        per_provider: dict[str, list[dict[str, Any]]] = {name: [] for name in self.providers}
        for row in claimed:
            per_provider[row["provider"]].append(row)
        for name, rows in per_provider.items():
            self.budgets[name].spend(len(rows))
        outcomes = [
            outcome
            for found in await asyncio.gather(
                *(self._check_all(rows) for rows in per_provider.values() if rows)
            )
            for outcome in found
        ]
        await self._settle(claimed, outcomes)
        ended = self._time(now)
        next_in = min(
            (
                next_pass_in(allowed[name], len(rows), self.budgets[name].batch_in(ended))
                for name, rows in per_provider.items()
            ),
            default=IDLE_SECONDS,
        )
        retrying = sum(1 for o in outcomes if o.recheck_in is not None)
        return SweepPass(claimed=len(claimed), retrying=retrying, next_in=next_in)

    def _time(self, now: datetime | None) -> float:
        return now.timestamp() if now is not None else self.clock()

    async def _claim(
        self, allowed: Mapping[str, int], now: datetime | None
    ) -> list[dict[str, Any]]:
        settings = self.settings
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                q("messages_sweep_claim"),
                {
                    "now": now,
                    "providers": list(allowed),
                    "reads": list(allowed.values()),
                    "after": settings.status_sweep_after_seconds,
                    "max_age": settings.status_sweep_max_age_seconds,
                },
            )
            return await cur.fetchall()

    async def _check_all(self, rows: Sequence[dict[str, Any]]) -> list[Outcome]:
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def check(row: dict[str, Any]) -> Outcome:
            async with gate:
                return await self._check(row)

        return list(await asyncio.gather(*(check(row) for row in rows)))

    async def _check(self, row: dict[str, Any]) -> Outcome:
        """Ask the provider about one claimed message and apply its answer; the bookkeeping."""
        ids = {"message_id": str(row["id"]), "provider": row["provider"]}
        provider = self.providers[row["provider"]]
        try:
            async with asyncio.timeout(self.settings.provider_timeout_seconds):
                remote = await provider.fetch(row["provider_sid"])
            update = StatusUpdate(
                provider=row["provider"],
                message_id=row["id"],
                sid=remote.sid,
                raw_status=remote.raw_status,
                status=remote.status,
                error_code=remote.error_code,
                raw={
                    "sid": remote.sid,
                    "status": remote.raw_status,
                    "error_code": remote.error_code,
                },
            )
            async with self.pool.connection() as conn:
                result = await apply_update(conn, update, settings=self.settings, source="sweep")
        except (ProviderError, TimeoutError, psycopg.Error) as e:
            return self._failed(row, e, ids)
        metrics.child(metrics.SWEEP_LOOKUPS, row["provider"], "checked").inc()
        log.info(
            "status sweep: %s at the provider, %s here",
            remote.raw_status,
            result.current,
            extra={"action": "sweep_checked", "error_code": remote.error_code, **ids},
        )
        return Outcome(row["id"], failures=0, recheck_in=None)

    def _failed(self, row: dict[str, Any], error: Exception, ids: dict[str, str]) -> Outcome:
        """The bookkeeping of a failed lookup, logged once here where it is decided."""
        category = error.category.value if isinstance(error, ProviderError) else "ambiguous"
        extra: dict[str, Any] = {
            "error_category": category,
            "error_code": getattr(error, "code", None),
            **ids,
        }
        if not is_passing(error):
            metrics.child(metrics.SWEEP_LOOKUPS, row["provider"], "refused").inc()
            log.warning(
                "status sweep: provider lookup refused, asked again after the normal interval: %s",
                error,
                extra={"action": "sweep_failed", **extra},
            )
            return Outcome(row["id"], failures=row["status_check_failures"], recheck_in=None)
        failures = row["status_check_failures"] + 1
        retry_after = error.retry_after if isinstance(error, ProviderError) else None
        delay = recheck_delay(failures, self.settings.status_sweep_after_seconds, retry_after)
        metrics.child(metrics.SWEEP_LOOKUPS, row["provider"], "retry").inc()
        log.warning(
            "status sweep: provider lookup failed, asked again in %.0f s: %s",
            delay,
            str(error) or type(error).__name__,  # a bare TimeoutError says nothing itself
            extra={"action": "sweep_retry", **extra},
        )
        return Outcome(row["id"], failures=failures, recheck_in=delay)

    async def _settle(self, claimed: Sequence[dict[str, Any]], outcomes: Sequence[Outcome]) -> None:
        """Write the bookkeeping that changed, for the whole claim in one statement."""
        before = {row["id"]: row["status_check_failures"] for row in claimed}
        changed = [
            o for o in outcomes if o.recheck_in is not None or o.failures != before[o.message_id]
        ]
        if not changed:
            return
        async with self.pool.connection() as conn:
            await conn.execute(
                q("messages_sweep_settle"),
                {
                    "ids": [o.message_id for o in changed],
                    "recheck_in": [o.recheck_in for o in changed],
                    "failures": [o.failures for o in changed],
                    "checked_at": claimed[0]["status_checked_at"],
                },
            )
