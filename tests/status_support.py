"""Arrange and read messages with plain SQL for the status, webhook and sweeper tests."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row

from shared.config import Settings
from shared.providers.base import StatusUpdate
from shared.status import ApplyResult, apply_update

FROM = "+15005550006"
TO = "+14155550123"


def insert_message(
    db: psycopg.Connection[Any],
    *,
    provider: str = "twilio",
    status: str = "pending",
    sid: str | None = None,
    from_number: str = FROM,
    to_number: str = TO,
    submitted_ago_seconds: float | None = None,
) -> uuid.UUID:
    """A message in `status` (final_at and submitted_at consistent with it); returns its id."""
    conv = db.execute(
        "INSERT INTO sms_conversations (from_number, to_number) VALUES (%s, %s)"
        " ON CONFLICT (from_number, to_number) DO UPDATE SET from_number = EXCLUDED.from_number"
        " RETURNING id",
        (from_number, to_number),
    ).fetchone()
    assert conv is not None
    if submitted_ago_seconds is None and status not in ("pending", "failed", "canceled"):
        submitted_ago_seconds = 0.0
    row = db.execute(
        "INSERT INTO sms_messages (conversation_id, from_number, to_number, body, provider,"
        " provider_sid, delivery_status, segments, encoding, submitted_at, final_at)"
        " VALUES (%(conv)s, %(from)s, %(to)s, 'hello', %(provider)s, %(sid)s, %(status)s, 1,"
        " 'GSM-7', CASE WHEN %(ago)s::float8 IS NULL THEN NULL"
        "   ELSE now() - make_interval(secs => %(ago)s::float8) END,"
        " CASE WHEN %(status)s IN ('delivered', 'undelivered', 'failed', 'canceled', 'read')"
        "   THEN now() END)"
        " RETURNING id",
        {
            "conv": conv[0],
            "from": from_number,
            "to": to_number,
            "provider": provider,
            "sid": sid,
            "status": status,
            "ago": submitted_ago_seconds,
        },
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def message(db: psycopg.Connection[Any], message_id: uuid.UUID) -> dict[str, Any]:
    """The message row joined with its conversation's last_message_at."""
    with db.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT m.*, c.last_message_at FROM sms_messages m"
            " JOIN sms_conversations c ON c.id = m.conversation_id WHERE m.id = %s",
            (message_id,),
        )
        row = cur.fetchone()
    assert row is not None
    return row


def events(
    db: psycopg.Connection[Any], message_id: uuid.UUID | None, event_type: str | None = None
) -> list[dict[str, Any]]:
    """The message's events in order (message_id None: the events of unknown messages)."""
    with db.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM sms_message_events"
            " WHERE message_id IS NOT DISTINCT FROM %s AND (%s::text IS NULL OR event_type = %s)"
            " ORDER BY id",
            (message_id, event_type, event_type),
        )
        return cur.fetchall()


def snapshot(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Everything a status update may change, to assert that a rejected request changed nothing."""
    rows: list[tuple[Any, ...]] = []
    for table in ("sms_messages", "sms_conversations", "sms_message_events", "sms_alerts"):
        rows.extend(db.execute(f"SELECT '{table}', t.* FROM {table} t ORDER BY 2").fetchall())
    return rows


def update(
    status: str | None,
    *,
    message_id: uuid.UUID | None = None,
    sid: str | None = "SM" + "a" * 32,
    provider: str = "twilio",
    raw_status: str | None = None,
    error_code: str | None = None,
) -> StatusUpdate:
    """A parsed callback as a provider's parse_callback would return it."""
    raw = raw_status if raw_status is not None else (status or "mystery")
    payload = {"MessageSid": sid, "MessageStatus": raw}
    if error_code:
        payload["ErrorCode"] = error_code
    return StatusUpdate(
        provider=provider,
        message_id=message_id,
        sid=sid,
        raw_status=raw,
        status=status,
        error_code=error_code,
        raw=payload,
    )


def apply(settings: Settings, upd: StatusUpdate, source: str = "callback") -> ApplyResult:
    """Run apply_update on a fresh async connection, as the webhook does."""

    async def run() -> ApplyResult:
        async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
            return await apply_update(conn, upd, settings=settings, source=source)

    return asyncio.run(run())
