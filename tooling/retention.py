"""Retention: drop whole days of history, then delete old final messages (with their alerts), in
batches; keep the next days of history ready."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from psycopg import AsyncConnection

from shared.queries import q

log = logging.getLogger(__name__)
DEFAULT_BATCH: Final = 1000
# sms_api_key_usage windows end within a day; the API reserves only from current ones.
USAGE_KEPT: Final = timedelta(days=2)
# Days of history partitions made ahead; a daily retention run that stops for this long still
# loses nothing (rows then land in the DEFAULT partition until the next run moves them).
DAYS_AHEAD: Final = 14


@dataclass(frozen=True)
class Pruned:
    """What one prune removed (and the history days it made or had to keep)."""

    messages: int
    orphan_events: int
    days_dropped: int = 0
    days_kept: int = 0
    days_made: int = 0
    days_seconds: float = 0.0  # time spent dropping (or keeping) the history days
    webhook_deliveries: int = 0  # finished customer webhook deliveries


async def prune(
    conn: AsyncConnection[Any], older_than: timedelta, *, batch: int = DEFAULT_BATCH
) -> Pruned:
    """Remove what ended more than `older_than` ago (database clock).

    First the days of sms_message_events entirely older than that are dropped whole, each in its
    own transaction, unless one holds an event of a message that stays (0010's
    sms_message_events_drop_partition says so; such a day is kept for a later run). Then final
    messages that old go batch by batch, each batch its own short transaction; messages with
    outbox work (their own or their alert's) are kept, and their remaining events go with them.
    Callbacks for unknown messages that old go too, and so do finished webhook deliveries made
    that long ago (pending ones are outbox work and stay). Conversations stay (they are small and
    get reused). Per-key quota windows older than two days go whatever `older_than` says (they are
    spent). Before all that, the next DAYS_AHEAD days of history are made ready.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    async with conn.transaction():
        cur = await conn.execute(q("events_make_partitions"), {"days_ahead": DAYS_AHEAD})
        made_row = await cur.fetchone()
    made = int(made_row[0]) if made_row else 0
    started = time.monotonic()
    dropped = kept = 0
    async with conn.transaction():
        cur = await conn.execute(q("events_partitions_past"), {"older_than": older_than})
        days = [str(row[0]) for row in await cur.fetchall()]
    for day in days:
        async with conn.transaction():
            cur = await conn.execute(
                q("events_drop_partition"), {"partition_name": day, "older_than": older_than}
            )
            row = await cur.fetchone()
        outcome = str(row[0]) if row else "kept: gone"
        if outcome == "dropped":
            dropped += 1
        else:
            kept += 1
            log.info(
                "history day kept: %s",
                outcome,
                extra={"action": "prune_partition_kept", "partition": day},
            )
    days_seconds = time.monotonic() - started
    removed_by: dict[str, int] = {}
    for name in ("messages_prune", "events_prune_orphans", "webhook_deliveries_prune"):
        removed_by[name] = 0
        while True:
            async with conn.transaction():
                cur = await conn.execute(q(name), {"older_than": older_than, "batch": batch})
                removed = len(await cur.fetchall())
            removed_by[name] += removed
            if removed < batch:
                break
    messages = removed_by["messages_prune"]
    events = removed_by["events_prune_orphans"]
    deliveries = removed_by["webhook_deliveries_prune"]
    async with conn.transaction():
        await conn.execute(q("api_key_usage_prune"), {"older_than": USAGE_KEPT})
    log.info(
        "pruned",
        extra={
            "action": "prune",
            "messages": messages,
            "orphan_events": events,
            "webhook_deliveries": deliveries,
            "days_dropped": dropped,
            "days_kept": kept,
            "days_made": made,
            "duration_ms": round(days_seconds * 1000),
        },
    )
    return Pruned(
        messages, events, dropped, kept, made, days_seconds, webhook_deliveries=deliveries
    )
