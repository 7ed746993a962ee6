"""The dispatcher's side of sms_outbox: claim, start, record, reschedule, finish, release.

Each method is one short transaction on a pooled connection (never open across a provider call);
every change to a claimed row is guarded by owner and attempt in SQL (sql/queries/outbox.sql).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from psycopg import AsyncConnection, errors
from psycopg.rows import class_row, dict_row
from psycopg_pool import AsyncConnectionPool

from shared import alerts
from shared.config import Settings
from shared.queries import q

log = logging.getLogger(__name__)
T = TypeVar("T")
# A transaction that lost a deadlock or serialization race is simply run again, a few times.
_TRANSIENT = (errors.DeadlockDetected, errors.SerializationFailure)
_TRIES = 3


@dataclass(frozen=True)
class Work:
    """One claimed outbox row, with its message's columns for send work."""

    id: int
    kind: str  # send_sms | deliver_alert
    attempt: int
    lease_expires_at: datetime
    claimed_at: datetime
    rescued: bool
    # Set when an earlier attempt may have reached the provider: reconcile before any resend.
    unresolved_since: datetime | None
    message_id: UUID | None = None
    alert_id: int | None = None
    provider: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    body: str | None = None
    delivery_status: str | None = None
    conversation_id: UUID | None = None
    request_id: str | None = None
    last_error_code: str | None = None
    last_error_category: str | None = None
    last_error: str | None = None
    segments: int | None = None
    # A sid a callback already brought for this message (it names our id): the copy exists.
    provider_sid: str | None = None
    # Lookups that did not find the unresolved attempt at the provider so far.
    reconcile_misses: int = 0
    priority: str | None = None  # high | normal | low (send work)
    expires_at: datetime | None = None  # not handed to a provider after this
    suppressed: bool = False  # the recipient opted out of this sender since it was queued
    walk_end: str | None = None  # the sender the claim's walk stopped at: where the next one starts
    # "Attempt N started" was committed by the claim itself (a fresh send nothing stops): it is
    # called without outbox_start_attempts. Never set on a row whose earlier attempt is in doubt.
    started: bool = False


@dataclass(frozen=True)
class Again:
    """An attempt that may run again: the arguments of Outbox.reschedule, for a group write."""

    work: Work
    delay_seconds: float
    unresolved: bool
    give_back: bool
    error_code: str | None
    error_category: str | None
    error_message: str | None


@dataclass(frozen=True)
class Sent:
    """A send the provider accepted, or a sid reconciliation adopted."""

    work: Work
    sid: str
    raw_status: str
    reconciled: bool = False


@dataclass(frozen=True)
class CopyOwners:
    """What the outbox says of copies a reconciliation lookup found (Outbox.copy_owners)."""

    taken: set[str]  # sids another message of ours holds
    in_flight_since: datetime | None  # the earliest sibling call in flight started then
    rivals: list[datetime]  # when each sibling attempt in flight or unresolved started


def claim_params(
    owner: str,
    limit: int,
    lease_seconds: float,
    *,
    now: datetime | None = None,
    after: str = "",
    providers: Collection[str] = (),
    quiet: bool = False,
) -> dict[str, Any]:
    """The parameters of outbox_claim_due (Outbox.claim; tests and the bench call it too)."""
    return {
        "now": now,
        "owner": owner,
        "limit": limit,
        "lease_seconds": lease_seconds,
        "after": after,
        "start": bool(providers),
        "providers": sorted(providers),
        "quiet": quiet,
    }


