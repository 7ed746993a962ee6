"""The event types and bodies of customer webhooks (DESIGN section 13): pure, no I/O.

The bodies of real events are built in the database: a message's by the fan-out after commit
(webhook_deliveries_fan_out, sql/queries/webhook_deliveries.sql), an opt-out's by the triggers of
sql/migrations/0008_webhooks.sql; `envelope` and `message_data` build the same shape in Python
(a test event, tests that compare the two).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

# message.<status> for every status a message may reach after pending (not `sending`: the
# contract has no such event), message.received for inbound messages.
MESSAGE_STATUSES: Final = (
    "queued",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "expired",
    "canceled",
    "read",
)
MESSAGE_EVENTS: Final = (*(f"message.{s}" for s in MESSAGE_STATUSES), "message.received")
RECIPIENT_EVENTS: Final = ("recipient.opted_out", "recipient.opted_in")
EVENT_TYPES: Final = (*MESSAGE_EVENTS, *RECIPIENT_EVENTS)
# The `data` of a message.* event, in the order DESIGN section 13 lists them.
MESSAGE_DATA_FIELDS: Final = (
    "id",
    "conversation_id",
    "status",
    "previous_status",
    "to",
    "from",
    "error_code",
    "error_category",
    "error_message",
    "segments",
    "attempts",
    "direction",
)
RECIPIENT_DATA_FIELDS: Final = ("phone_number", "sender_number", "reason")


def unknown_events(names: Iterable[str]) -> list[str]:
    """The names that are no event type, in the order given (empty when all are known)."""
    return [n for n in names if n not in EVENT_TYPES]


def wants(events: Iterable[str], event_type: str) -> bool:
    """Whether an endpoint subscribed to `events` (empty = every type) gets `event_type`."""
    chosen = set(events)
    return not chosen or event_type in chosen


def event_for_status(status: str) -> str | None:
    """The event a message reaching `status` raises (`received` for inbound), or None."""
    if status == "received":
        return "message.received"
    return f"message.{status}" if status in MESSAGE_STATUSES else None


def rfc3339(at: datetime) -> str:
    """`2026-05-01T12:00:00.123456Z`: UTC with microseconds, as the database writes it."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def envelope(event_type: str, occurred_at: datetime, data: Mapping[str, Any]) -> dict[str, Any]:
    """The body of one webhook: {"type", "timestamp", "data"}."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    return {"type": event_type, "timestamp": rfc3339(occurred_at), "data": dict(data)}


def message_data(
    message: Mapping[str, Any], *, status: str, previous_status: str | None
) -> dict[str, Any]:
    """The `data` of a message.* event from an sms_messages row (column names as stored)."""
    return {
        "id": str(message["id"]),
        "conversation_id": str(message["conversation_id"]),
        "status": status,
        "previous_status": previous_status,
        "to": message["to_number"],
        "from": message["from_number"],
        "error_code": message["error_code"],
        "error_category": message["error_category"],
        "error_message": message["error_message"],
        "segments": message["segments"],
        "attempts": message["attempts"],
        "direction": message["direction"],
    }
