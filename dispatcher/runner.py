"""The daemon loop around Dispatcher: claim while there is room, wake on NOTIFY or poll, stop well.

Graceful stop (SIGTERM/SIGINT): no claim starts after the signal; rows whose attempt had not
started are handed back at once with their attempt returned; sends in flight get until
DISPATCH_GRACE_SECONDS to finish; whatever is still in flight then is cancelled and handed back
with attempt_started_at kept, so the next claimer reconciles it before any resend (the call may
have reached the provider). Nothing stays leased to a stopped dispatcher.

Database unreachable (at start or later): every claim that fails for it is counted by `Outage`,
which logs one line per outage naming DATABASE_URL (never its value) and one when it is back; the
next claim waits `reconnect_delay` (0.5 s doubling to 30 s, jittered), or less if woken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from dispatcher.outbox import Work
from dispatcher.service import Dispatcher
from dispatcher.wakeup import Wakeup
from dispatcher.webhook_loop import WebhookLoop
from shared.db import Outage, reconnect_delay, unavailable

log = logging.getLogger(__name__)
# The status sweep's one pass; it answers how many seconds until it wants the next one.
Sweep = Callable[[], Awaitable[float]]
# With only a few slots free, wait at most this long for more to free up before claiming: claims
# stay batched without leaving a free slot idle for long (a slot idle 50 ms at 200 ms provider
# latency is a quarter of its throughput lost).
CLAIM_GATHER_SECONDS = 0.005
# ...but only while provider calls are shorter than this. Short calls keep the dispatcher's CPU, not
# its slots, the limit, and fewer, larger claims spare it (simulator at 0 ms, calls ~16 ms: 12 %
# more sends with the wait). Long calls make the slots the limit, and the wait is lost sending
# time: at 200 ms, claiming at once made 2.3-2.8 % more (latency_efficiency 0.893 -> 0.914).
GATHER_MAX_CALL_SECONDS = 0.1
# After a short claim with a paced backlog waiting, sleep at least this long before the next: a
# sender whose next message costs more than one segment is not polled in a busy loop.
PACE_MIN_WAIT_SECONDS = 0.02


def gather_first(free: int, wanted: int, mean_call_seconds: float | None) -> bool:
    """Whether to wait up to CLAIM_GATHER_SECONDS for `wanted` free slots before claiming, with
    `free` free now: only while calls are short (or none was made yet)."""
    short = mean_call_seconds is None or mean_call_seconds < GATHER_MAX_CALL_SECONDS
    return free < wanted and short


class Runner:
    """Runs one Dispatcher until stop() is called."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        wakeup: Wakeup,
        *,
        sweep: Sweep | None = None,
        sweep_every: float = 60.0,
        expire: Sweep | None = None,
        webhooks: WebhookLoop | None = None,
        outage: Outage | None = None,
        backoff: Callable[[int, float], float] = reconnect_delay,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.dispatcher = dispatcher
        self.wakeup = wakeup
        self.sweep = sweep
        self.sweep_every = sweep_every
        self.expire = expire
        # Customer webhooks: a loop of their own (own claim, slots, HTTP client and pool), so they
        # never take a slot, a connection or a claim from an SMS send.
        self.webhooks = webhooks
        self.outage = outage or Outage(log)
        self.backoff = backoff  # (failures in a row, rand) -> seconds; tests pass a fast one
        self.rand = rand
        self.batches: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """Claim nothing more; in-flight work finishes or is released (signal handler)."""
        if not self.dispatcher.stopping.is_set():
            log.info("stopping", extra={"action": "stop"})
        self.dispatcher.stop()
        self.wakeup.poke()

    async def run(self) -> None:
        """Claim and process until stopped, then shut down within the grace period."""
        d = self.dispatcher
        settings = d.settings
        stop = d.stopping
        background = [asyncio.create_task(self.wakeup.listen(stop))]
        for sweep, what in ((self.sweep, "status sweep"), (self.expire, "expiry sweep")):
            if sweep is not None:
                background.append(asyncio.create_task(self._sweep_loop(sweep, what)))
        webhook_loop = None
        if self.webhooks is not None:
            webhook_loop = asyncio.create_task(self.webhooks.run(stop))
        batch_size = min(settings.dispatch_batch_size, settings.dispatch_concurrency)
        # Claim a quarter batch at a time when slots free up that fast; else what is free.
        min_claim = max(1, batch_size // 4)
        log.info("dispatcher running", extra={"action": "start", "owner": d.owner})
        try:
            while not stop.is_set():
                if d.free_slots() == 0:
                    await self._capacity(settings.dispatch_poll_seconds)
                    continue
                if gather_first(d.free_slots(), min_claim, d.mean_call_seconds):
                    await self._gather(min_claim)
                    if stop.is_set():
                        break
                limit = d.claim_limit()
                try:
                    works = await d.claim()
                except Exception as e:
                    await self.wakeup.wait(await self._claim_failed(e))
                    continue
                self.outage.recovered()
                if works:
                    task = asyncio.create_task(self._batch(works))
                    self.batches.add(task)
                    task.add_done_callback(self._batch_done)
                if len(works) < limit:  # nothing more due now: sleep until woken or paced
                    await self.wakeup.wait(await self._idle_wait())
        finally:
            await self._shutdown()
            if webhook_loop is not None:
                # On stop it finishes or hands back its deliveries within the grace period.
                if not stop.is_set():
                    webhook_loop.cancel()
                await asyncio.gather(webhook_loop, return_exceptions=True)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        log.info("dispatcher stopped", extra={"action": "stopped", "owner": d.owner})

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self.batches.discard(task)
        if self.webhooks is not None:
            self.webhooks.nudge()  # the batch's status changes may have made deliveries

    async def _claim_failed(self, e: Exception) -> float:
        """Report a failed claim (a database outage once) and how long to wait before the next."""
        down = unavailable(e)
        if down is None:
            log.exception(
                "claim failed; retrying after the poll interval", extra={"action": "claim_failed"}
            )
            return self.dispatcher.settings.dispatch_poll_seconds
        failures = await self.outage.failed(down)
        return self.backoff(failures, self.rand())

    async def _capacity(self, seconds: float) -> None:
        """Wait up to `seconds` for a held row to settle (a slot to free up)."""
        await self.dispatcher.wait_for_room(seconds)

    async def _gather(self, wanted: int) -> None:
        """Wait up to CLAIM_GATHER_SECONDS for `wanted` free slots; sooner if they are free."""
        d = self.dispatcher
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLAIM_GATHER_SECONDS
        while d.free_slots() < wanted and not d.stopping.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await self._capacity(remaining)

    async def _idle_wait(self) -> float:
        """How long to sleep after a short claim: until the first paced sender with due work may
        send again, within the poll interval (a NOTIFY wakes the loop sooner)."""
        poll = self.dispatcher.settings.dispatch_poll_seconds
        try:
            wait = await self.dispatcher.outbox.pace_wait()
        except Exception as e:
            if unavailable(e) is None:
                log.exception("pace wait failed", extra={"action": "pace_wait_failed"})
            return poll
        if wait is None:
            return poll
        return min(poll, max(wait, PACE_MIN_WAIT_SECONDS))

    # SWEEPER HOOK: the status sweeper (dispatcher/sweeper.py) and the expiry sweep
    # (dispatcher/expiry.py) run here when __main__ passes them, each again after the delay its
    # pass asks for (soon while a backlog is left); a failing pass is logged, never fatal, and
    # tried again after `sweep_every` seconds.
    async def _sweep_loop(self, sweep: Sweep, what: str) -> None:
        while not self.dispatcher.stopping.is_set():
            wait = self.sweep_every
            try:
                wait = await sweep()
            except Exception as e:
                # While the database is unreachable the claim loop reports it, once.
                if unavailable(e) is None:
                    log.exception(f"{what} failed", extra={"action": "sweep_failed"})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.dispatcher.stopping.wait()

    async def _batch(self, works: Sequence[Work]) -> None:
        try:
            await self.dispatcher.process(works)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # Rows of this batch stay leased in the database; their leases expire and any
            # dispatcher (this one included) rescues and reconciles them.
            extra = {"action": "batch_failed", "count": len(works)}
            down = unavailable(e)
            if down is None:
                log.exception("batch failed", extra=extra)
            else:
                log.warning("batch failed: database unreachable (%s)", down.reason, extra=extra)
            self.dispatcher.forget(works)

    async def _shutdown(self) -> None:
        d = self.dispatcher
        grace = d.settings.dispatch_grace_seconds
        # Keep some of the grace period for cancelling and the release statement.
        wait = max(grace - min(2.0, grace * 0.25), 0.0)
        if self.batches:
            _, pending = await asyncio.wait(set(self.batches), timeout=wait)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            await d.release_held()
        except Exception as e:
            if unavailable(e) is None:
                log.exception(
                    "release failed; leases will expire", extra={"action": "release_failed"}
                )
            else:
                log.warning(
                    "release failed: database unreachable; leases will expire",
                    extra={"action": "release_failed"},
                )
