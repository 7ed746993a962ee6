"""Apply a provider's word on a message's status: recorded raw, moved forward only."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, assert_never
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from shared import alerts, metrics
from shared.config import Settings
from shared.lifecycle import (
    DuplicateSend,
    MessageFacts,
    Move,
    NoSid,
    ProviderMismatch,
    RecordSidFirst,
    Stale,
    Unrecognized,
    judge,
)
from shared.providers.base import StatusUpdate
from shared.queries import q

log = logging.getLogger(__name__)

SOURCES: Final = ("callback", "sweep")
# Payload keys never stored: a message body has no place in the event history.
_SECRET_KEYS: Final = frozenset({"body"})


@dataclass(frozen=True)
class ApplyResult:
    """What one status update did to the database."""

    message_id: UUID | None  # None: no message of ours matched (the raw callback is still kept)
    previous: str | None = None  # status before, when the message is known
    current: str | None = None  # status after
    recorded: bool = False  # False: an exact duplicate callback, already recorded once
    sid_recorded: bool = False  # this update gave the message its provider sid
    duplicate: bool = False  # the update is about a second provider message under our id

    @property
    def known(self) -> bool:
        return self.message_id is not None

    @property
    def changed(self) -> bool:
        return self.previous is not None and self.previous != self.current


async def apply_update(
    conn: AsyncConnection[Any],
    update: StatusUpdate,
    *,
    settings: Settings,
    source: str = "callback",
) -> ApplyResult:
    """Record `update` and move its message forward if it may move, in one transaction.

    Matches by our message id, else by (provider, sid). Out-of-order, duplicate and unknown
    updates are recorded and change nothing else; no outcome raises. A failed or undelivered
    transition raises the final-failure alert (never a resend).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    async with conn.transaction():
        msg = await _lock_message(conn, update)
        if msg is None:
            await _record(conn, None, update, source)
            log.warning(
                "status %s for an unknown message",
                update.raw_status,
                extra={
                    "action": "status_unknown_message",
                    "provider": update.provider,
                    "message_id": str(update.message_id) if update.message_id else None,
                },
            )
            return ApplyResult(message_id=None, recorded=True)
        return await _apply_to(conn, msg, update, settings=settings, source=source)


async def _lock_message(conn: AsyncConnection[Any], update: StatusUpdate) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        if update.message_id is not None:
            await cur.execute(q("messages_lock_by_id"), {"message_id": update.message_id})
            row = await cur.fetchone()
            if row is not None:
                return row
        if update.sid:
            await cur.execute(
                q("messages_lock_by_sid"), {"provider": update.provider, "sid": update.sid}
            )
            return await cur.fetchone()
    return None


async def _apply_to(
    conn: AsyncConnection[Any],
    msg: dict[str, Any],
    update: StatusUpdate,
    *,
    settings: Settings,
    source: str,
) -> ApplyResult:
    """Record `update` for the locked message `msg`, ask `judge`, and carry out its verdict."""
    message_id: UUID = msg["id"]
    current: str = msg["delivery_status"]
    ids = {
        "message_id": str(message_id),
        "conversation_id": str(msg["conversation_id"]),
        "provider": update.provider,
    }
    unchanged = ApplyResult(message_id=message_id, previous=current, current=current)

    if not await _record(conn, message_id, update, source):
        log.info(
            "duplicate status %s ignored",
            update.raw_status,
            extra={"action": "status_duplicate", **ids},
        )
        return unchanged
    unchanged = dataclasses.replace(unchanged, recorded=True)

    facts = MessageFacts(status=current, provider=msg["provider"], sid=msg["provider_sid"])
    judged = judge(facts, update)
    if isinstance(judged, RecordSidFirst):
        sid_recorded = await _record_sid(conn, message_id, update.provider, judged.sid)
        unchanged = dataclasses.replace(unchanged, sid_recorded=sid_recorded)
        verdict = judged.recorded if sid_recorded else judged.taken
        if not sid_recorded and update.message_id == message_id:
            # The provider says this copy is ours, yet another message of ours holds its sid
            # (reconciliation adopted it by time alone): this message will be, or was, sent
            # again. A double send, detected.
            stray = DuplicateSend(stray_sid=judged.sid, recorded_sid=None)
            await _duplicate_send(conn, message_id, stray, update, settings=settings, ids=ids)
            unchanged = dataclasses.replace(unchanged, duplicate=True)
    else:
        verdict = judged

    match verdict:
        case ProviderMismatch():
            log.warning(
                "status %s from another provider than the message's",
                update.raw_status,
                extra={"action": "status_provider_mismatch", **ids},
            )
            return unchanged
        case DuplicateSend():
            await _duplicate_send(conn, message_id, verdict, update, settings=settings, ids=ids)
            return dataclasses.replace(unchanged, duplicate=True)
        case Unrecognized():
            log.info(
                "status %s not in our vocabulary, recorded only",
                update.raw_status,
                extra={"action": "status_unrecognized", **ids},
            )
            return unchanged
        case Stale():
            log.debug(
                "status %s -> %s is not forward, recorded only",
                current,
                verdict.to,
                extra={"action": "status_stale", **ids},
            )
            return unchanged
        case NoSid():
            log.warning(
                "status %s without a provider sid, recorded only",
                verdict.to,
                extra={"action": "status_no_sid", **ids},
            )
            return unchanged
        case Move():
            moved = await _move(conn, message_id, current, verdict, update, source, settings, ids)
            return dataclasses.replace(unchanged, current=verdict.to) if moved else unchanged
        case _:  # pragma: no cover - mypy proves every verdict is handled
            assert_never(verdict)