class Outbox:
    """Claimed-work bookkeeping for one dispatcher (`owner`)."""

    def __init__(self, pool: AsyncConnectionPool[Any], owner: str, settings: Settings) -> None:
        self.pool = pool
        self.owner = owner
        self.settings = settings
        # Where the next claim's walk over senders starts (round robin; outbox_claim_due).
        self.walk_from = ""

    async def _tx(
        self, body: Callable[[AsyncConnection[Any]], Awaitable[T]], *, one_statement: bool = False
    ) -> T:
        """Run `body` in one transaction, again if it lost a deadlock or serialization race.

        `one_statement`: `body` runs a single statement, which is its own transaction in
        autocommit, without the BEGIN and COMMIT round trips (the claim, the start and the
        recorder's writes run several times per batch: about 0.5 ms each, measured).
        """
        for attempt in range(1, _TRIES + 1):
            try:
                if one_statement:
                    return await self._autocommit(body)
                async with self.pool.connection() as conn, conn.transaction():
                    return await body(conn)
            except _TRANSIENT:
                if attempt == _TRIES:
                    raise
                log.warning("transaction retried", extra={"action": "tx_retry", "attempt": attempt})
        raise AssertionError("unreachable")

    async def _autocommit(self, body: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        async with self.pool.connection() as conn:
            await conn.set_autocommit(True)
            try:
                return await body(conn)
            finally:
                try:
                    await conn.set_autocommit(False)
                except Exception:
                    # Never hand the pool a connection left in autocommit: the next user would
                    # lose its transaction. A connection that cannot switch back is closed (the
                    # pool replaces it).
                    await conn.close()

    async def _rows(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """One statement's rows (its own transaction)."""

        async def body(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(q(name), params)
                return await cur.fetchall()

        return await self._tx(body, one_statement=True)

    async def claim(
        self,
        limit: int,
        *,
        now: datetime | None = None,
        providers: Collection[str] = (),
        quiet: bool = False,
    ) -> list[Work]:
        """Lease up to `limit` due rows (committed at once).

        With `providers` (those this dispatcher can call), fresh sends of theirs that nothing
        would stop are started in the same statement (Work.started): one commit instead of two
        before their call. `quiet`: quiet hours are set, so only high priority starts there.
        """
        if limit <= 0:
            return []
        params = claim_params(
            self.owner,
            limit,
            self.settings.dispatch_lease_seconds,
            now=now,
            after=self.walk_from,
            providers=providers,
            quiet=quiet,
        )

        async def body(conn: AsyncConnection[Any]) -> list[Work]:
            async with conn.cursor(row_factory=class_row(Work)) as cur:
                await cur.execute(q("outbox_claim_due"), params)
                return await cur.fetchall()

        works = await self._tx(body, one_statement=True)
        if works and works[0].walk_end is not None:
            self.walk_from = works[0].walk_end
        return works

    async def start(self, works: Sequence[Work], *, now: datetime | None = None) -> set[int]:
        """Commit "attempt N started" for `works`; the ids that are still ours and may be sent."""
        if not works:
            return set()
        rows = await self._rows(
            "outbox_start_attempts",
            {
                "now": now,
                "owner": self.owner,
                "ids": [w.id for w in works],
                "attempts": [w.attempt for w in works],
                "claimed": [w.claimed_at for w in works],
            },
        )
        return {r["id"] for r in rows}

    async def record_sent(
        self, sent: Sequence[Sent], *, now: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Record accepted sends in one transaction; the rows that were still ours."""
        if not sent:
            return []
        return await self._rows(
            "outbox_record_sent",
            {
                "now": now,
                "owner": self.owner,
                "ids": [s.work.id for s in sent],
                "attempts": [s.work.attempt for s in sent],
                "sids": [s.sid for s in sent],
                "raw_statuses": [s.raw_status for s in sent],
                "reconciled": [s.reconciled for s in sent],
            },
        )

    async def reschedule(
        self,
        work: Work,
        *,
        delay_seconds: float,
        unresolved: bool,
        give_back: bool = False,
        error_code: str | None,
        error_category: str | None,
        error_message: str | None,
        now: datetime | None = None,
    ) -> bool:
        """Put `work` back to ready after `delay_seconds`; False when it was no longer ours."""
        again = Again(
            work, delay_seconds, unresolved, give_back, error_code, error_category, error_message
        )
        return bool(await self.reschedule_many([again], now=now))

    async def reschedule_many(
        self, again: Sequence[Again], *, now: datetime | None = None
    ) -> list[dict[str, Any]]:
        """`reschedule` for many rows in one statement (outbox_reschedule_many); the rows that
        were still ours."""
        if not again:
            return []
        return await self._rows(
            "outbox_reschedule_many",
            {
                "now": now,
                "owner": self.owner,
                "ids": [a.work.id for a in again],
                "attempts": [a.work.attempt for a in again],
                "delays": [a.delay_seconds for a in again],  # never below 0: the statement says so
                "give_backs": [1 if a.give_back else 0 for a in again],
                "unresolved": [a.unresolved for a in again],
                "error_codes": [a.error_code for a in again],
                "error_categories": [a.error_category for a in again],
                "error_messages": [a.error_message for a in again],
            },
        )

    async def fail(
        self,
        work: Work,
        *,
        error_code: str | None,
        error_category: str,
        error_message: str | None,
        now: datetime | None = None,
        status: str = "failed",
        opted_out: bool = False,
    ) -> bool:
        """Final failure of send work: row deleted, message `status` (failed or expired), alert
        raised: one tx. An expired send was never called: its segments go back to its sender's
        pace (the claim spent them). `opted_out`: the provider refused because the recipient
        opted out of the sender: the recipient is suppressed for it in the same transaction."""

        async def body(conn: AsyncConnection[Any]) -> bool:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    q("outbox_finish"),
                    {
                        "now": now,
                        "owner": self.owner,
                        "id": work.id,
                        "attempt": work.attempt,
                        "error_code": error_code,
                        "error_category": error_category,
                        "error_message": error_message,
                    },
                )
                if await cur.fetchone() is None:
                    return False
            assert work.message_id is not None
            await alerts.raise_final_failure(
                conn,
                work.message_id,
                error_code=error_code,
                error_category=error_category,
                error_message=error_message,
                settings=self.settings,
                now=now,
                status=status,
            )
            if opted_out:
                await conn.execute(
                    q("suppressions_add_provider_opt_out"), {"message_id": work.message_id}
                )
            if status == "expired":
                await conn.execute(
                    q("senders_refund"),
                    {"phone_number": work.from_number, "segments": work.segments or 1},
                )
            return True

        return await self._tx(body)

    async def hold(self, work: Work, *, until: datetime, now: datetime | None = None) -> bool:
        """Quiet hours: `work` goes back unsent until `until`, its attempt and its segments of the
        sender's pace returned, with a `held` event; False when it was no longer ours."""
        rows = await self._rows(
            "outbox_hold",
            {
                "now": now,
                "owner": self.owner,
                "id": work.id,
                "attempt": work.attempt,
                "until": until,
                "reason": "quiet_hours",
            },
        )
        return bool(rows)

    async def suppress(self, work: Work, *, now: datetime | None = None) -> bool:
        """The recipient opted out since `work` was queued: canceled unsent (category
        `suppressed`), its segments back to the sender's pace; False when no longer ours."""
        rows = await self._rows(
            "outbox_suppress",
            {"now": now, "owner": self.owner, "id": work.id, "attempt": work.attempt},
        )
        return bool(rows)

    async def pace_wait(self, *, now: datetime | None = None) -> float | None:
        """Seconds until the first sender with due work may send again (None: no paced backlog)."""
        rows = await self._rows("senders_next_allowance", {"now": now})
        wait = rows[0]["seconds"] if rows else None
        return None if wait is None else max(float(wait), 0.0)

    async def finish_alert(
        self, work: Work, *, delivery_state: str, now: datetime | None = None
    ) -> bool:
        """Alert delivery ended (delivered, failed, not_configured): row deleted, alert marked."""

        async def body(conn: AsyncConnection[Any]) -> bool:
            params = {"now": now, "owner": self.owner, "id": work.id, "attempt": work.attempt}
            params |= {"error_code": None, "error_category": None, "error_message": None}
            cur = await conn.execute(q("outbox_finish"), params)
            if await cur.fetchone() is None:
                return False
            await conn.execute(
                q("alerts_mark_delivery"),
                {"now": now, "alert_id": work.alert_id, "state": delivery_state},
            )
            return True

        return await self._tx(body)

    async def alert_body(self, work: Work) -> dict[str, Any] | None:
        """The alert a deliver_alert row carries: id, kind, delivery_state and the JSON body."""
        rows = await self._rows("alerts_for_delivery", {"alert_id": work.alert_id})
        return rows[0] if rows else None

    async def drop(self, works: Sequence[Work]) -> int:
        """Remove claimed send work whose message is no longer pending; how many rows went."""
        if not works:
            return 0
        rows = await self._rows(
            "outbox_drop",
            {
                "owner": self.owner,
                "ids": [w.id for w in works],
                "attempts": [w.attempt for w in works],
            },
        )
        return len(rows)

    async def release(
        self,
        held: Sequence[tuple[Work, bool]],
        *,
        settle_seconds: float,
        now: datetime | None = None,
    ) -> int:
        """Hand claimed rows back on shutdown; (work, attempt_started) pairs. How many went back."""
        if not held:
            return 0
        rows = await self._rows(
            "outbox_release",
            {
                "now": now,
                "owner": self.owner,
                "ids": [w.id for w, _ in held],
                "attempts": [w.attempt for w, _ in held],
                "started": [started for _, started in held],
                "settle_seconds": settle_seconds,
            },
        )
        return len(rows)

    async def copy_owners(self, work: Work, sids: Sequence[str], *, same_body: bool) -> CopyOwners:
        """Whose the copies `sids` found for `work` may be, all read in one snapshot: which sids
        another message of ours holds, and for the other messages of ours from `work`'s sender to
        its recipient (with its body too when `same_body`), when the earliest call in flight right
        now started and when each attempt still in flight or unresolved started (the rivals)."""
        rows = await self._rows(
            "outbox_copy_owners",
            {
                "provider": work.provider,
                "sids": list(sids),
                "from_number": work.from_number,
                "to_number": work.to_number,
                "message_id": work.message_id,
                "lease_seconds": self.settings.dispatch_lease_seconds,
                "same_body": same_body,
                "body": work.body,
            },
        )
        (row,) = rows  # an aggregate: always one row
        return CopyOwners(set(row["taken"]), row["since"], list(row["rivals"]))

    async def await_copy(
        self, work: Work, *, delay_seconds: float, missed: bool, now: datetime | None = None
    ) -> bool:
        """Look for `work`'s unresolved attempt again after `delay_seconds`, attempt given back;
        `missed` counts a lookup that found nothing. False when the row was no longer ours."""
        rows = await self._rows(
            "outbox_await_copy",
            {
                "now": now,
                "owner": self.owner,
                "id": work.id,
                "attempt": work.attempt,
                "delay_seconds": max(delay_seconds, 0.0),
                "missed": missed,
            },
        )
        return bool(rows)

    async def pause_provider(
        self,
        provider: str,
        *,
        error_code: str | None,
        reason: str,
        now: datetime | None = None,
    ) -> bool:
        """Pause `provider` after a config error; alert the operator when a new episode opens.

        Returns whether this call opened the episode (and so raised the one alert).
        """

        async def body(conn: AsyncConnection[Any]) -> bool:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    q("provider_pauses_open"),
                    {
                        "now": now,
                        "provider": provider,
                        "error_code": error_code,
                        "reason": reason,
                        "base_seconds": self.settings.provider_pause_seconds,
                        "cap_seconds": self.settings.provider_pause_cap_seconds,
                    },
                )
                row = await cur.fetchone()
            assert row is not None
            if row["opened"]:
                await alerts.raise_provider_config_alert(
                    conn,
                    provider,
                    error_code=error_code,
                    error_message=reason,
                    paused_until=row["paused_until"],
                    settings=self.settings,
                    now=now,
                )
            return bool(row["opened"])

        return await self._tx(body)
