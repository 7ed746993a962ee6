"""The one interface every provider implements, and the error it raises."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from uuid import UUID

from shared.errors import SmsOutboxError


class Category(enum.StrEnum):
    """Outcome class of a failed provider call; each comment says what the dispatcher does."""

    RETRYABLE = "retryable"  # 429, refused before the request left, "try later"
    PERMANENT = "permanent"  # invalid/unreachable number, opted out, body refused: never retry
    AMBIGUOUS = "ambiguous"  # timeout/reset after the request left, 5xx: it may have been sent
    CONFIG = "config"  # bad credentials, sender unknown at the provider: pause, alert operator


class ProviderError(SmsOutboxError):
    """A provider call failed; `category` decides what the dispatcher does next."""

    def __init__(
        self,
        category: Category,
        reason: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
        opted_out: bool = False,
    ) -> None:
        super().__init__(f"{category.value}: {reason}" + (f" (code {code})" if code else ""))
        self.category = category
        self.reason = reason
        self.code = code
        self.http_status = http_status
        self.retry_after = retry_after
        # The provider refused because the recipient opted out of the sender (Twilio 21610): the
        # recipient is suppressed for that sender, not just this message failed.
        self.opted_out = opted_out


@dataclass(frozen=True)
class SendRequest:
    message_id: UUID
    from_number: str
    to_number: str
    body: str
    status_callback_url: str
    # Seconds the message may still wait at the provider before it must not be sent (None: no
    # limit). Providers whose API takes a validity pass it on (Twilio's ValidityPeriod).
    validity_seconds: int | None = None


@dataclass(frozen=True)
class SendResult:
    sid: str
    raw_status: str


@dataclass(frozen=True)
class RemoteMessage:
    """A message as the provider reports it (fetch and reconciliation lookups)."""

    sid: str
    raw_status: str
    status: str | None  # our lifecycle status, None when the provider's word is unknown to us
    from_number: str
    to_number: str
    body: str | None
    created_at: datetime | None
    error_code: str | None = None


@dataclass(frozen=True)
class CopyLookup:
    """What reconciliation asks a provider: did a message like this reach you in this window?"""

    from_number: str
    to_number: str
    body: str
    segments: int | None
    since: datetime  # a copy was created no earlier than this (clock skew already allowed for)
    until: datetime  # ... and no later than this (the attempt's timeout plus the settle window)


@dataclass(frozen=True)
class StatusUpdate:
    """One parsed status callback."""

    provider: str
    message_id: UUID | None  # ours, from the callback URL / custom_variables, when present
    sid: str | None
    raw_status: str
    status: str | None  # our lifecycle status, None when unknown
    error_code: str | None
    raw: Mapping[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    """What the dispatcher and the webhook endpoints need from a provider."""

    name: str
    # Whether find_copies matches the body (Twilio) or only the pair (SignalWire's log has none).
    compares_bodies: bool

    async def send(self, request: SendRequest) -> SendResult:
        """Submit one message; raise ProviderError with its category on failure."""
        ...

    async def fetch(self, sid: str) -> RemoteMessage:
        """The provider's current view of one message."""
        ...

    async def find_copies(self, lookup: CopyLookup) -> list[RemoteMessage]:
        """Every message the provider created that may be the copy `lookup` describes, oldest
        first: all pages are read (no fixed cap); the strongest evidence the provider's read API
        offers decides a match. Raises ProviderError (ambiguous) when it cannot look at them all.
        """
        ...

    def verify_signature(self, url: str, raw_body: bytes, headers: Mapping[str, str]) -> bool:
        """Whether a callback's signature is valid for the public URL it was sent to."""
        ...

    def parse_callback(
        self, raw_body: bytes, content_type: str, query: Mapping[str, str]
    ) -> StatusUpdate:
        """Read a status callback (already verified) into a StatusUpdate."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class NewestFirst:
    """Reading a provider's newest-first listing for a reconciliation window, entry by entry.

    `judge(created)` says "in" (inside the window: compare it), "older" (skip it) or "done" (a
    whole page in a row was older than the window: the rest is older still). Past `limit` entries
    the lookup is inconclusive (a ProviderError, looked up again later), never a reason to resend.
    """

    def __init__(self, earliest: datetime, *, page_size: int, limit: int, what: str) -> None:
        self.earliest = earliest
        self.page_size = page_size
        self.limit = limit
        self.what = what
        self.seen = 0
        self.older = 0

    def judge(self, created: datetime | None) -> str:
        self.seen += 1
        if self.seen > self.limit:
            raise ProviderError(
                Category.AMBIGUOUS, f"lookup inconclusive: over {self.limit} {self.what}"
            )
        if created is not None and created < self.earliest:
            self.older += 1
            return "done" if self.older >= self.page_size else "older"
        self.older = 0
        return "in"


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = now or datetime.now(UTC)
    return max((when - current).total_seconds(), 0.0)


def header(headers: Mapping[str, str], name: str) -> str:
    """A request header's value by case-insensitive name; "" when absent."""
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), "")
