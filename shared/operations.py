"""What operators do to messages: list them, cancel a pending one, requeue a failed one.

The HTTP API and smsctl call these same functions, so both refuse the same things the same way.
`owner` is the tenancy guard, applied in SQL: a sender key's id limits each to the messages that
key created (another key's message is NotFound, as an unknown id); None (an operator key,
smsctl) reaches every message.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from shared.errors import SmsOutboxError
from shared.queries import q

log = logging.getLogger(__name__)

DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 200


class NotFound(SmsOutboxError):
    """No message has this id."""


class Refused(SmsOutboxError):
    """The operation does not apply to the message as it is now; `code` says why."""

    def __init__(self, code: str, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class BadCursor(SmsOutboxError):
    """A page cursor we did not issue (or one that was altered)."""


@dataclass(frozen=True)
class Filters:
    """Filters of a message listing; None means "any"."""

    status: str | None = None
    priority: str | None = None
    conversation_id: UUID | None = None
    to_number: str | None = None
    from_number: str | None = None
    number: str | None = None  # either side of the conversation (smsctl list --number)
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Page:
    """One page of messages, newest first, and the cursor of the next (None on the last page)."""

    rows: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(created_at: datetime, message_id: UUID) -> str:
    """An opaque, URL-safe cursor naming the last row of a page."""
    raw = json.dumps([created_at.isoformat(), str(message_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """(created_at, id) of a cursor from encode_cursor; BadCursor for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
        if not (isinstance(decoded, list) and len(decoded) == 2):
            raise ValueError("not a pair")
        when, message_id = decoded
        if not (isinstance(when, str) and isinstance(message_id, str)):
            raise ValueError("not strings")
        created_at = datetime.fromisoformat(when)
        if created_at.tzinfo is None:
            raise ValueError("naive time")
        return created_at, UUID(message_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as e:
        raise BadCursor("not a cursor this service issued") from e


async def list_messages(
    conn: AsyncConnection[Any],
    filters: Filters,
    *,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
    owner: int | None = None,
) -> Page:
    """One page of messages matching `filters` (and `owner`), newest first, after `cursor`."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1-{MAX_PAGE}")
    after_created_at, after_id = decode_cursor(cursor) if cursor else (None, None)
    params = {
        "owner": owner,
        "status": filters.status,
        "priority": filters.priority,
        "conversation_id": filters.conversation_id,
        "to_number": filters.to_number,
        "from_number": filters.from_number,
        "number": filters.number,
        "since": filters.since,
        "until": filters.until,
        "after_created_at": after_created_at,
        "after_id": after_id,
        "limit": limit + 1,  # one more tells whether a next page exists
    }
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q("messages_list"), params, prepare=False)
        rows = await cur.fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"])
    return Page(rows, next_cursor)


async def cancel(
    conn: AsyncConnection[Any], message_id: UUID, *, actor: str, owner: int | None = None
) -> None:
    """pending -> canceled, its outbox row deleted, a 'canceled' event; in one transaction.

    NotFound for an unknown id; Refused('not_pending') once it left pending, and
    Refused('send_in_progress') while a dispatcher holds its work or an earlier attempt may have
    reached the provider (a cancel then could not promise the text stays unsent).
    """
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q("outbox_lock_for_operator"), {"id": message_id})
        work = await cur.fetchone()
        await cur.execute(q("messages_lock_for_operator"), {"id": message_id, "owner": owner})
        msg = await cur.fetchone()
        if msg is None:
            raise NotFound(str(message_id))
        status = msg["delivery_status"]
        if status != "pending":
            raise Refused("not_pending", f"only a pending message can be canceled; it is {status}")
        if work is not None and (work["state"] == "leased" or work["attempt_started_at"]):
            raise Refused(
                "send_in_progress",
                "a send attempt is in progress or unresolved; the provider may have the message",
                status,
            )
        await cur.execute(q("messages_cancel"), {"id": message_id, "actor": actor})
        if await cur.fetchone() is None:  # pragma: no cover - the row lock makes this unreachable
            raise Refused("not_pending", "the message left pending meanwhile")
    log.info(
        "message canceled",
        extra={
            "action": "message_canceled",
            "message_id": str(message_id),
            "provider": msg["provider"],
            "actor": actor,
        },
    )


async def requeue(
    conn: AsyncConnection[Any], message_id: UUID, *, actor: str, owner: int | None = None
) -> None:
    """failed -> pending with a fresh attempt budget and new outbox work, a 'requeued' event.

    NotFound for an unknown id; Refused('not_failed') unless it is failed; and
    Refused('already_accepted_by_provider') when it has a provider sid (it failed after the
    provider accepted it: sending it again could deliver it twice).
    """
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q("messages_lock_for_operator"), {"id": message_id, "owner": owner})
        msg = await cur.fetchone()
        if msg is None:
            raise NotFound(str(message_id))
        status = msg["delivery_status"]
        if status != "failed":
            raise Refused("not_failed", f"only a failed message can be retried; it is {status}")
        if msg["provider_sid"] is not None:
            raise Refused(
                "already_accepted_by_provider",
                "the provider accepted this message once; sending it again could double it",
                status,
            )
        await cur.execute(q("messages_requeue"), {"id": message_id, "actor": actor})
        if await cur.fetchone() is None:  # pragma: no cover - the row lock makes this unreachable
            raise Refused("not_failed", "the message left failed meanwhile")
    log.info(
        "message requeued",
        extra={
            "action": "message_requeued",
            "message_id": str(message_id),
            "provider": msg["provider"],
            "actor": actor,
        },
    )


async def requeue_failed_since(
    conn: AsyncConnection[Any], since: datetime, *, actor: str
) -> tuple[list[UUID], list[UUID]]:
    """Requeue every never-accepted failed message that ended at or after `since`.

    Returns (requeued, skipped): skipped ones moved meanwhile. Each is its own transaction.
    """
    async with conn.transaction():
        cur = await conn.execute(q("messages_failed_since"), {"since": since})
        ids = [row[0] for row in await cur.fetchall()]
    done: list[UUID] = []
    skipped: list[UUID] = []
    for message_id in ids:
        try:
            await requeue(conn, message_id, actor=actor)
        except (NotFound, Refused):
            skipped.append(message_id)
        else:
            done.append(message_id)
    return done, skipped
