"""Every message the simulator accepted, and how many send requests it saw for each content."""

from __future__ import annotations

import math
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SendKey = tuple[str, str, str, str]  # provider, from, to, body


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
    status: str = "queued"
    error_code: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    sent_at: datetime | None = None
    hung: bool = False  # accepted, but the response was never sent

    @property
    def segments(self) -> int:
        """GSM-7 fits 160 characters (153 per part), anything else UCS-2 fits 70 (67 per part)."""
        gsm = all(ord(c) < 128 for c in self.body)
        single, part = (160, 153) if gsm else (70, 67)
        n = len(self.body)
        return 1 if n <= single else math.ceil(n / part)

    def move(self, status: str, error_code: str | None = None) -> None:
        """Set the provider-side status (the callbacks and the read endpoints report it)."""
        self.status = status
        self.updated_at = datetime.now(UTC)
        if error_code is not None:
            self.error_code = error_code
        if status in ("sent", "delivered", "undelivered") and self.sent_at is None:
            self.sent_at = self.updated_at


class Store:
    """In-memory record of accepted messages and of send attempts per content."""

    def __init__(self) -> None:
        self.messages: dict[str, SimMessage] = {}
        self.attempts: Counter[SendKey] = Counter()
        self.outcomes: Counter[str] = Counter()

    def count_request(self, key: SendKey, outcome: str) -> None:
        """Count one send request and what the simulator answered."""
        self.attempts[key] += 1
        self.outcomes[outcome] += 1

    def add(self, message: SimMessage) -> SimMessage:
        self.messages[message.sid] = message
        return message

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


def twilio_sid() -> str:
    return "SM" + secrets.token_hex(16)


def signalwire_id() -> str:
    return str(uuid.uuid4())
