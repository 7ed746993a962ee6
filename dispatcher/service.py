"""The dispatcher: claim due work, send it, record each outcome; `run_once` is one iteration.

Per claimed send (DESIGN section 5): an unresolved earlier attempt is reconciled first; "attempt N
started" is committed for the batch; the provider is called outside any transaction under a hard
timeout that also ends before the lease does; each outcome is recorded in one guarded transaction
(accepted sends of a batch together, as they complete).

Residual risk, stated plainly: a process frozen (SIGSTOP, VM pause) while a request is half
written can finish writing it after its lease expired and after a rescuer's reconciliation found
nothing, which sends that message twice. The lease-deadline check before each call and the call
timeout confine this to requests already on the wire at the freeze; neither provider offers an
idempotency key for message creation, so it cannot be closed from our side.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool

from dispatcher import alert_webhook
from dispatcher.outbox import Outbox, Sent, Work
from dispatcher.recorder import Recorder
from shared import metrics
from shared.config import Settings
from shared.logs import mask_number
from shared.providers.base import Category, CopyLookup, Provider, ProviderError, SendRequest
from shared.retry import RetryPolicy, backoff_seconds, next_attempt_at

log = logging.getLogger(__name__)
# Reconciliation looks this far before the attempt started: the provider's clock may lag ours.
RECONCILE_SKEW = timedelta(seconds=5)
# A row whose call may still be in flight at shutdown is not due again before this: a request that
# already left lands at the provider first, so the next claimer's reconciliation sees it.
SETTLE_SECONDS = 5.0
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
    config: int = 0
    dropped: int = 0
    lost: int = 0  # rows that were no longer ours when we came to record them
    alerts_delivered: int = 0
    alerts_rescheduled: int = 0
    alerts_failed: int = 0

    def add(self, other: RunStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class _Held:
    work: Work
    deadline: float  # event-loop time by which the call must be over (lease minus a margin)
    started: bool = False
    # The provider call is over and its acceptance waits for the recorder: no slot is used.
    called: bool = False


@dataclass
class _Batch:
    now: datetime | None
    stats: RunStats = field(default_factory=RunStats)


class Dispatcher:
    """Claims and processes outbox work for one owner (`host:pid:uuid`)."""

    def __init__(
        self,
        *,
        settings: Settings,
        pool: AsyncConnectionPool[Any],
        providers: Mapping[str, Provider],
        owner: str,
        http: httpx.AsyncClient | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.owner = owner
        self.outbox = Outbox(pool, owner, settings)
        self.policy = RetryPolicy.from_settings(settings)
        self.http = http
        self.rand = rand
        self.stopping = asyncio.Event()
        self.held: dict[int, _Held] = {}
        self.recording = 0  # held rows whose call is over, waiting for their group's write
        self.capacity = asyncio.Event()  # set whenever a held row settles
        # A call must end this long before the lease does: no one may rescue a row still in flight.
        self.lease_margin = max(settings.dispatch_lease_seconds * 0.2, 0.2)
        self.recorder = Recorder(
            self._write_sent,
            max_rows=max(settings.dispatch_batch_size, settings.dispatch_concurrency),
            max_wait=RECORD_WAIT_SECONDS,
        )

    def free_slots(self) -> int:
        """How many more rows this dispatcher may take on: DISPATCH_CONCURRENCY bounds the rows
        being claimed, started or sent; an accepted send waiting to be recorded uses no slot."""
        busy = max(len(self.held) - self.recording, 0)
        return max(self.settings.dispatch_concurrency - busy, 0)

    async def run_once(self, now: datetime | None = None) -> RunStats:
        """Claim one batch, process it fully, return what happened; `now` injects the clock."""
        works = await self.claim(now=now)
        return await self.process(works, now=now)

    def claim_limit(self) -> int:
        """The next claim's size: one batch, within the free capacity."""
        return min(self.settings.dispatch_batch_size, self.free_slots())

    async def claim(self, *, now: datetime | None = None) -> list[Work]:
        """Lease up to `claim_limit()` due rows; they are held from here."""
        limit = self.claim_limit()
        works = await self.outbox.claim(limit, now=now)
        deadline = asyncio.get_running_loop().time() + self.settings.dispatch_lease_seconds
        for w in works:
            self.held[w.id] = _Held(w, deadline - self.lease_margin)
        if works:
            log.debug("claimed", extra={"action": "claim", "count": len(works)})
        return works

    async def process(self, works: Sequence[Work], *, now: datetime | None = None) -> RunStats:
        """Process claimed rows to their outcomes (rows left held are released at stop)."""
        batch = _Batch(now, RunStats(claimed=len(works)))
        sends = [w for w in works if w.kind == "send_sms"]
        jobs = [self._deliver_alert(w, batch) for w in works if w.kind == "deliver_alert"]
        await asyncio.gather(self._send_batch(sends, batch), *jobs)
        return batch.stats

    def _settle(self, work: Work) -> None:
        self.held.pop(work.id, None)
        self.capacity.set()

    def forget(self, works: Sequence[Work]) -> None:
        """Stop holding rows a failed batch left: their leases expire and anyone rescues them."""
        for w in works:
            self._settle(w)

    # -- sends -------------------------------------------------------------------------------

    async def _send_batch(self, works: Sequence[Work], batch: _Batch) -> None:
        stale = [w for w in works if w.delivery_status != "pending"]
        if stale:
            batch.stats.dropped += await self.outbox.drop(stale)
            for w in stale:
                log.info(
                    "work dropped: message is no longer pending",
                    extra={
                        "action": "dropped",
                        "message_id": str(w.message_id),
                        "status": w.delivery_status,
                    },
                )
                self._settle(w)
        live = [w for w in works if w.delivery_status == "pending"]
        unknown = [w for w in live if w.provider not in self.providers]
        for w in unknown:
            err = ProviderError(Category.CONFIG, f"provider {w.provider} is not configured")
            await self._config(w, err, batch, unresolved=w.unresolved_since is not None)
        live = [w for w in live if w.provider in self.providers]
        if self.stopping.is_set():
            return  # not started: released by stop()
        checks = await asyncio.gather(*(self._reconcile(w, batch) for w in live))
        to_send: list[Work] = []
        for w, send in zip(live, checks, strict=True):
            if not send:
                continue
            if w.attempt > self.policy.max_attempts:
                # An ambiguous last attempt, now known not to have reached the provider.
                await self._final(
                    w,
                    code=w.last_error_code,
                    category=w.last_error_category or Category.AMBIGUOUS.value,
                    reason=w.last_error or "no attempts left",
                    batch=batch,
                )
                continue
            to_send.append(w)
        if self.stopping.is_set() or not to_send:
            return
        started = await self.outbox.start(to_send, now=batch.now)
        tasks: list[asyncio.Task[None]] = []
        for w in to_send:
            if w.id not in started:
                self._stale(w, batch, "attempt start")
                self._settle(w)
                continue
            self.held[w.id].started = True
            tasks.append(asyncio.create_task(self._attempt_and_record(w, batch)))
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # Cancelled at shutdown or the database failed: no send task may outlive its batch.
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _attempt_and_record(self, work: Work, batch: _Batch) -> None:
        """One send slot: call the provider, and record an accepted send with other slots'."""
        sent = await self._attempt(work, batch)
        if sent is None:
            return
        held = self.held.get(work.id)
        if held is not None:
            held.called = True
            self.recording += 1
            self.capacity.set()
        try:
            row = await self.recorder.record(sent, batch.now)
        finally:
            if held is not None and held.called:
                held.called = False
                self.recording -= 1
        self._recorded(sent, row, batch)

    async def _reconcile(self, work: Work, batch: _Batch) -> bool:
        """Resolve an earlier attempt that may have reached the provider; whether to send now.

        Nothing is sent again while the provider may still hold the message: the lookup waits
        until the attempt's call and a settle window are over (a request that left late lands
        first), and RECONCILE_LOOKUPS lookups, a settle window apart, must all miss.
        """
        if work.provider_sid is not None:
            # A callback naming our message id brought its sid: the strongest proof there is.
            await self._record_sent([Sent(work, work.provider_sid, "callback", True)], batch)
            return False
        if work.unresolved_since is None:
            return True
        assert work.provider and work.from_number and work.to_number and work.body
        settle = self.settings.reconcile_settle_seconds
        window_end = work.unresolved_since + timedelta(
            seconds=self.settings.provider_timeout_seconds + settle
        )
        wait = (window_end - work.claimed_at).total_seconds()
        if wait > 0:
            await self._await_copy(work, batch, delay=wait, missed=False)
            return False
        lookup = CopyLookup(
            from_number=work.from_number,
            to_number=work.to_number,
            body=work.body,
            segments=work.segments,
            since=work.unresolved_since - RECONCILE_SKEW,
            until=window_end,
        )
        provider = self.providers[work.provider]
        try:
            copies = await provider.find_copies(lookup)
        except ProviderError as e:
            metrics.child(metrics.RECONCILIATIONS, work.provider, "error").inc()
            await self._failure(work, e, batch, unresolved=True)
            return False
        except Exception as e:
            metrics.child(metrics.RECONCILIATIONS, work.provider, "error").inc()
            log.exception("reconciliation lookup failed", extra=self._extra(work))
            err = ProviderError(Category.AMBIGUOUS, f"lookup failed: {type(e).__name__}")
            await self._failure(work, err, batch, unresolved=True)
            return False
        taken = await self.outbox.sids_taken(work, [c.sid for c in copies])
        free = [c for c in copies if c.sid not in taken]
        if free:
            if len(free) > 1:
                log.warning(
                    "several provider messages match one unresolved attempt; the oldest is adopted",
                    extra={**self._extra(work), "action": "reconcile_several", "count": len(free)},
                )
            # Logged once recorded (action "reconciled").
            await self._record_sent([Sent(work, free[0].sid, free[0].raw_status, True)], batch)
            return False
        if work.reconcile_misses + 1 < self.settings.reconcile_lookups:
            metrics.child(metrics.RECONCILIATIONS, work.provider, "miss").inc()
            log.info(
                "earlier attempt not found at the provider; looking again before any resend",
                extra={**self._extra(work), "action": "reconcile_miss"},
            )
            await self._await_copy(work, batch, delay=settle, missed=True)
            return False
        metrics.child(metrics.RECONCILIATIONS, work.provider, "resend").inc()
        log.info(
            "earlier attempt not found at the provider; sending",
            extra={**self._extra(work), "action": "reconcile_resend"},
        )
        return True

    async def _await_copy(self, work: Work, batch: _Batch, *, delay: float, missed: bool) -> None:
        """Hand an unresolved row back to be looked up after `delay` (no attempt spent)."""
        ok = await self.outbox.await_copy(work, delay_seconds=delay, missed=missed, now=batch.now)
        self._settle(work)
        if ok:
            batch.stats.awaiting += 1
        else:
            self._stale(work, batch, "lookup wait")

    async def _attempt(self, work: Work, batch: _Batch) -> Sent | None:
        """Call the provider once; an accepted send is returned, any other outcome recorded here."""
        assert work.provider and work.message_id and work.from_number and work.to_number
        assert work.body is not None
        provider = self.providers[work.provider]
        held = self.held.get(work.id)
        remaining = (held.deadline if held else 0.0) - asyncio.get_running_loop().time()
        timeout = min(self.settings.provider_timeout_seconds, remaining)
        if timeout <= 0:
            # Too close to the lease end to call safely; nothing left, so the attempt goes back.
            await self.outbox.reschedule(
                work,
                delay_seconds=0,
                unresolved=True,
                give_back=True,
                error_code=None,
                error_category=None,
                error_message=None,
                now=batch.now,
            )
            self._settle(work)
            return None
        request = SendRequest(
            message_id=work.message_id,
            from_number=work.from_number,
            to_number=work.to_number,
            body=work.body,
            # Empty: each provider builds its own callback URL carrying our message id.
            status_callback_url="",
        )
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                result = await provider.send(request)
        except ProviderError as e:
            err = e
        except TimeoutError:
            err = ProviderError(
                Category.AMBIGUOUS, f"no answer within {timeout:.1f} s", code="timeout"
            )
        except Exception as e:
            log.exception("provider call raised", extra=self._extra(work))
            err = ProviderError(Category.AMBIGUOUS, f"provider call raised {type(e).__name__}")
        else:
            metrics.child(metrics.SEND_LATENCY, work.provider, "sent").observe(
                time.monotonic() - t0
            )
            return Sent(work, result.sid, result.raw_status)
        metrics.child(metrics.SEND_LATENCY, work.provider, err.category.value).observe(
            time.monotonic() - t0
        )
        if err.category is Category.AMBIGUOUS:
            metrics.child(metrics.AMBIGUOUS, work.provider).inc()
        log.warning(
            "attempt failed",
            extra={
                **self._extra(work),
                "action": "attempt_failed",
                "error_category": err.category.value,
                "error_code": err.code,
                "error": err.reason,
                "duration_ms": round((time.monotonic() - t0) * 1000, 1),
            },
        )
        await self._failure(work, err, batch, unresolved=err.category is Category.AMBIGUOUS)
        return None

    async def _write_sent(self, sent: Sequence[Sent], now: datetime | None) -> list[dict[str, Any]]:
        return await self.outbox.record_sent(sent, now=now)

    async def _record_sent(self, sent: Sequence[Sent], batch: _Batch) -> None:
        """Record accepted sends now, in one transaction (reconciliation's adopted sids)."""
        if not sent:
            return
        rows = await self.outbox.record_sent(sent, now=batch.now)
        ours = {r["id"]: r for r in rows}
        for s in sent:
            self._recorded(s, ours.get(s.work.id), batch)

    def _recorded(self, s: Sent, row: dict[str, Any] | None, batch: _Batch) -> None:
        self._settle(s.work)
        if row is None:
            self._stale(s.work, batch, "accepted send")
            return
        metrics.child(metrics.SENT, s.work.provider).inc()
        if s.reconciled:
            metrics.child(metrics.RECONCILIATIONS, s.work.provider, "adopted").inc()
            batch.stats.reconciled += 1
        else:
            batch.stats.sent += 1
        what = "earlier attempt found at the provider, sid adopted" if s.reconciled else "submitted"
        log.info(
            f"{what}: pending -> queued" if row["moved"] else what,
            extra={
                **self._extra(s.work),
                "action": "reconciled" if s.reconciled else "submitted",
                "sid": s.sid,
                "conversation_id": str(s.work.conversation_id),
            },
        )

    async def _failure(
        self, work: Work, err: ProviderError, batch: _Batch, *, unresolved: bool
    ) -> None:
        """Decide and record what a failed attempt (or lookup) leads to."""
        category = err.category
        if category is Category.PERMANENT:
            await self._final(
                work, code=err.code, category=category.value, reason=err.reason, batch=batch
            )
            return
        if category is Category.CONFIG:
            await self._config(work, err, batch, unresolved=unresolved)
            return
        rand = self.rand()
        nxt = next_attempt_at(
            work.claimed_at, work.attempt, self.policy, retry_after=err.retry_after, rand=rand
        )
        if nxt is not None:
            delay = (nxt - work.claimed_at).total_seconds()
        elif unresolved and work.attempt <= self.policy.max_attempts:
            # No attempt left, but the last may have been sent: look it up once more before failing.
            delay = backoff_seconds(work.attempt, self.policy, rand=rand)
        else:
            await self._final(
                work, code=err.code, category=category.value, reason=err.reason, batch=batch
            )
            return
        ok = await self.outbox.reschedule(
            work,
            delay_seconds=delay,
            unresolved=unresolved,
            error_code=err.code,
            error_category=category.value,
            error_message=err.reason,
            now=batch.now,
        )
        self._settle(work)
        if ok:
            metrics.child(metrics.RETRIES, work.provider, category.value).inc()
            batch.stats.rescheduled += 1
        else:
            self._stale(work, batch, f"{category.value} failure")

    async def _final(
        self, work: Work, *, code: str | None, category: str, reason: str | None, batch: _Batch
    ) -> None:
        ok = await self.outbox.fail(
            work, error_code=code, error_category=category, error_message=reason, now=batch.now
        )
        self._settle(work)
        if ok:
            metrics.child(metrics.FAILED, work.provider, category).inc()
            batch.stats.failed += 1
        else:
            self._stale(work, batch, "final failure")

    async def _config(
        self, work: Work, err: ProviderError, batch: _Batch, *, unresolved: bool
    ) -> None:
        """Config error: pause the provider (one alert per episode), give the attempt back."""
        assert work.provider is not None
        await self.outbox.pause_provider(
            work.provider, error_code=err.code, reason=err.reason, now=batch.now
        )
        ok = await self.outbox.reschedule(
            work,
            delay_seconds=0,
            unresolved=unresolved,
            give_back=True,
            error_code=err.code,
            error_category=Category.CONFIG.value,
            error_message=err.reason,
            now=batch.now,
        )
        self._settle(work)
        if ok:
            metrics.child(metrics.RETRIES, work.provider, Category.CONFIG.value).inc()
            batch.stats.config += 1
        else:
            self._stale(work, batch, "config failure")

    # -- alerts ------------------------------------------------------------------------------

    async def _deliver_alert(self, work: Work, batch: _Batch) -> None:
        outcome = await alert_webhook.deliver(
            work,
            outbox=self.outbox,
            http=self.http,
            settings=self.settings,
            policy=self.policy,
            rand=self.rand,
            now=batch.now,
        )
        if outcome == "delivered":
            batch.stats.alerts_delivered += 1
        elif outcome == "failed":
            batch.stats.alerts_failed += 1
        elif outcome == "rescheduled":
            batch.stats.alerts_rescheduled += 1
        self._settle(work)

    # -- shutdown ----------------------------------------------------------------------------

    async def release_held(self, *, now: datetime | None = None) -> int:
        """Hand every row still held back to the queue (graceful stop)."""
        # Accepted sends already handed to the recorder are recorded first, not handed back.
        await self.recorder.idle()
        held = [(h.work, h.started) for h in self.held.values()]
        count = await self.outbox.release(held, settle_seconds=SETTLE_SECONDS, now=now)
        self.held.clear()
        if held:
            log.info("released held work", extra={"action": "released", "count": count})
        return count

    def _stale(self, work: Work, batch: _Batch, what: str) -> None:
        """A result for a row that is no longer ours (lease lost): recorded nowhere, logged."""
        batch.stats.lost += 1
        log.warning(
            "result not recorded: the lease is no longer ours",
            extra={**self._extra(work), "action": "stale_result", "result": what},
        )

    def _extra(self, work: Work) -> dict[str, Any]:
        return {
            "message_id": str(work.message_id),
            "provider": work.provider,
            "attempt": work.attempt,
            "to": mask_number(work.to_number),
            "request_id": work.request_id,
        }
