"""Retention: delete old final messages (with their events and alerts), in batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from psycopg import AsyncConnection

from shared.queries import q

log = logging.getLogger(__name__)
DEFAULT_BATCH: Final = 1000
# sms_api_key_usage windows end within a day; the API reserves only from current ones.
USAGE_KEPT: Final = timedelta(days=2)


@dataclass(frozen=True)
class Pruned:
    """What one prune removed."""

    messages: int
    orphan_events: int


async def prune(
    conn: AsyncConnection[Any], older_than: timedelta, *, batch: int = DEFAULT_BATCH
) -> Pruned:
    """Delete messages that reached a final status more than `older_than` ago (database clock),
    batch by batch.

    Each batch is its own short transaction. Messages with outbox work (their own or their
    alert's) are kept; events go with their message (ON DELETE CASCADE), and callbacks for unknown
    messages that old go too. Conversations stay (they are small and get reused). Per-key quota
    windows older than two days go whatever `older_than` says (they are spent).
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    messages = events = 0
    for name in ("messages_prune", "events_prune_orphans"):
        while True:
            async with conn.transaction():
                cur = await conn.execute(q(name), {"older_than": older_than, "batch": batch})
                removed = len(await cur.fetchall())
            if name == "messages_prune":
                messages += removed
            else:
                events += removed
            if removed < batch:
                break
    async with conn.transaction():
        await conn.execute(q("api_key_usage_prune"), {"older_than": USAGE_KEPT})
    log.info(
        "pruned",
        extra={"action": "prune", "messages": messages, "orphan_events": events},
    )
    return Pruned(messages, events)
