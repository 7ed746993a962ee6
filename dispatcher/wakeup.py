"""LISTEN sms_outbox_wakeup on a dedicated connection; the poll timeout covers what it misses.

A notification only shortens the wait: the claim loop polls every DISPATCH_POLL_SECONDS anyway, so a
lost notification or a dropped connection (database restart) never stalls the queue. A dropped
connection is re-opened with backoff (shared.db.reconnect_delay) while the loop keeps polling; its
loss is logged once, the retries only at DEBUG (the claim loop reports a database outage).
LISTEN needs a session of its own: through a transaction-pooling PgBouncer the server connection
that listens changes hands after each statement and notifications go missing, so a listening
connection that turns out to be pooled is reported (once) as a WARNING naming DATABASE_LISTEN_URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import psycopg

from shared.db import behind_pooler, reconnect_delay
from shared.wakeup import CHANNEL

log = logging.getLogger(__name__)
# How often the listening connection proves it is alive (a dead socket fails the probe).
_PROBE_SECONDS = 5.0


class Wakeup:
    """An event set by every NOTIFY on the wake-up channel (and by stop)."""

    def __init__(self, conninfo: str, *, rand: Callable[[], float] = random.random) -> None:
        self.conninfo = conninfo
        self.rand = rand
        self.event = asyncio.Event()
        self.connected = asyncio.Event()  # for tests and readiness: LISTEN is in place
        self.pooled_warned = False

    async def wait(self, seconds: float) -> bool:
        """Wait for a wake-up or the poll timeout; whether a wake-up came."""
        try:
            async with asyncio.timeout(seconds):
                await self.event.wait()
        except TimeoutError:
            return False
        finally:
            self.event.clear()
        return True

    def poke(self) -> None:
        """Wake the loop now (stop requests, freed capacity)."""
        self.event.set()

    async def listen(self, stop: asyncio.Event) -> None:
        """Keep a LISTEN connection open until `stop` is set, reconnecting with backoff."""
        failures = 0
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if not self.pooled_warned and await behind_pooler(conn):
                        self.pooled_warned = True
                        log.warning(
                            "the wake-up LISTEN goes through a connection pooler and will miss"
                            " notifications; set DATABASE_LISTEN_URL to a direct connection"
                            " (the dispatcher polls every DISPATCH_POLL_SECONDS meanwhile)",
                            extra={"action": "listen_pooled"},
                        )
                    self.connected.set()
                    failures = 0
                    # Anything committed before LISTEN took effect is found by this first poke.
                    self.poke()
                    while not stop.is_set():
                        async for _ in conn.notifies(timeout=_PROBE_SECONDS):
                            self.poke()
                            if stop.is_set():
                                break
                        await conn.execute("SELECT 1")
            except psycopg.Error as e:
                failures += 1
                extra = {"action": "listen_reconnect", "error": type(e).__name__}
                if self.connected.is_set():
                    log.info("wake-up connection lost; polling until it is back", extra=extra)
                else:
                    log.debug("wake-up connection failed; retrying", extra=extra)
                self.connected.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(reconnect_delay(failures, self.rand())):
                        await stop.wait()
        self.connected.clear()
