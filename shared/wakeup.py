"""Waking the dispatcher: `NOTIFY sms_outbox_wakeup` after commit, coalesced per process.

A NOTIFY inside each enqueue transaction serializes commits (measured: it halved the enqueue rate),
so the enqueue only calls `wake()`, which sets a flag; one task sends at most one NOTIFY per
`coalesce_seconds` on its own pooled connection. A lost wake-up costs one dispatcher poll interval.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from shared.queries import q

log = logging.getLogger(__name__)
CHANNEL = "sms_outbox_wakeup"


async def notify(conn: AsyncConnection[Any]) -> None:
    """Send one wake-up now on `conn` (its own transaction), for one-off callers such as smsctl."""
    async with conn.transaction():
        await conn.execute(q("outbox_wakeup_notify"))


class Wakeup:
    """Coalescing notifier: `wake()` is cheap and never blocks; `start()`/`stop()` own the task."""

    def __init__(self, pool: AsyncConnectionPool, coalesce_seconds: float = 0.005) -> None:
        self._pool = pool
        self._coalesce = coalesce_seconds
        self._requested = False
        self._stopping = False
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0  # NOTIFYs sent so far, for tests and metrics

    def wake(self) -> None:
        """Ask for a NOTIFY soon; many calls within the coalescing window make one."""
        self._requested = True
        self._event.set()

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="sms-outbox-wakeup")

    async def stop(self) -> None:
        """End the task without cutting a NOTIFY short, then send what is still requested."""
        if self._task is not None:
            self._stopping = True
            self._event.set()
            await self._task
            self._task = None
        await self._flush()

    async def _run(self) -> None:
        while True:
            await self._event.wait()
            self._event.clear()
            if self._stopping:
                return
            await asyncio.sleep(self._coalesce)
            await self._flush()

    async def _flush(self) -> None:
        if not self._requested:
            return
        # Cleared before sending: a wake() during the NOTIFY asks for another one.
        self._requested = False
        try:
            async with self._pool.connection(timeout=5.0) as conn:
                await notify(conn)
            self.sent += 1
        except Exception as e:
            # The dispatcher's poll fallback picks the work up; nothing is lost.
            log.warning(
                "dispatcher wake-up failed",
                extra={"action": "wakeup_failed", "error_code": type(e).__name__},
            )
