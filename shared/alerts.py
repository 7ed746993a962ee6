"""Final-failure and operator alerts: kept in sms_alerts, delivered by the dispatcher.

Both functions run inside the caller's transaction, so the alert exists exactly when the failure
that caused it was committed.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import phonenumbers
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from shared.config import Settings
from shared.lifecycle import FAILED, sources_for
from shared.queries import q

log = logging.getLogger(__name__)


def masked_recipient(number: str) -> str:
    """'+14155550123' -> '+1*******0123', always: alerts leave our systems, whatever the logs do."""
    try:
        cc = str(phonenumbers.parse(number).country_code)
    except phonenumbers.NumberParseException:
        return "***"
    digits = number.lstrip("+")
    if len(digits) <= len(cc) + 4:
        return "***"
    return "+" + cc + "*" * (len(digits) - len(cc) - 4) + digits[-4:]


async def raise_final_failure(
    conn: AsyncConnection[Any],
    message_id: UUID,
    *,
    error_code: str | None,
    error_category: str,
    error_message: str | None,
    settings: Settings,
    now: datetime | None = None,
    status: str = "failed",
) -> None:
    """Record a message's final failure inside the caller's transaction (one alert per message).

    Moves the message to `status` (`failed`, or `expired`: its validity ended before a provider
    took it) when it may still move there (a message a callback already made
    `failed` or `undelivered` keeps its status); raises one `message_failed` alert for a message
    that ended failed/undelivered; logs it at ERROR once. `now` is for tests (default: DB clock).
    """
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            q("messages_fail"),
            {
                "now": now,
                "message_id": message_id,
                "status": status,
                "sources": sources_for(status),
                "error_code": error_code,
                "error_category": error_category,
                "error_message": error_message,
            },
        )
        moved = await cur.fetchone()
        await cur.execute(q("messages_alert_facts"), {"message_id": message_id})
        msg = await cur.fetchone()
        if msg is None or msg["delivery_status"] not in FAILED | {"expired"}:
            log.warning(
                "final failure not recorded: message is not failed",
                extra={
                    "action": "final_failure_skipped",
                    "message_id": str(message_id),
                    "status": None if msg is None else msg["delivery_status"],
                },
            )
            return
        if moved is not None:
            log.info(
                "%s -> %s",
                moved["prior_status"],
                status,
                extra={"action": "transition", "message_id": str(message_id)},
            )
        payload = {
            "kind": "message_failed",
            "message_id": str(msg["id"]),
            "conversation_id": str(msg["conversation_id"]),
            "from": msg["from_number"],
            "to": masked_recipient(msg["to_number"]),
            "provider": msg["provider"],
            "status": msg["delivery_status"],
            "error": {"code": error_code, "category": error_category, "message": error_message},
            "attempts": msg["attempts"],
        }
        alert_id = await _insert(
            cur,
            kind="message_failed",
            message_id=message_id,
            provider=msg["provider"],
            error_code=error_code,
            error_category=error_category,
            error_message=error_message,
            payload=payload,
            settings=settings,
            now=now,
        )
        if alert_id is None:
            return  # already alerted for this message
        log.error(
            "message failed",
            extra={
                "action": "final_failure",
                "message_id": str(message_id),
                "conversation_id": str(msg["conversation_id"]),
                "request_id": msg["request_id"],
                "provider": msg["provider"],
                "attempts": msg["attempts"],
                "to": masked_recipient(msg["to_number"]),
                "error_code": error_code,
                "error_category": error_category,
                "error": error_message,
                "alert_id": alert_id,
            },
        )


async def raise_provider_config_alert(
    conn: AsyncConnection[Any],
    provider: str,
    *,
    error_code: str | None,
    error_message: str | None,
    paused_until: datetime,
    settings: Settings,
    now: datetime | None = None,
) -> int | None:
    """Tell the operator a provider is paused by a configuration error; the new alert's id."""
    payload = {
        "kind": "provider_config",
        "provider": provider,
        "error": {"code": error_code, "category": "config", "message": error_message},
        "paused_until": paused_until.isoformat(),
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        alert_id = await _insert(
            cur,
            kind="provider_config",
            message_id=None,
            provider=provider,
            error_code=error_code,
            error_category="config",
            error_message=error_message,
            payload=payload,
            settings=settings,
            now=now,
        )
    log.error(
        "provider paused: configuration error",
        extra={
            "action": "provider_paused",
            "provider": provider,
            "error_code": error_code,
            "error_category": "config",
            "error": error_message,
            "paused_until": paused_until.isoformat(),
            "alert_id": alert_id,
        },
    )
    return alert_id


async def raise_duplicate_send(
    conn: AsyncConnection[Any],
    message_id: UUID,
    *,
    provider: str,
    stray_sid: str,
    recorded_sid: str | None,
    settings: Settings,
) -> int | None:
    """Tell the operator one message reached the provider twice (one alert per message).

    Nothing can be unsent; the operator learns which message and which sids, to explain it to the
    recipient's owner or the provider. The new alert's id, or None when already alerted.
    """
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q("messages_alert_facts"), {"message_id": message_id})
        msg = await cur.fetchone()
        if msg is None:
            return None
        payload = {
            "kind": "duplicate_send",
            "message_id": str(message_id),
            "conversation_id": str(msg["conversation_id"]),
            "from": msg["from_number"],
            "to": masked_recipient(msg["to_number"]),
            "provider": provider,
            "recorded_sid": recorded_sid,
            "duplicate_sid": stray_sid,
        }
        alert_id = await _insert(
            cur,
            kind="duplicate_send",
            message_id=message_id,
            provider=provider,
            error_code=None,
            error_category="duplicate_send",
            error_message=f"provider message {stray_sid} is a second copy of {recorded_sid}",
            payload=payload,
            settings=settings,
            now=None,
        )
    if alert_id is not None:
        log.error(
            "double send detected",
            extra={
                "action": "duplicate_send_alert",
                "message_id": str(message_id),
                "provider": provider,
                "sid": stray_sid,
                "recorded_sid": recorded_sid,
                "alert_id": alert_id,
            },
        )
    return alert_id


