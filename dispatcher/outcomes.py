"""The one place a send outcome is written: its guarded SQL, its metric and its log line.

`dispatcher.decision` decides; this module carries each decision out through `Outbox` (one short
transaction, guarded by owner and attempt), counts it in the run's stats and in Prometheus, and
logs it once. A row that is no longer ours when its outcome comes is logged as a stale result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from dispatcher.decision import (
    Drop,
    Error,
    Expire,
    Fail,
    GiveBack,
    Hold,
    Outcome,
    Pause,
    Reconcile,
    Resend,
    Retry,
    Sent,
    Suppress,
)
from dispatcher.outbox import Again, Outbox, Work
from dispatcher.outbox import Sent as SentRow
from dispatcher.recorder import Recorder
from shared import metrics
from shared.logs import mask_number
from shared.providers.base import Category

log = logging.getLogger(__name__)
# Accepted sends are recorded in groups: a lone one waits this long for company (group commit).
RECORD_WAIT_SECONDS = 0.002


@dataclass
class RunStats:
    """What one iteration (or one batch) did, by outcome."""

    claimed: int = 0
    sent: int = 0
    reconciled: int = 0
    awaiting: int = 0  # unresolved attempts handed back to be looked up later (settle, miss)
    rescheduled: int = 0
    failed: int = 0
    expired: int = 0
    held: int = 0  # quiet hours
    suppressed: int = 0  # the recipient opted out after enqueue: canceled unsent
    config: int = 0
    dropped: int = 0
    lost: int = 0  # rows that were no longer ours when we came to record them
    alerts_delivered: int = 0
    alerts_rescheduled: int = 0
    alerts_failed: int = 0

    def add(self, other: RunStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def describe(work: Work) -> dict[str, Any]:
    """The log keys of one claimed send (the recipient masked)."""
    return {
        "message_id": str(work.message_id),
        "provider": work.provider,
        "attempt": work.attempt,
        "to": mask_number(work.to_number),
        "request_id": work.request_id,
    }


class Outcomes:
    """Writes outcomes for one dispatcher; accepted sends go through the group-commit recorder."""

    def __init__(self, outbox: Outbox, *, group_rows: int) -> None:
        self.outbox = outbox
        # The recorder's one write is the outbox's own: accepted sends of many slots, one statement.
        self.recorder: Recorder[SentRow] = Recorder(
            lambda sent, now: outbox.record_sent(sent, now=now),
            key=lambda sent: sent.work.id,
            max_rows=group_rows,
            max_wait=RECORD_WAIT_SECONDS,
        )
        # Attempts to run again (retryable, ambiguous, reconcile later) the same way: a burst of
        # provider errors is written in a few statements, not one transaction per slot.
        self.retries: Recorder[Again] = Recorder(
            lambda again, now: outbox.reschedule_many(again, now=now),
            key=lambda again: again.work.id,
            max_rows=group_rows,
            max_wait=RECORD_WAIT_SECONDS,
        )

    async def write(
        self, work: Work, outcome: Outcome, stats: RunStats, *, now: datetime | None
    ) -> None:
        """Carry out `outcome` for `work` (all but Sent-by-the-recorder and Resend)."""
        if isinstance(outcome, Sent):
            rows = await self.outbox.record_sent(
                [SentRow(work, outcome.sid, outcome.raw_status, outcome.reconciled)], now=now
            )
            self.sent(work, outcome, rows[0] if rows else None, stats)
        elif isinstance(outcome, Retry | Reconcile):
            unresolved = outcome.unresolved if isinstance(outcome, Retry) else True
            await self._reschedule(
                work, outcome.delay_seconds, outcome.error, unresolved, stats, now
            )
        elif isinstance(outcome, Fail):
            await self._fail(work, outcome.error, stats, now)
        elif isinstance(outcome, Pause):
            await self._pause(work, outcome, stats, now)
        elif isinstance(outcome, GiveBack):
            await self._give_back(work, outcome, stats, now)
        elif isinstance(outcome, Expire):
            await self._expire(work, outcome, stats, now)
        elif isinstance(outcome, Hold):
            await self._hold(work, outcome, stats, now)
        elif isinstance(outcome, Suppress):
            await self._suppress(work, stats, now)
        elif isinstance(outcome, Drop):
            stats.dropped += await self.outbox.drop([work])
            log.info(
                "work dropped: message is no longer pending",
                extra={
                    "action": "dropped",
                    "message_id": str(work.message_id),
                    "status": outcome.status,
                },
            )
        elif isinstance(outcome, Resend):  # pragma: no cover - the caller sends instead
            raise ValueError("a Resend is carried out by sending")

    async def record(
        self, work: Work, outcome: Sent, stats: RunStats, now: datetime | None
    ) -> bool:
        """An accepted send, recorded with the other slots' in one group write."""
        row = await self.recorder.record(
            SentRow(work, outcome.sid, outcome.raw_status, outcome.reconciled), now
        )
        self.sent(work, outcome, row, stats)
        return row is not None

    def sent(self, work: Work, outcome: Sent, row: dict[str, Any] | None, stats: RunStats) -> None:
        if row is None:
            self.stale(work, stats, "accepted send")
            return
        assert work.provider is not None
        metrics.child(metrics.SENT, work.provider).inc()
        if outcome.reconciled:
            metrics.child(metrics.RECONCILIATIONS, work.provider, "adopted").inc()
            stats.reconciled += 1
        else:
            stats.sent += 1
        what = (
            "earlier attempt found at the provider, sid adopted"
            if outcome.reconciled
            else "submitted"
        )
        log.info(
            f"{what}: pending -> queued" if row["moved"] else what,
            extra={
                **describe(work),
                "action": "reconciled" if outcome.reconciled else "submitted",
                "sid": outcome.sid,
                "conversation_id": str(work.conversation_id),
            },
        )

    async def _reschedule(
        self,
        work: Work,
        delay: float,
        error: Error,
        unresolved: bool,
        stats: RunStats,
        now: datetime | None,
    ) -> None:
        again = Again(work, delay, unresolved, False, error.code, error.category, error.reason)
        ok = await self.retries.record(again, now) is not None
        if not ok:
            self.stale(work, stats, f"{error.category} failure")
            return
        assert work.provider is not None
        metrics.child(metrics.RETRIES, work.provider, error.category).inc()
        stats.rescheduled += 1
        log.info(
            "attempt rescheduled",
            extra={
                **describe(work),
                "action": "rescheduled",
                "error_category": error.category,
                "error_code": error.code,
                "delay_seconds": round(delay, 3),
                "will_reconcile": unresolved,
            },
        )

    async def _fail(self, work: Work, error: Error, stats: RunStats, now: datetime | None) -> None:
        # The ERROR line and the alert come from shared.alerts, in the same transaction.
        ok = await self.outbox.fail(
            work,
            error_code=error.code,
            error_category=error.category,
            error_message=error.reason,
            now=now,
            opted_out=error.opted_out,
        )
        if not ok:
            self.stale(work, stats, "final failure")
            return
        assert work.provider is not None
        metrics.child(metrics.FAILED, work.provider, error.category).inc()
        stats.failed += 1

    async def _expire(
        self, work: Work, expire: Expire, stats: RunStats, now: datetime | None
    ) -> None:
        ok = await self.outbox.fail(
            work,
            error_code="expired",
            error_category=Category.PERMANENT.value,
            error_message="not handed to a provider before expires_at "
            + expire.expires_at.isoformat(),
            now=now,
            status="expired",
        )
        if not ok:
            self.stale(work, stats, "expiry")
            return
        assert work.provider is not None
        metrics.child(metrics.FAILED, work.provider, "expired").inc()
        stats.expired += 1

    async def _suppress(self, work: Work, stats: RunStats, now: datetime | None) -> None:
        if not await self.outbox.suppress(work, now=now):
            self.stale(work, stats, "suppression")
            return
        stats.suppressed += 1
        log.info(
            "recipient opted out: canceled unsent",
            extra={**describe(work), "action": "suppressed"},
        )

    async def _hold(self, work: Work, hold: Hold, stats: RunStats, now: datetime | None) -> None:
        if not await self.outbox.hold(work, until=hold.until, now=now):
            self.stale(work, stats, "quiet hours hold")
            return
        stats.held += 1
        log.info(
            "held for quiet hours",
            extra={**describe(work), "action": "held", "release_at": hold.until.isoformat()},
        )

    async def _pause(self, work: Work, pause: Pause, stats: RunStats, now: datetime | None) -> None:
        """Config error: pause the provider (one alert per episode), give the attempt back."""
        assert work.provider is not None
        error = pause.error
        await self.outbox.pause_provider(
            work.provider, error_code=error.code, reason=error.reason, now=now
        )
        ok = await self.outbox.reschedule(
            work,
            delay_seconds=0,
            unresolved=pause.unresolved,
            give_back=True,
            error_code=error.code,
            error_category=Category.CONFIG.value,
            error_message=error.reason,
            now=now,
        )
        if not ok:
            self.stale(work, stats, "config failure")
            return
        metrics.child(metrics.RETRIES, work.provider, Category.CONFIG.value).inc()
        stats.config += 1

    async def _give_back(
        self, work: Work, give: GiveBack, stats: RunStats, now: datetime | None
    ) -> None:
        if give.reason != "no_time":
            ok = await self.outbox.await_copy(
                work, delay_seconds=give.delay_seconds, missed=give.missed, now=now
            )
        else:
            # "Attempt started" was committed for this claim, but no call was made.
            ok = await self.outbox.reschedule(
                work,
                delay_seconds=give.delay_seconds,
                unresolved=True,
                give_back=True,
                error_code=None,
                error_category=None,
                error_message=None,
                now=now,
            )
        if not ok:
            self.stale(work, stats, "attempt given back")
            return
        stats.awaiting += 1
        if give.reason == "contested":
            log.info(
                "copies found may be another message's call in flight; looking again after it",
                extra={**describe(work), "action": "reconcile_contested"},
            )
        if give.missed:
            assert work.provider is not None
            metrics.child(metrics.RECONCILIATIONS, work.provider, "miss").inc()
            log.info(
                "earlier attempt not found at the provider; looking again before any resend",
                extra={**describe(work), "action": "reconcile_miss"},
            )

    def stale(self, work: Work, stats: RunStats, what: str) -> None:
        """A result for a row that is no longer ours (lease lost): recorded nowhere, logged."""
        stats.lost += 1
        log.warning(
            "result not recorded: the lease is no longer ours",
            extra={**describe(work), "action": "stale_result", "result": what},
        )
