"""The dispatcher: claim due work, send it, record each outcome; `run_once` is one iteration.

Per claimed send (README, "Sent once"), in order: `decision.before_lookup` (drop, adopt a sid a
callback brought, wait out the settle window), a reconciliation lookup when an earlier attempt may
have reached the provider (`decision.after_lookup`), "attempt N started" committed for the batch,
the provider call outside any transaction under a hard timeout that also ends before the lease
does (`decision.after_attempt`), and each outcome written by `outcomes.Outcomes` (accepted sends,
and attempts to run again, of many slots together as they complete). Rows held and slots free
are `slots.Slots`.

Residual risk, stated plainly: a process frozen (SIGSTOP, VM pause) while a request is half
written can finish writing it after its lease expired and after a rescuer's lookups found
nothing, which sends that message twice (and is then detected by its callbacks). The lease-deadline
check before each call and the call timeout confine this to requests already on the wire at the
freeze; neither provider offers an idempotency key for message creation.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool

from dispatcher import alert_webhook, decision
from dispatcher.decision import Facts, Outcome, Resend, Sent, Timing
from dispatcher.outbox import CopyOwners, Outbox, Work
from dispatcher.outcomes import Outcomes, RunStats, describe
from dispatcher.slots import Slots
from shared import metrics
from shared.config import Settings
from shared.providers.base import (
    Category,
    CopyLookup,
    Provider,
    ProviderError,
    SendRequest,
    SendResult,
)
from shared.quiet import zones_for
from shared.retry import RetryPolicy

__all__ = ["Dispatcher", "RunStats"]

log = logging.getLogger(__name__)
# Reconciliation looks this far before the attempt started: the provider's clock may lag ours.
RECONCILE_SKEW = timedelta(seconds=5)
# A row whose call may still be in flight at shutdown is not due again before this: a request that
# already left lands at the provider first, so the next claimer's reconciliation sees it.
SETTLE_SECONDS = 5.0
# Each call's weight in the moving average of call lengths (about the last 20 calls count).
CALL_AVERAGE_WEIGHT = 0.05


@dataclass
class _Batch:
    now: datetime | None
    stats: RunStats = field(default_factory=RunStats)


def facts(work: Work) -> Facts:
    """The decision's view of a claimed row."""
    return Facts(
        attempt=work.attempt,
        claimed_at=work.claimed_at,
        delivery_status=work.delivery_status,
        unresolved_since=work.unresolved_since,
        provider_sid=work.provider_sid,
        reconcile_misses=work.reconcile_misses,
        last_error_code=work.last_error_code,
        last_error_category=work.last_error_category,
        last_error=work.last_error,
        priority=work.priority or "normal",
        expires_at=work.expires_at,
        suppressed=work.suppressed,
    )


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
        self.timing = Timing(
            provider_timeout_seconds=settings.provider_timeout_seconds,
            settle_seconds=settings.reconcile_settle_seconds,
            lookups=settings.reconcile_lookups,
        )
        self.http = http
        self.rand = rand
        self.stopping = asyncio.Event()
        self.slots = Slots(settings.dispatch_concurrency)
        self.outcomes = Outcomes(
            self.outbox, group_rows=max(settings.dispatch_batch_size, settings.dispatch_concurrency)
        )
        # A call must end this long before the lease does: no one may rescue a row still in flight.
        self.lease_margin = max(settings.dispatch_lease_seconds * 0.2, 0.2)
        # How long provider calls take lately (a moving average; None before the first), for the
        # runner's choice between claiming at once and waiting for company (runner.gather_first).
        self.mean_call_seconds: float | None = None

    # -- what the runner uses ----------------------------------------------------------------

    def free_slots(self) -> int:
        """How many more rows this dispatcher may take on (DISPATCH_CONCURRENCY bounds them)."""
        return self.slots.free()

    def claim_limit(self) -> int:
        """The next claim's size: one batch, within the free capacity."""
        return min(self.settings.dispatch_batch_size, self.free_slots())

    async def wait_for_room(self, seconds: float) -> None:
        """Wait up to `seconds` for a held row to settle (a slot to free up)."""
        await self.slots.wait_for_room(seconds)

    def stop(self) -> None:
        """Claim and start nothing more; wake whoever waits for room."""
        self.stopping.set()
        self.slots.wake()

    def forget(self, works: Sequence[Work]) -> None:
        """Stop holding rows a failed batch left: their leases expire and anyone rescues them."""
        self.slots.forget(works)

    async def run_once(self, now: datetime | None = None) -> RunStats:
        """Claim one batch, process it fully, return what happened; `now` injects the clock."""
        works = await self.claim(now=now)
        return await self.process(works, now=now)

    async def claim(self, *, now: datetime | None = None) -> list[Work]:
        """Lease up to `claim_limit()` due rows; they are held from here."""
        works = await self.outbox.claim(
            self.claim_limit(),
            now=now,
            providers=self.providers.keys(),
            quiet=self.settings.quiet_hours is not None,
        )
        deadline = asyncio.get_running_loop().time() + self.settings.dispatch_lease_seconds
        self.slots.hold(works, deadline - self.lease_margin)
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

    # -- sends -------------------------------------------------------------------------------

    async def _write(self, work: Work, outcome: Outcome, batch: _Batch) -> None:
        await self.outcomes.write(work, outcome, batch.stats, now=batch.now)
        self.slots.settle(work)

    async def _send_batch(self, works: Sequence[Work], batch: _Batch) -> None:
        ready: list[Work] = []
        for w in works:
            if w.started:  # the claim committed "attempt started": a stop hands it back as such
                self.slots.start(w)
            if w.delivery_status == "pending" and w.provider not in self.providers:
                err = ProviderError(Category.CONFIG, f"provider {w.provider} is not configured")
                outcome: Outcome = decision.Pause(
                    decision.Error.of(err), unresolved=w.unresolved_since is not None
                )
                await self._write(w, outcome, batch)
            else:
                ready.append(w)
        if self.stopping.is_set():
            for w in ready:
                if w.delivery_status != "pending":
                    await self._write(w, decision.Drop(w.delivery_status), batch)
            return  # the rest was not started: released by stop()
        verdicts = await asyncio.gather(*(self._check(w, batch) for w in ready))
        to_send = [w for w, send in zip(ready, verdicts, strict=True) if send]
        if self.stopping.is_set() or not to_send:
            return
        # The checks above are pure for the rows the claim started (nothing in doubt): only the
        # others need their "attempt started" committed now.
        started = {w.id for w in to_send if w.started}
        started |= await self.outbox.start([w for w in to_send if not w.started], now=batch.now)
        tasks: list[asyncio.Task[None]] = []
        for w in to_send:
            if w.id not in started:
                self.outcomes.stale(w, batch.stats, "attempt start")
                self.slots.settle(w)
                continue
            self.slots.start(w)
            tasks.append(asyncio.create_task(self._attempt(w, batch)))
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # Cancelled at shutdown or the database failed: no send task may outlive its batch.
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _check(self, work: Work, batch: _Batch) -> bool:
        """Everything before a call: whether to send `work` now (any other outcome is written)."""
        known = facts(work)
        outcome = decision.before_lookup(known, self.timing)
        if outcome is None:
            outcome = await self._look_up(work, known)
        if isinstance(outcome, Resend):
            quiet = self.settings.quiet_hours
            # The recipient's time zones only matter when quiet hours are set (phonenumbers'
            # lookup stays off the send path otherwise).
            zones = zones_for(work.to_number or "") if quiet is not None else ()
            last_word = decision.before_send(known, quiet=quiet, zones=zones)
            if last_word is not None:
                await self._write(work, last_word, batch)
                return False
            if work.unresolved_since is not None:
                assert work.provider is not None
                metrics.child(metrics.RECONCILIATIONS, work.provider, "resend").inc()
                log.info(
                    "earlier attempt not found at the provider; sending",
                    extra={**describe(work), "action": "reconcile_resend"},
                )
            return True
        await self._write(work, outcome, batch)
        return False

    async def _look_up(self, work: Work, known: Facts) -> Outcome:
        """Ask the provider for copies of the unresolved attempt, and decide."""
        assert work.provider and work.from_number and work.to_number and work.body
        assert work.unresolved_since is not None
        lookup = CopyLookup(
            from_number=work.from_number,
            to_number=work.to_number,
            body=work.body,
            segments=work.segments,
            since=work.unresolved_since - RECONCILE_SKEW,
            until=decision.window_end(work.unresolved_since, self.timing),
        )
        try:
            copies = await self.providers[work.provider].find_copies(lookup)
        except Exception as e:
            metrics.child(metrics.RECONCILIATIONS, work.provider, "error").inc()
            if isinstance(e, ProviderError):
                err = e
            else:
                log.exception("reconciliation lookup failed", extra=describe(work))
                err = ProviderError(Category.AMBIGUOUS, f"lookup failed: {type(e).__name__}")
            return decision.after_attempt(
                known, err, self.policy, rand=self.rand(), unresolved=True
            )
        owners = CopyOwners(set(), None, [])
        if copies:
            owners = await self.outbox.copy_owners(
                work,
                [c.sid for c in copies],
                same_body=self.providers[work.provider].compares_bodies,
            )
        if len([c for c in copies if c.sid not in owners.taken]) > 1:
            log.warning(
                "several provider messages match one unresolved attempt; the oldest is adopted",
                extra={**describe(work), "action": "reconcile_several"},
            )
        return decision.after_lookup(
            known,
            copies,
            owners.taken,
            self.policy,
            self.timing,
            owners.in_flight_since,
            owners.rivals,
        )

    async def _attempt(self, work: Work, batch: _Batch) -> None:
        """One send slot: call the provider once and write what that leads to."""
        assert work.provider and work.message_id and work.from_number and work.to_number
        assert work.body is not None
        held = self.slots.get(work)
        remaining = (held.deadline if held else 0.0) - asyncio.get_running_loop().time()
        timeout = min(self.settings.provider_timeout_seconds, remaining)
        if timeout <= 0:
            await self._write(work, decision.too_late_to_call(), batch)
            return
        known = facts(work)
        request = SendRequest(
            message_id=work.message_id,
            from_number=work.from_number,
            to_number=work.to_number,
            body=work.body,
            # Empty: each provider builds its own callback URL carrying our message id.
            status_callback_url="",
            validity_seconds=decision.validity_left(known),
        )
        result = await self._call(work, request, timeout)
        outcome = decision.within_validity(
            known, decision.after_attempt(known, result, self.policy, rand=self.rand())
        )
        if not isinstance(outcome, Sent):
            await self._write(work, outcome, batch)
            return
        # Accepted: the slot is free while the recorder gathers a group to write.
        self.slots.calling_done(work)
        try:
            await self.outcomes.record(work, outcome, batch.stats, batch.now)
        finally:
            self.slots.recorded(work)
            self.slots.settle(work)

    def _called(self, seconds: float) -> None:
        """Fold one call's length into `mean_call_seconds`."""
        mean = self.mean_call_seconds
        self.mean_call_seconds = (
            seconds if mean is None else mean + CALL_AVERAGE_WEIGHT * (seconds - mean)
        )

    async def _call(
        self, work: Work, request: SendRequest, seconds: float
    ) -> SendResult | ProviderError:
        """The provider call under a hard timeout; any failure comes back as a ProviderError."""
        assert work.provider is not None
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(seconds):
                try:
                    result = await self.providers[work.provider].send(request)
                finally:
                    self._called(time.monotonic() - t0)
        except ProviderError as e:
            err = e
        except TimeoutError:
            err = ProviderError(
                Category.AMBIGUOUS, f"no answer within {seconds:.1f} s", code="timeout"
            )
        except Exception as e:
            log.exception("provider call raised", extra=describe(work))
            err = ProviderError(Category.AMBIGUOUS, f"provider call raised {type(e).__name__}")
        else:
            metrics.child(metrics.SEND_LATENCY, work.provider, "sent").observe(
                time.monotonic() - t0
            )
            return result
        elapsed = time.monotonic() - t0
        metrics.child(metrics.SEND_LATENCY, work.provider, err.category.value).observe(elapsed)
        if err.category is Category.AMBIGUOUS:
            metrics.child(metrics.AMBIGUOUS, work.provider).inc()
        log.warning(
            "attempt failed",
            extra={
                **describe(work),
                "action": "attempt_failed",
                "error_category": err.category.value,
                "error_code": err.code,
                "error": err.reason,
                "duration_ms": round(elapsed * 1000, 1),
            },
        )
        return err

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
        self.slots.settle(work)

    # -- shutdown ----------------------------------------------------------------------------

    async def release_held(self, *, now: datetime | None = None) -> int:
        """Hand every row still held back to the queue (graceful stop)."""
        # Accepted sends already handed to the recorder are recorded first, not handed back.
        await self.outcomes.recorder.idle()
        await self.outcomes.retries.idle()
        held = [(h.work, h.started) for h in self.slots.drain()]
        count = await self.outbox.release(held, settle_seconds=SETTLE_SECONDS, now=now)
        if held:
            log.info("released held work", extra={"action": "released", "count": count})
        return count
