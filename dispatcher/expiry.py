"""The expiry sweep: messages whose validity ended while they waited unsent become `expired`.

A message past `expires_at` is never handed to a provider. The dispatcher checks that before
every call (`decision.before_send`); this sweep ends the ones still waiting in the queue (scheduled,
held for quiet hours, behind a sender's pace, waiting for a retry) at their expiry rather than at
their next claim. Each pass expires up to one batch in one transaction: rows leave the outbox and
each message moves to `expired` with its event and final-failure alert (`shared.alerts`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from shared import alerts
from shared.config import Settings
from shared.providers.base import Category
from shared.queries import q

log = logging.getLogger(__name__)
BATCH = 500
# Between passes when the last one found less than a batch.
IDLE_SECONDS = 1.0


class Expiry:
    """One pass per call; answers the seconds until it wants the next (the runner's Sweep)."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], settings: Settings, *, batch: int = BATCH
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.batch = batch

    async def __call__(self, now: datetime | None = None) -> float:
        expired = await self.run_once(now=now)
        return 0.0 if expired >= self.batch else IDLE_SECONDS

    async def run_once(self, *, now: datetime | None = None) -> int:
        """Expire up to one batch of waiting messages past their validity; how many."""
        async with self.pool.connection() as conn, conn.transaction():
            return await self._expire(conn, now)

    async def _expire(self, conn: AsyncConnection[Any], now: datetime | None) -> int:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(q("outbox_expire_due"), {"now": now, "limit": self.batch})
            rows = await cur.fetchall()
        for row in rows:
            await alerts.raise_final_failure(
                conn,
                row["message_id"],
                error_code="expired",
                error_category=Category.PERMANENT.value,
                error_message="not handed to a provider before expires_at "
                + row["expires_at"].isoformat(),
                settings=self.settings,
                now=now,
                status="expired",
            )
        if rows:
            log.info("messages expired unsent", extra={"action": "expired", "count": len(rows)})
        return len(rows)
