"""What the console's pages show, read with the named queries the DBA views and smsctl use, so a
number on a page is the number the view gives."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from api.ops import charts
from shared.queries import q

# (span name, bucket width, buckets, x label format, label every n-th bucket)
SPANS: Final = (
    ("last hour", timedelta(minutes=5), 12, "%H:%M", 2),
    ("last 24 hours", timedelta(hours=1), 24, "%H:00", 4),
)
OPEN_ALERTS_SHOWN: Final = 20
RETRYING_SHOWN: Final = 100
FAILED_PAGE: Final = 50


async def rows(conn: AsyncConnection[Any], name: str, **params: Any) -> list[dict[str, Any]]:
    """Every row of named query `name`, as dicts, in a transaction of its own."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q(name), params)
        return await cur.fetchall()


@dataclass(frozen=True)
class QueueSummary:
    """The send queue at a glance, summed over sms_queue_health's send_sms rows."""

    depth: int
    due: int
    oldest_due_seconds: float | None
    expired_leases: int


def queue_summary(depth_rows: Iterable[dict[str, Any]]) -> QueueSummary:
    """Totals of the send_sms rows of outbox_depth (the sms_queue_health view)."""
    sends = [r for r in depth_rows if r["kind"] == "send_sms"]
    ages = [float(r["oldest_due_seconds"]) for r in sends if r["oldest_due_seconds"] is not None]
    return QueueSummary(
        depth=sum(int(r["depth"]) for r in sends),
        due=sum(int(r["due"]) for r in sends),
        oldest_due_seconds=max(ages) if ages else None,
        expired_leases=sum(int(r["expired_leases"]) for r in sends),
    )


async def overview(
    conn: AsyncConnection[Any], providers: Iterable[str], now: datetime | None = None
) -> dict[str, Any]:
    """Everything the overview page shows."""
    now = now or datetime.now(UTC)
    depth = await rows(conn, "outbox_depth")
    outcomes = await rows(conn, "events_provider_outcomes_1h")
    names = sorted(set(providers) | {r["provider"] for r in outcomes})
    spans = []
    for span, step, count, label_format, label_every in SPANS:
        origin = charts.bucket_origin(now, step, count)
        found = await rows(conn, "events_outcomes_by_bucket", bucket=step, origin=origin)
        present = names or sorted({r["provider"] for r in found})
        spans.append(
            {
                "name": span,
                "charts": [
                    charts.stacked(
                        f"{provider}, {span}",
                        charts.buckets_of(
                            [r for r in found if r["provider"] == provider], origin, step, count
                        ),
                        label_format,
                        label_every,
                    )
                    for provider in present
                ],
            }
        )
    alerts = await rows(conn, "alerts_open", limit=OPEN_ALERTS_SHOWN)
    return {
        "queue": queue_summary(depth),
        "depth": depth,
        "outcomes": outcomes,
        "spans": spans,
        "series": charts.SERIES,
        "pauses": await rows(conn, "provider_pauses_list"),
        "alerts": alerts,
        "open_alerts": int(alerts[0]["open_count"]) if alerts else 0,
        "leases": await rows(conn, "outbox_leases"),
    }


async def failed(
    conn: AsyncConnection[Any], after: tuple[datetime, UUID] | None
) -> tuple[list[dict[str, Any]], tuple[datetime, UUID] | None]:
    """One page of sms_failed_messages, most recent failure first, and the next page's key."""
    found = await rows(
        conn,
        "messages_failed_list",
        after_failed_at=after[0] if after else None,
        after_id=after[1] if after else None,
        limit=FAILED_PAGE + 1,
    )
    if len(found) <= FAILED_PAGE:
        return found, None
    found = found[:FAILED_PAGE]
    return found, (found[-1]["failed_at"], found[-1]["id"])


async def retrying(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    """Pending sends that failed at least once and wait for another attempt."""
    return await rows(conn, "outbox_retrying", limit=RETRYING_SHOWN)


async def senders(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    """Every sender with its pace and backlog (the sms_sender_pace view)."""
    return await rows(conn, "senders_list")


async def record_reveal(
    conn: AsyncConnection[Any], message_id: UUID, *, api_key_id: int, actor: str
) -> bool:
    """Record that operator key `api_key_id` was shown the message's recipient; False when
    there is no such message."""
    async with conn.transaction():
        cur = await conn.execute(
            q("events_record_reveal"),
            {"message_id": message_id, "api_key_id": api_key_id, "actor": actor},
        )
        return await cur.fetchone() is not None
