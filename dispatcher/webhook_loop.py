"""The webhook loop in the dispatcher process: claim while there is room (WEBHOOK_CONCURRENCY
deliveries in flight), poll when nothing is due, refresh the per-endpoint gauges now and then,
and on stop finish or hand back what is in flight within DISPATCH_GRACE_SECONDS.

It runs beside the SMS claim loop (dispatcher/runner.py) and shares nothing with it but the
process: a failure here is logged, never raised into the SMS side. Triggers write deliveries
without NOTIFY (a NOTIFY would serialize every committing status change), so due work is found by
polling every POLL_SECONDS, or at once while claims come back full.
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


class WebhookLoop:
    """Runs one WebhookWorker until the stop event is set."""

    def __init__(self, worker: WebhookWorker) -> None:
        self.worker = worker

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then finish or hand back what is in flight."""
        tasks: set[asyncio.Task[None]] = set()
        room = asyncio.Event()
        next_health = 0.0
        loop = asyncio.get_running_loop()
        failures = 0

        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            room.set()

        while not stop.is_set():
            if loop.time() >= next_health:
                next_health = loop.time() + HEALTH_EVERY_SECONDS
                await self._quietly(self.worker.refresh_health(), "webhook health refresh")
            free = self.worker.settings.webhook_concurrency - len(tasks)
            if free <= 0:
                room.clear()
                await _wait(room, POLL_SECONDS)
                continue
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
            if len(works) < free:
                await _wait(stop, POLL_SECONDS)
        await self._stop(tasks)

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
