"""Customers' status webhooks out of the outbox (kind deliver_webhook), signed to the Standard
Webhooks spec: fan out, claim, POST, record. `run_once` is one iteration; dispatcher/webhook_loop.py
runs them in the dispatcher process.

The fan-out (`fan_out`, migration 0016) turns message events that have committed into deliveries
and their outbox rows, after the SMS transactions that wrote the events: an endpoint, dead or
alive, adds nothing to an SMS send or a status callback. One statement per batch of events moves
a cursor that never passes an event of a transaction still open (see the migration).

Webhook work has a share of the dispatcher of its own, so it never delays an SMS: its own claim
(webhook_deliveries_claim, on its own index), its own concurrency (WEBHOOK_CONCURRENCY), its own
HTTP client and its own small connection pool, all built by `python -m dispatcher`.

Per claimed delivery: a disabled endpoint's delivery is dropped; otherwise `webhook_http.post`
checks the address (no private, loopback or link-local one unless WEBHOOK_ALLOW_PRIVATE_URLS),
signs and sends, and `webhook_decision.decide` turns the answer into a value that one guarded
statement writes. 410 disables the endpoint at once; an endpoint that has failed for
WEBHOOK_RETRY_HOURS is disabled and the operator alerted, in the same transaction. A failed attempt
parks its endpoint (its other deliveries wait for this one's retry, out of the outbox:
webhook_decision and migration 0020), and a success releases it (`requeue` queues them again).
Successes, the common case, are written in groups (dispatcher/recorder.py:
webhook_deliveries_delivered), one statement for many slots.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import aiohttp
from psycopg import AsyncConnection, errors
from psycopg.rows import class_row, dict_row
from psycopg_pool import AsyncConnectionPool

from dispatcher.recorder import Recorder
from dispatcher.webhook_decision import (
    PARK_SECONDS,
    Delivered,
    Gone,
    Outcome,
    Retry,
    answer_by,
    decide,
)
from dispatcher.webhook_http import post
from shared import alerts, metrics
from shared.config import Settings
from shared.queries import q
from shared.webhook_signing import secrets_in_force, webhook_id
from shared.webhook_targets import Resolver, system_resolver

log = logging.getLogger(__name__)
T = TypeVar("T")
_TRANSIENT = (errors.DeadlockDetected, errors.SerializationFailure)
_TRIES = 3


@dataclass(frozen=True)
class Delivery:
    """One claimed deliver_webhook row with its delivery and its endpoint."""

    id: int  # sms_outbox.id
    attempt: int
    claimed_at: datetime
    delivery_id: UUID
    event_type: str
    payload: dict[str, Any]
    created_at: datetime
    endpoint_id: int
    url: str
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    enabled: bool


@dataclass(frozen=True)
class FanOut:
    """What the fan-out steps of one `fan_out` call did."""

    steps: int = 0
    events: int = 0  # webhook-worthy events read
    deliveries: int = 0  # deliveries made (events x their endpoints)
    more: bool = False  # the last step filled its batch: events may still wait
    idle: bool = False  # the cursor was left alone: nothing to do, or another dispatcher has it


# Events read per fan-out step (one transaction; per catch-up batch too), and steps per call:
# a deep backlog (after a long transaction held the fan-out back) is worked off a few thousand
# events at a time between claims, not in one go that keeps the claims waiting.
FANOUT_BATCH = 500
FANOUT_STEPS = 8


@dataclass(frozen=True)
class DeliveredRow:
    """A 2xx answer to one claimed delivery, for the group write."""

    work: Delivery
    status: int


# A lone success waits this long for others to share its write.
RECORD_WAIT_SECONDS = 0.002


@dataclass
class WebhookStats:
    """What one run_once did."""

    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    disabled: int = 0

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class WebhookWorker:
    """Claims and delivers webhook work for one owner (dispatcher/webhook_loop.py runs it)."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        settings: Settings,
        owner: str,
        *,
        http: aiohttp.ClientSession,
        resolve: Resolver = system_resolver,
        rand: Callable[[], float] = random.random,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.owner = owner
        self.http = http
        self.resolve = resolve
        self.rand = rand
        self.wall = wall  # signing time (Unix seconds): receivers check it against their clock
        self.window = timedelta(hours=settings.webhook_retry_hours)
        # A POST ends (timeout) well before its lease does: nobody else takes a row in flight.
        self.lease_seconds = max(
            settings.dispatch_lease_seconds, settings.webhook_timeout_seconds * 3
        )
        self.held: dict[int, Delivery] = {}
        self.recorder: Recorder[DeliveredRow] = Recorder(
            self._write_delivered,
            key=lambda row: row.work.id,
            max_rows=settings.webhook_concurrency,
            max_wait=RECORD_WAIT_SECONDS,
        )

    # -- one iteration -----------------------------------------------------------------------

    async def run_once(self, now: datetime | None = None) -> WebhookStats:
        """Fan out the committed events, then claim up to WEBHOOK_CONCURRENCY due deliveries and
        deliver them all; `now` injects the database clock (the signing time stays the wall
        clock, which receivers check)."""
        stats = WebhookStats()
        while (await self.fan_out(now=now)).more:
            pass
        works = await self.claim(self.settings.webhook_concurrency, now=now)
        stats.claimed = len(works)
        await asyncio.gather(*(self.deliver(w, stats, now=now) for w in works))
        return stats

    async def fan_out(
        self,
        *,
        batch: int = FANOUT_BATCH,
        steps: int = FANOUT_STEPS,
        now: datetime | None = None,
    ) -> FanOut:
        """Queue again what endpoints no longer parked kept out of the outbox (`requeue`), then
        turn committed message events into deliveries, `batch` events a step (each its own
        transaction), until a step finds fewer or `steps` ran; `more` says events may be left."""
        await self.requeue(now=now)
        done = FanOut()
        for _ in range(steps):
            step = await self._tx(lambda conn: fan_out_step(conn, batch))
            done = FanOut(
                steps=done.steps + 1,
                events=done.events + step.events,
                deliveries=done.deliveries + step.deliveries,
                more=step.more,
                idle=step.idle,
            )
            if not step.more:
                break
        return done

    async def requeue(self, *, now: datetime | None = None) -> int:
        """Give outbox rows back to the pending deliveries that parked endpoints kept out of the
        outbox (migration 0020), for every such endpoint no longer parked (`now` injects the
        database clock); how many. Two statements in one transaction: the endpoints' marks are
        taken off first, under their row locks, so the insert's later snapshot sees every
        delivery left out before (webhook_deliveries_unpark says why)."""

        async def body(conn: AsyncConnection[Any]) -> int:
            cur = await conn.execute(q("webhook_deliveries_unpark"), {"now": now})
            endpoints = [row[0] for row in await cur.fetchall()]
            if not endpoints:
                return 0
            cur = await conn.execute(
                q("webhook_deliveries_requeue"), {"now": now, "endpoints": endpoints}
            )
            return cur.rowcount

        requeued = await self._tx(body)
        if requeued:
            log.info(
                "parked webhook deliveries queued again",
                extra={"action": "webhook_requeue", "count": requeued},
            )
        return requeued

    async def claim(self, limit: int, *, now: datetime | None = None) -> list[Delivery]:
        """Lease up to `limit` due deliveries (committed at once); they are held from here."""
        params = {
            "now": now,
            "owner": self.owner,
            "limit": limit,
            "lease_seconds": self.lease_seconds,
        }

        async def body(conn: AsyncConnection[Any]) -> list[Delivery]:
            async with conn.cursor(row_factory=class_row(Delivery)) as cur:
                await cur.execute(q("webhook_deliveries_claim"), params)
                return await cur.fetchall()

        works = await self._tx(body) if limit > 0 else []
        self.held.update((w.id, w) for w in works)
        return works

    async def deliver(
        self, work: Delivery, stats: WebhookStats, *, now: datetime | None = None
    ) -> None:
        """POST one claimed delivery and write its outcome. Cancelled (at stop), the delivery
        stays held, so release_held hands it back; otherwise it is no longer held, whatever
        happened (a row left leased by a failure is rescued when its lease expires)."""
        try:
            await self._deliver(work, stats, now)
        except asyncio.CancelledError:
            raise
        except BaseException:
            self.held.pop(work.id, None)
            raise
        self.held.pop(work.id, None)

    async def _deliver(self, work: Delivery, stats: WebhookStats, now: datetime | None) -> None:
        if not work.enabled:
            await self._settle(work, "dropped", None, "endpoint disabled", None, stats, now)
            return
        started = time.monotonic()
        status, error = await post(
            self.http,
            work.url,
            delivery_id=work.delivery_id,
            payload=work.payload,
            keys=secrets_in_force(
                work.secret, work.previous_secret, work.previous_secret_expires_at, work.claimed_at
            ),
            resolve=self.resolve,
            allow_private=self.settings.webhook_allow_private_urls,
            within_seconds=self.settings.webhook_timeout_seconds,
            timestamp=int(self.wall()),
        )
        seconds = time.monotonic() - started
        outcome = decide(
            status=status,
            error=error,
            attempt=work.attempt,
            created_at=work.created_at,
            now=now or work.claimed_at + timedelta(seconds=seconds),
            retry_window=self.window,
            rand=self.rand(),
        )
        metrics.child(metrics.WEBHOOK_DURATION, _name(outcome)).observe(seconds)
        await self._write(work, outcome, stats, now, round(seconds * 1000, 1))

    async def _write(
        self,
        work: Delivery,
        outcome: Outcome,
        stats: WebhookStats,
        now: datetime | None,
        duration_ms: float,
    ) -> None:
        name = _name(outcome)
        error = None if isinstance(outcome, Delivered) else outcome.error
        retry_at = outcome.at if isinstance(outcome, Retry) else None
        extra = {
            "action": f"webhook_{name}",
            "endpoint_id": work.endpoint_id,
            "webhook_id": webhook_id(work.delivery_id),
            "event_type": work.event_type,
            "attempt": work.attempt,
            "http_status": outcome.status,
            "duration_ms": duration_ms,
        }
        if error is not None:
            extra["error"] = error
        level = logging.INFO if isinstance(outcome, Delivered) else logging.WARNING
        log.log(level, "webhook %s", name, extra=extra)
        if isinstance(outcome, Delivered):
            await self._delivered(work, outcome.status, stats, now)
            return
        await self._settle(work, name, outcome.status, error, retry_at, stats, now)

    async def _delivered(
        self, work: Delivery, status: int, stats: WebhookStats, now: datetime | None
    ) -> None:
        """A success, written with the other slots' in one group write."""
        row = await self.recorder.record(DeliveredRow(work, status), now)
        if row is None:
            self._stale(work, stats)
            return
        metrics.child(metrics.WEBHOOK_ATTEMPTS, "delivered").inc()
        stats.count("delivered")

    async def _write_delivered(
        self, rows: Sequence[DeliveredRow], now: datetime | None
    ) -> list[dict[str, Any]]:
        params = {
            "now": now,
            "owner": self.owner,
            "ids": [r.work.id for r in rows],
            "attempts": [r.work.attempt for r in rows],
            "statuses": [r.status for r in rows],
        }

        async def body(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(q("webhook_deliveries_delivered"), params)
                return await cur.fetchall()

        return await self._tx(body)

    def _stale(self, work: Delivery, stats: WebhookStats) -> None:
        log.info(
            "webhook outcome not recorded: no longer ours",
            extra={"action": "webhook_stale", "endpoint_id": work.endpoint_id},
        )
        stats.count("stale")

    async def _settle(
        self,
        work: Delivery,
        outcome: str,
        status: int | None,
        error: str | None,
        retry_at: datetime | None,
        stats: WebhookStats,
        now: datetime | None,
    ) -> None:
        """Write one outcome; disable the endpoint (410, or failing for the whole window) in the
        same transaction."""
        params = {
            "now": now,
            "owner": self.owner,
            "id": work.id,
            "attempt": work.attempt,
            "outcome": "failed" if outcome == "gone" else outcome,
            "status": status,
            "error": error,
            "retry_at": retry_at,
            "answer_by": (
                None
                if retry_at is None
                else answer_by(retry_at, self.settings.webhook_timeout_seconds)
            ),
            "park_seconds": PARK_SECONDS,
        }

        async def body(conn: AsyncConnection[Any]) -> tuple[str, dict[str, Any] | None] | None:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(q("webhook_deliveries_settle"), params)
                row = await cur.fetchone()
            if row is None:
                return None  # the lease was lost (rescued, or the endpoint disabled meanwhile)
            since = row["failing_since"]
            if outcome == "gone":
                return "gone", await self._disable(conn, work, "answered 410 Gone", row["now"])
            if outcome in ("retry", "failed") and since is not None:
                if row["now"] - since >= self.window:
                    hours = f"{self.window.total_seconds() / 3600:g}"
                    reason = f"failing for {hours} h without a success (last: {error})"
                    off = await self._disable(conn, work, reason, row["now"])
                    if off is not None:
                        await alerts.raise_webhook_endpoint_disabled(
                            conn,
                            endpoint_id=off["id"],
                            api_key_id=off["api_key_id"],
                            url=off["url"],
                            reason=reason,
                            failing_since=off["failing_since"],
                            dropped=int(off["dropped"]),
                            settings=self.settings,
                            now=row["now"],
                        )
                    return "failing", off
            return "settled", None

        done = await self._tx(body)
        if done is None:
            self._stale(work, stats)
            return
        metrics.child(metrics.WEBHOOK_ATTEMPTS, outcome if outcome != "gone" else "failed").inc()
        stats.count(outcome)
        why, off = done
        if off is None:
            return  # healthy enough, or someone else disabled it first
        stats.disabled += 1
        metrics.child(metrics.WEBHOOK_ENDPOINTS_DISABLED, why).inc()
        if why == "gone":  # the failing case was logged with its alert
            log.warning(
                "webhook endpoint disabled: answered 410 Gone",
                extra={
                    "action": "webhook_endpoint_disabled",
                    "endpoint_id": off["id"],
                    "count": int(off["dropped"]),
                },
            )

    async def _disable(
        self, conn: AsyncConnection[Any], work: Delivery, reason: str, now: datetime
    ) -> dict[str, Any] | None:
        """Disable the endpoint of `work` and drop its pending deliveries; None when it was
        disabled already."""
        # The endpoint's position behind the fan-out (migration 0021) holds still meanwhile.
        await conn.execute(q("webhook_endpoints_lock_fanout"))
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                q("webhook_endpoints_disable"),
                {"now": now, "endpoint_id": work.endpoint_id, "reason": reason},
            )
            return await cur.fetchone()

    async def release_held(self, *, now: datetime | None = None) -> int:
        """Hand back every delivery still held (graceful stop); how many went back."""
        held = list(self.held.values())
        if not held:
            return 0
        params = {
            "now": now,
            "owner": self.owner,
            "ids": [w.id for w in held],
            "attempts": [w.attempt for w in held],
        }

        async def body(conn: AsyncConnection[Any]) -> int:
            cur = await conn.execute(q("webhook_deliveries_release"), params)
            return len(await cur.fetchall())

        released = await self._tx(body)
        self.held.clear()
        return released

    async def refresh_health(self) -> list[dict[str, Any]]:
        """Read sms_webhook_health and set the per-endpoint gauges; the rows read."""

        async def body(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(q("webhook_endpoints_health"))
                return await cur.fetchall()

        rows = await self._tx(body)
        metrics.set_webhook_health(rows)
        return rows

    async def _tx(self, body: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run `body` in one transaction, again if it lost a deadlock or serialization race
        (a settle and a disable of the same endpoint lock rows in opposite orders)."""
        for attempt in range(1, _TRIES + 1):
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    return await body(conn)
            except _TRANSIENT:
                if attempt == _TRIES:
                    raise
                log.warning("transaction retried", extra={"action": "tx_retry", "attempt": attempt})
        raise AssertionError("unreachable")


async def fan_out_step(conn: AsyncConnection[Any], batch: int = FANOUT_BATCH) -> FanOut:
    """One fan-out step on `conn` (the caller's transaction): the cursor locked when there is
    something to do (webhook_deliveries_mark), then up to `batch` committed events become deliveries
    for the endpoints that follow the shared fan-out and the cursor moves past them
    (webhook_deliveries_fan_out), then one endpoint behind it catches up by up to `batch` events
    (webhook_deliveries_catch_up, migration 0021). Separate statements, so the two that read the
    endpoints start after the lock was taken."""
    cur = await conn.execute(q("webhook_deliveries_mark"))
    mark = await cur.fetchone()
    if mark is None:
        return FanOut(steps=1, idle=True)
    behind: dict[str, Any] | None = {"events": 0, "deliveries": 0}
    async with conn.cursor(row_factory=dict_row) as dcur:
        await dcur.execute(q("webhook_deliveries_fan_out"), {"limit": batch})
        shared = await dcur.fetchone()
        if mark[1]:  # an endpoint is to catch up
            await dcur.execute(q("webhook_deliveries_catch_up"), {"limit": batch})
            behind = await dcur.fetchone()
    assert shared is not None and behind is not None  # each always answers one row
    return FanOut(
        steps=1,
        events=int(shared["events"]) + int(behind["events"]),
        deliveries=int(shared["deliveries"]) + int(behind["deliveries"]),
        more=int(shared["events"]) >= batch or int(behind["events"]) >= batch,
    )


def _name(outcome: Outcome) -> str:
    if isinstance(outcome, Delivered):
        return "delivered"
    if isinstance(outcome, Retry):
        return "retry"
    if isinstance(outcome, Gone):
        return "gone"
    return "failed"
