"""A Provider that accepts every message at once, for measuring the dispatcher's own ceiling.

Used only by the bench (in-process dispatch): no network, no SDK, a fake sid per send. It counts
sends per message id so the bench can assert that each message was sent exactly once.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping
from uuid import UUID

from shared.providers.base import (
    CopyLookup,
    RemoteMessage,
    SendRequest,
    SendResult,
    StatusUpdate,
)


class NoopProvider:
    """Accepts instantly; never finds an earlier attempt (none can have reached it unrecorded)."""

    def __init__(self, name: str = "twilio") -> None:
        self.name = name
        self.compares_bodies = True
        self.sends: Counter[UUID] = Counter()
        self._ids = itertools.count(1)

    async def send(self, request: SendRequest) -> SendResult:
        self.sends[request.message_id] += 1
        return SendResult(sid=f"NOOP{next(self._ids):028d}", raw_status="queued")

    async def fetch(self, sid: str) -> RemoteMessage:
        raise NotImplementedError("the no-op provider keeps no messages")

    async def find_copies(self, lookup: CopyLookup) -> list[RemoteMessage]:
        return []

    def verify_signature(self, url: str, raw_body: bytes, headers: Mapping[str, str]) -> bool:
        return False

    def parse_callback(
        self, raw_body: bytes, content_type: str, query: Mapping[str, str]
    ) -> StatusUpdate:
        raise NotImplementedError("the no-op provider sends no callbacks")

    async def aclose(self) -> None:
        return None
