"""Every message the simulator accepted, and how many send requests it saw for each content."""

from __future__ import annotations

import itertools
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simulator import segments

SendKey = tuple[str, str, str, str]  # provider, from, to, body


@dataclass(frozen=True)
class Transition:
    """One status change of a message, as its callback reports it."""

    status: str
    error_code: str | None
    at: datetime


@dataclass
class SimMessage:
    """One accepted message as both APIs describe it."""

    sid: str
    provider: str
    account: str
    from_number: str
    to_number: str
    body: str
    status_callback: str | None
    custom_variables: dict[str, str] = field(default_factory=dict)
    message_id: str | None = None  # ours, when the request carried it (callback URL or variables)
    ingress_delayed: bool = False  # held by the ingress_delay fault before the provider saw it
    validity_period: int | None = None  # Twilio's ValidityPeriod as sent (seconds); not rendered
    status: str = "queued"
    error_code: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    sent_at: datetime | None = None
    hung: bool = False  # accepted, but the response was never sent
    seq: int = 0  # order of acceptance; breaks created_at ties in newest-first listings
    segments: int = field(init=False)

    def __post_init__(self) -> None:
        self.segments = segments.count(self.body)

    def move(self, status: str, error_code: str | None = None) -> Transition:
        """Set the provider-side status (the callbacks and the read endpoints report it)."""
        self.status = status
        self.updated_at = datetime.now(UTC)
        if error_code is not None:
            self.error_code = error_code
        if status in ("sent", "delivered", "undelivered") and self.sent_at is None:
            self.sent_at = self.updated_at
        return Transition(status, error_code, self.updated_at)

    @property
    def billed(self) -> bool:
        """Whether the carrier took the message (failed messages are not charged)."""
        return self.sent_at is not None


class Store:
    """In-memory record of accepted messages and of send attempts per content."""

    def __init__(self) -> None:
        self.messages: dict[str, SimMessage] = {}
        self.attempts: Counter[SendKey] = Counter()
        self.outcomes: Counter[str] = Counter()
        self._seq = itertools.count(1)

    def count_request(self, key: SendKey, outcome: str) -> None:
        """Count one send request and what the simulator answered."""
        self.attempts[key] += 1
        self.outcomes[outcome] += 1

    def add(self, message: SimMessage) -> SimMessage:
        message.seq = next(self._seq)
        self.messages[message.sid] = message
        return message

    def newest_first(self, provider: str) -> list[SimMessage]:
        """One provider's messages in its listing order: newest created first."""
        found = [m for m in self.messages.values() if m.provider == provider]
        return sorted(found, key=order_key, reverse=True)

    def page_start(self, found: list[SimMessage], token: str, size: int) -> int | None:
        """Where in `found` (newest first) the page a paging cursor names begins; None if invalid.

        `PA<id>`: the page after that message (everything older); `PB<id>`: the page that ends
        just before it. The providers page by such cursors rather than offsets, so messages
        created while a client pages through shift nothing.
        """
        direction, sid = token[:2], token[2:]
        anchor = self.messages.get(sid)
        if direction not in ("PA", "PB") or anchor is None:
            return None
        key = order_key(anchor)
        if direction == "PA":
            return sum(1 for m in found if order_key(m) >= key)
        return max(sum(1 for m in found if order_key(m) > key) - size, 0)

    def reset(self) -> None:
        self.messages.clear()
        self.attempts.clear()
        self.outcomes.clear()

    def report(self) -> dict[str, Any]:
        """The `GET /_sim/messages` body: accepted messages with per-content counts."""
        accepted: Counter[SendKey] = Counter(
            (m.provider, m.from_number, m.to_number, m.body) for m in self.messages.values()
        )
        rows = []
        for m in self.messages.values():
            key = (m.provider, m.from_number, m.to_number, m.body)
            rows.append(
                {
                    "sid": m.sid,
                    "provider": m.provider,
                    "from": m.from_number,
                    "to": m.to_number,
                    "body": m.body,
                    "status": m.status,
                    "error_code": m.error_code,
                    "created_at": m.created_at.isoformat(),
                    "status_callback": m.status_callback,
                    "custom_variables": m.custom_variables,
                    "message_id": m.message_id,
                    "segments": m.segments,
                    "ingress_delayed": m.ingress_delayed,
                    "validity_period": m.validity_period,
                    "hung": m.hung,
                    "accepted_count": accepted[key],  # > 1 means the same content was sent twice
                    "request_count": self.attempts[key],  # every send request for this content
                }
            )
        return {
            "messages": rows,
            "requests": sum(self.attempts.values()),
            "outcomes": dict(self.outcomes),
        }


def order_key(message: SimMessage) -> tuple[datetime, int]:
    """Creation time, then acceptance order: the key both providers' listings sort on."""
    return (message.created_at, message.seq)


def twilio_sid() -> str:
    return "SM" + secrets.token_hex(16)


def signalwire_id() -> str:
    return str(uuid.uuid4())


def iso_time(value: datetime) -> str:
    """A time as SignalWire writes it: ISO 8601 in UTC with a Z."""
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