async def _record_sid(
    conn: AsyncConnection[Any], message_id: UUID, provider: str, sid: str
) -> bool:
    """Give the message its first sid; False when another message already owns that sid."""
    async with conn.cursor() as cur:
        await cur.execute(
            q("messages_record_sid"), {"message_id": message_id, "provider": provider, "sid": sid}
        )
        return cur.rowcount == 1


async def _move(
    conn: AsyncConnection[Any],
    message_id: UUID,
    current: str,
    move: Move,
    update: StatusUpdate,
    source: str,
    settings: Settings,
    ids: dict[str, str],
) -> bool:
    """Carry out a Move: the guarded transition, the failure alert, the `previous -> new` log."""
    async with conn.cursor() as cur:
        await cur.execute(
            q("messages_transition"),
            {
                "message_id": message_id,
                "status": move.to,
                "previous": current,
                "sources": move.sources,
                "terminal": move.terminal,
                "failed": move.failed,
                "error_code": move.error_code,
                "error_message": move.error_message,
                "detail": Jsonb({"source": source, "raw_status": update.raw_status}),
            },
        )
        moved = await cur.fetchone()
    if moved is None:  # pragma: no cover - the row lock makes this unreachable; the guard stays
        log.info(
            "status %s -> %s: moved by someone else first",
            current,
            move.to,
            extra={"action": "status_stale", **ids},
        )
        return False

    if move.failed:
        await alerts.raise_final_failure(
            conn,
            message_id,
            error_code=move.error_code,
            error_category="delivery",
            error_message=move.error_message,
            settings=settings,
        )
    log.info(
        "status %s -> %s",
        current,
        move.to,
        extra={"action": "status_changed", "error_code": move.error_code, **ids},
    )
    return True


async def _duplicate_send(
    conn: AsyncConnection[Any],
    message_id: UUID,
    duplicate: DuplicateSend,
    update: StatusUpdate,
    *,
    settings: Settings,
    ids: dict[str, str],
) -> None:
    """Record a detected double send once per stray sid: event, counter, one operator alert."""
    async with conn.cursor() as cur:
        await cur.execute(
            q("events_record_duplicate_send"),
            {
                "message_id": message_id,
                "provider": update.provider,
                "sid": duplicate.stray_sid,
                "recorded_sid": duplicate.recorded_sid,
                "raw_status": update.raw_status,
            },
        )
        first = await cur.fetchone() is not None
    if not first:
        return
    metrics.child(metrics.DUPLICATE_SENDS, update.provider).inc()
    log.warning(
        "double send detected: status %s for a second provider message under our id",
        update.raw_status,
        extra={"action": "duplicate_send_detected", "sid": duplicate.stray_sid, **ids},
    )
    await alerts.raise_duplicate_send(
        conn,
        message_id,
        provider=update.provider,
        stray_sid=duplicate.stray_sid,
        recorded_sid=duplicate.recorded_sid,
        settings=settings,
    )


async def _record(
    conn: AsyncConnection[Any], message_id: UUID | None, update: StatusUpdate, source: str
) -> bool:
    """Keep the update raw as an event; False when it is an exact duplicate callback."""
    params = {
        "message_id": message_id,
        "raw_status": update.raw_status.strip().lower()[:64] or "(empty)",
        "provider": update.provider,
        "sid": update.sid,
        "error_code": update.error_code,
        "detail": Jsonb({"source": source, "payload": _scrubbed(update.raw)}),
    }
    query = "events_record_callback" if source == "callback" else "events_record_sweep"
    async with conn.cursor() as cur:
        await cur.execute(q(query), params)
        return await cur.fetchone() is not None


def _scrubbed(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if str(k).lower() not in _SECRET_KEYS}