async def raise_webhook_endpoint_disabled(
    conn: AsyncConnection[Any],
    *,
    endpoint_id: int,
    api_key_id: int,
    url: str,
    reason: str,
    failing_since: datetime | None,
    dropped: int,
    settings: Settings,
    now: datetime | None = None,
) -> int | None:
    """Tell the operator a customer's webhook endpoint was disabled after failing too long.

    The URL goes out without its query string or credentials (they may carry the customer's
    tokens); never the secret. The new alert's id.
    """
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    payload = {
        "kind": "webhook_endpoint_disabled",
        "endpoint_id": endpoint_id,
        "api_key_id": api_key_id,
        "url": shown + parts.path,
        "reason": reason,
        "failing_since": None if failing_since is None else failing_since.isoformat(),
        "dropped_deliveries": dropped,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        alert_id = await _insert(
            cur,
            kind="webhook_endpoint_disabled",
            message_id=None,
            provider=None,
            error_code=None,
            error_category="webhook",
            error_message=reason,
            payload=payload,
            settings=settings,
            now=now,
        )
    log.error(
        "webhook endpoint disabled",
        extra={
            "action": "webhook_endpoint_disabled",
            "endpoint_id": endpoint_id,
            "api_key_id": api_key_id,
            "error": reason,
            "count": dropped,
            "alert_id": alert_id,
        },
    )
    return alert_id


async def _insert(
    cur: Any,
    *,
    kind: str,
    message_id: UUID | None,
    provider: str | None,
    error_code: str | None,
    error_category: str | None,
    error_message: str | None,
    payload: dict[str, Any],
    settings: Settings,
    now: datetime | None,
) -> int | None:
    deliver = bool(settings.alert_webhook_url)
    await cur.execute(
        q("alerts_insert"),
        {
            "now": now,
            "kind": kind,
            "message_id": message_id,
            "provider": provider,
            "error_code": error_code,
            "error_category": error_category,
            "error_message": error_message,
            "payload": Jsonb(payload),
            "deliver": deliver,
        },
    )
    row = await cur.fetchone()
    if row is None:
        return None
    if deliver:
        # Delivered at commit, coalesced with any other wake-up of the same transaction.
        await cur.execute(q("outbox_wakeup_notify"))
    return int(row["id"])
