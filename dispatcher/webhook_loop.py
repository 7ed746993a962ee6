"""The webhook loop in the dispatcher process: fan committed message events out into deliveries,
claim while there is room (WEBHOOK_CONCURRENCY deliveries in flight), poll when nothing is due,
refresh the per-endpoint gauges now and then, and on stop finish or hand back what is in flight
within DISPATCH_GRACE_SECONDS.

It runs beside the SMS claim loop (dispatcher/runner.py) and shares nothing with it but the
process: a failure here is logged, never raised into the SMS side. Deliveries are made here, after
the SMS transactions commit (WebhookWorker.fan_out, migration 0016), and without NOTIFY (a NOTIFY
would serialize every committing status change), so new events are fanned out as soon as the SMS
loop of the same process ends a batch of sends (`nudge`: their status changes are events), and
otherwise by polling every POLL_SECONDS (status callbacks and inbound messages come in through
the API, as before). A nudge claims without waiting for the poll, but no sooner than
NUDGE_MIN_SECONDS after the previous claim: the SMS loop ends many batches a second, and most of
their nudges find nothing due (no endpoint, or a dead one parked with its backlog). The fan-out
runs after a nudge or a wake-up too, but no sooner than FAN_OUT_EVERY_SECONDS after the previous
one, unless that one filled its batch (then at once): each fan-out is a statement and a commit
whose cost is mostly its own, not its events', so under a steady SMS load a few large fan-outs
cost the database far less than one per nudge (bench webhooks, a dead endpoint at 174
messages/s: ~130 fan-out statements per 10 s after every nudge; 20 with the interval at 0.5 s,
at most 40 with it at 0.25 s), and a webhook waits at most that much longer for its delivery to
be made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Final

from dispatcher.webhooks import Delivery, WebhookStats, WebhookWorker
from shared.db import unavailable

log = logging.getLogger(__name__)
# Sleep when nothing was due; and how often the per-endpoint gauges are refreshed.
POLL_SECONDS: Final = 1.0
HEALTH_EVERY_SECONDS: Final = 15.0
# With deliveries in flight, claim once a quarter of the slots are free (or after this long), not
# one row per freed slot: a claim is a transaction, and one per delivery capped the loop at what
# the claims alone could do (measured: ~250 deliveries/s on 2 vCPUs).
CLAIM_GATHER_SECONDS: Final = 0.005
# While events keep coming, fan out no more often than this (a full batch fans out again at once).
FAN_OUT_EVERY_SECONDS: Final = 0.25
# After a claim that found nothing more due, a nudge claims again no sooner than this after it:
# the nudges of many SMS batches share one claim (a transaction each; one per batch was ~10 % of
# the dispatcher's CPU at 68 sends/s, measured with py-spy), and a webhook waits at most this
# much longer for it.
NUDGE_MIN_SECONDS: Final = 0.05


def nudge_delay(now: float, last_claim: float, every: float = NUDGE_MIN_SECONDS) -> float:
    """Seconds a nudged claim waits at `now` (loop time), the previous claim having started at
    `last_claim`: the rest of `every` since then, or none."""
    return max(0.0, min(every, last_claim + every - now))


def fan_out_due(
    now: float,
    last_fan_out: float,
    *,
    more: bool,
    pending: bool,
    every: float = FAN_OUT_EVERY_SECONDS,
) -> bool:
    """Whether to fan out before the next claim at `now` (loop time), the last fan-out having
    started at `last_fan_out`: at once when that one filled its batch (`more`); when events may
    be waiting (`pending`: a nudge, or a wake-up from idle) and `every` has passed since it; and
    at least every POLL_SECONDS (status callbacks and inbound messages nudge nobody)."""
    since = now - last_fan_out
    return more or since >= POLL_SECONDS or (pending and since >= every)


def idle_timeout(
    now: float, last_fan_out: float, *, pending: bool, every: float = FAN_OUT_EVERY_SECONDS
) -> float:
    """How long an idle loop waits for a nudge at `now` (loop time): the poll, or, when a fan-out
    was put off (`pending`), until it is due (a hair past, so the check then finds it due)."""
    if not pending:
        return POLL_SECONDS
    return min(POLL_SECONDS, max(0.0, last_fan_out + every - now) + 0.001)


class WebhookLoop:
    """Runs one WebhookWorker until the stop event is set."""

    def __init__(
        self,
        worker: WebhookWorker,
        *,
        nudge_every: float = NUDGE_MIN_SECONDS,
        fan_out_every: float = FAN_OUT_EVERY_SECONDS,
    ) -> None:
        self.worker = worker
        self.nudge_every = nudge_every
        self.fan_out_every = fan_out_every
        self._nudged = asyncio.Event()
        # Events may wait for the fan-out: set by a nudge, at start and by each wake-up from
        # idle; cleared by the fan-out.
        self._events = False

    def nudge(self) -> None:
        """New events may wait for the fan-out (the SMS loop recorded outcomes): fan out and
        claim without waiting for the next poll."""
        self._events = True
        self._nudged.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then finish or hand back what is in flight."""
        tasks: set[asyncio.Task[None]] = set()
        room = asyncio.Event()
        next_health = 0.0
        loop = asyncio.get_running_loop()
        failures = 0
        last_claim = loop.time()
        last_fan_out = -POLL_SECONDS  # none yet: the first is due at once
        more = False  # the last fan-out filled its batch: more events wait
        self._events = True

        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            room.set()

        while not stop.is_set():
            if loop.time() >= next_health:
                next_health = loop.time() + HEALTH_EVERY_SECONDS
                await self._quietly(self.worker.refresh_health(), "webhook health refresh")
            if fan_out_due(
                loop.time(),
                last_fan_out,
                more=more,
                pending=self._events,
                every=self.fan_out_every,
            ):
                self._events = False
                last_fan_out = loop.time()
                # A full batch: more events wait, so the loop comes back without sleeping.
                more = await self._fan_out()
            concurrency = self.worker.settings.webhook_concurrency
            free = concurrency - len(tasks)
            if free <= 0:
                room.clear()
                await _wait(room, POLL_SECONDS)
                continue
            if tasks and free < max(1, concurrency // 4):
                await self._gather(tasks, room, max(1, concurrency // 4))
                free = concurrency - len(tasks)
            last_claim = loop.time()
            try:
                works = await self.worker.claim(free)
                failures = 0
            except Exception as e:
                failures += 1
                if unavailable(e) is None:
                    log.exception("webhook claim failed", extra={"action": "webhook_claim_failed"})
                await _wait(stop, min(POLL_SECONDS * 2**failures, 30.0))
                continue
            for work in works:
                task = asyncio.create_task(self._guarded(work))
                tasks.add(task)
                task.add_done_callback(done)
            if len(works) < free and not more:
                await self._idle(
                    stop,
                    last_claim,
                    idle_timeout(
                        loop.time(),
                        last_fan_out,
                        pending=self._events,
                        every=self.fan_out_every,
                    ),
                )
                self._events = True
        await self._stop(tasks)

    async def _fan_out(self) -> bool:
        """One fan-out (a few steps); whether events were left for the next one."""
        try:
            return (await self.worker.fan_out()).more
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if unavailable(e) is None:
                log.exception("webhook fan-out failed", extra={"action": "webhook_fan_out_failed"})
            return False

    async def _gather(
        self, tasks: set[asyncio.Task[None]], room: asyncio.Event, wanted: int
    ) -> None:
        """Wait up to CLAIM_GATHER_SECONDS for `wanted` free slots; sooner if they free up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLAIM_GATHER_SECONDS
        concurrency = self.worker.settings.webhook_concurrency
        while concurrency - len(tasks) < wanted:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            room.clear()
            await _wait(room, remaining)

    async def _idle(self, stop: asyncio.Event, last_claim: float, at_most: float) -> None:
        """Nothing more due: wait for a nudge, the stop or `at_most` seconds (the next poll, or a
        fan-out put off), whichever is first; a nudge then waits out the rest of
        NUDGE_MIN_SECONDS since `last_claim` (loop time), and the nudges that come meanwhile are
        answered by the same claim."""
        if not self._nudged.is_set():
            waits = {asyncio.ensure_future(self._nudged.wait()), asyncio.ensure_future(stop.wait())}
            _, pending = await asyncio.wait(
                waits, timeout=at_most, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._nudged.is_set() and not stop.is_set():
            delay = nudge_delay(asyncio.get_running_loop().time(), last_claim, self.nudge_every)
            if delay > 0:
                await _wait(stop, delay)
        self._nudged.clear()

    async def _guarded(self, work: Delivery) -> None:
        await self._quietly(self.worker.deliver(work, WebhookStats()), "webhook delivery")

    async def _quietly(self, job: Awaitable[object], what: str) -> None:
        """Run `job`; a failure is logged (quietly while the database is down), never raised:
        a delivery left leased is rescued when its lease expires."""
        try:
            await job
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if unavailable(e) is None:
                log.exception(f"{what} failed", extra={"action": "webhook_failed"})

    async def _stop(self, tasks: set[asyncio.Task[None]]) -> None:
        grace = self.worker.settings.dispatch_grace_seconds
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=max(grace - 2.0, grace * 0.75))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._quietly(self.worker.release_held(), "webhook release")


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
