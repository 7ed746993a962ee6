"""Outbound messages: what a valid one is, the transactional enqueue, the read of its history."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import phonenumbers
import psycopg
from phonenumbers import PhoneNumberType
from psycopg import AsyncConnection
from psycopg.rows import class_row, dict_row

from shared.config import Settings
from shared.errors import SmsOutboxError
from shared.logs import mask_number
from shared.queries import q
from shared.segments import count_segments

log = logging.getLogger(__name__)

MAX_BODY_CHARS: Final = 1600
# Longer input is not a phone number; phonenumbers need not look at it.
MAX_NUMBER_INPUT: Final = 64
# Number types that can receive an SMS everywhere. VOIP numbers often can (and a provider refuses
# the rest with a permanent error), so they are accepted rather than refusing real users.
SMS_CAPABLE: Final = frozenset(
    {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE, PhoneNumberType.VOIP}
)
# By country calling code, more types that can. NANP: toll-free numbers can be text-enabled, and
# 5XX personal-communication numbers (Twilio's test numbers among them) are routed like mobiles.
SMS_CAPABLE_BY_COUNTRY: Final = {
    1: frozenset({PhoneNumberType.TOLL_FREE, PhoneNumberType.PERSONAL_NUMBER}),
}
_TYPE_NAMES: Final = {
    value: name.lower() for name, value in vars(PhoneNumberType).items() if name.isupper()
}
# The unique constraint behind idempotency: UNIQUE (api_key_id, idempotency_key).
IDEMPOTENCY_CONSTRAINT: Final = "sms_messages_api_key_id_idempotency_key_key"


class IdempotencyKeyReused(SmsOutboxError):
    """The idempotency key already created a message for a different request."""


class ConversationMismatch(SmsOutboxError):
    """The named conversation belongs to another (from, to) pair."""


@dataclass(frozen=True)
class Problem:
    """One validation error: the field, a stable code, and a readable message."""

    field: str
    code: str
    message: str


@dataclass(frozen=True)
class EnqueueResult:
    """A created (or, for a replayed idempotency key, the earlier) message."""

    id: UUID
    conversation_id: UUID
    to_number: str
    from_number: str
    provider: str
    segments: int
    encoding: str
    created_at: datetime
    request_hash: str | None
    replayed: bool = False


def check_recipient(raw: str, settings: Settings, field: str = "to") -> tuple[str, list[Problem]]:
    """`raw` as E.164 and the problems that forbid texting it (none when it may be texted)."""
    try:
        if len(raw) > MAX_NUMBER_INPUT:
            raise phonenumbers.NumberParseException(phonenumbers.NumberParseException.TOO_LONG, "")
        number = phonenumbers.parse(raw, settings.default_region)
    except phonenumbers.NumberParseException:
        return "", [Problem(field, "invalid_number", "not a phone number")]
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not phonenumbers.is_valid_number(number):
        return e164, [Problem(field, "invalid_number", "not a valid phone number")]
    problems: list[Problem] = []
    region = phonenumbers.region_code_for_number(number)
    if settings.allowed_countries and region not in settings.allowed_countries:
        allowed = ", ".join(sorted(settings.allowed_countries))
        problems.append(
            Problem(field, "country_not_allowed", f"country {region} is not allowed ({allowed})")
        )
    kind = phonenumbers.number_type(number)
    capable = SMS_CAPABLE | SMS_CAPABLE_BY_COUNTRY.get(number.country_code or 0, frozenset())
    if kind not in capable:
        name = _TYPE_NAMES.get(kind, "unknown")
        problems.append(
            Problem(field, "number_type_not_allowed", f"a {name} number cannot receive SMS")
        )
    return e164, problems


def normalize_body(raw: str) -> str:
    """The body as stored: Windows line ends (CRLF) become newlines; nothing else changes."""
    return raw.replace("\r\n", "\n")


def check_body(body: str, field: str = "body") -> list[Problem]:
    """Problems of a (normalized) body: empty, too long, control or unencodable characters."""
    if not body.strip():
        return [Problem(field, "empty", "must contain text")]
    problems: list[Problem] = []
    if len(body) > MAX_BODY_CHARS:
        problems.append(
            Problem(field, "too_long", f"{len(body)} characters, at most {MAX_BODY_CHARS}")
        )
    controls = [
        i for i, c in enumerate(body) if unicodedata.category(c) == "Cc" and c not in "\n\t"
    ]
    if controls:
        first = controls[0]
        problems.append(
            Problem(
                field,
                "control_characters",
                f"control character U+{ord(body[first]):04X} at position {first}; "
                "only newline and tab are allowed",
            )
        )
    if any(unicodedata.category(c) == "Cs" for c in body):
        problems.append(Problem(field, "invalid_characters", "contains unpaired surrogates"))
    return problems


async def enqueue(
    conn: AsyncConnection[Any],
    *,
    api_key_id: int | None,
    to_number: str,
    from_number: str,
    provider: str,
    body: str,
    conversation_id: UUID | None,
    idempotency_key: str | None,
    request_hash: str | None,
    request_id: str | None,
) -> EnqueueResult:
    """Write the message, its outbox row and its 'created' event in one transaction.

    `conn` must not be inside a transaction: the commit happens here, so the caller may wake the
    dispatcher as soon as this returns. A second request with the same idempotency key returns the
    first one's message (replayed=True), or raises IdempotencyKeyReused when its request differs.
    """
    if (idempotency_key is None) != (request_hash is None):
        raise ValueError("idempotency_key and request_hash go together")
    if idempotency_key is not None and api_key_id is None:
        raise ValueError("an idempotency key is scoped to an API key")
    segments, encoding = count_segments(body)
    params = {
        "api_key_id": api_key_id,
        "to_number": to_number,
        "from_number": from_number,
        "provider": provider,
        "body": body,
        "segments": segments,
        "encoding": encoding,
        "idempotency_key": idempotency_key,
        "request_hash": request_hash,
        "request_id": request_id,
    }
    try:
        if conn.autocommit and conversation_id is None:
            # messages_enqueue is one statement, so atomic on its own: one round trip, no
            # BEGIN/COMMIT. A named conversation needs the check below inside a transaction.
            created = await _enqueue_statement(conn, params)
        else:
            async with conn.transaction():
                created = await _enqueue_statement(conn, params)
                if conversation_id is not None and created.conversation_id != conversation_id:
                    raise ConversationMismatch(
                        f"conversation {conversation_id} is for another pair"
                    )
    except psycopg.errors.UniqueViolation as e:
        # A concurrent request with the same key committed first (we waited for it on the index).
        if e.diag.constraint_name != IDEMPOTENCY_CONSTRAINT or idempotency_key is None:
            raise
        assert api_key_id is not None and request_hash is not None
        earlier = await find_by_idempotency_key(conn, api_key_id, idempotency_key, request_hash)
        if earlier is None:  # pragma: no cover - the violating row is committed, so it is visible
            raise
        return earlier
    log.info(
        "message created",
        extra={
            "action": "message_created",
            "message_id": str(created.id),
            "conversation_id": str(created.conversation_id),
            "to": mask_number(created.to_number),
            "provider": created.provider,
            "segments": created.segments,
        },
    )
    return created


async def _enqueue_statement(conn: AsyncConnection[Any], params: dict[str, Any]) -> EnqueueResult:
    async with conn.cursor(row_factory=class_row(EnqueueResult)) as cur:
        await cur.execute(q("messages_enqueue"), params)
        created = await cur.fetchone()
    assert created is not None
    return created


async def find_by_idempotency_key(
    conn: AsyncConnection[Any], api_key_id: int, idempotency_key: str, request_hash: str
) -> EnqueueResult | None:
    """The message this key created (replayed=True), None if none; IdempotencyKeyReused if the
    request differs."""
    async with conn.transaction():
        async with conn.cursor(row_factory=class_row(EnqueueResult)) as cur:
            await cur.execute(
                q("messages_by_idempotency_key"),
                {"api_key_id": api_key_id, "idempotency_key": idempotency_key},
            )
            found = await cur.fetchone()
    if found is None:
        return None
    if found.request_hash != request_hash:
        raise IdempotencyKeyReused(f"idempotency key already used for message {found.id}")
    return EnqueueResult(**{**vars(found), "replayed": True})


async def conversation_pair(
    conn: AsyncConnection[Any], conversation_id: UUID
) -> tuple[str, str] | None:
    """(from_number, to_number) of a conversation, or None when it does not exist."""
    cur = await conn.execute(q("conversations_lookup"), {"id": conversation_id})
    row = await cur.fetchone()
    return None if row is None else (row[1], row[2])


async def get_message(conn: AsyncConnection[Any], message_id: UUID) -> dict[str, Any] | None:
    """The sms_messages row as a dict, or None."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q("messages_read_one"), {"id": message_id})
        return await cur.fetchone()


async def get_events(conn: AsyncConnection[Any], message_id: UUID) -> list[dict[str, Any]]:
    """The message's events, oldest first."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q("message_events_timeline"), {"message_id": message_id})
        return await cur.fetchall()


@dataclass(frozen=True)
class NewMessage:
    """One valid message of a batch: numbers in E.164, body normalized, sender already chosen."""

    to_number: str
    from_number: str
    provider: str
    body: str
    conversation_id: UUID | None = None


class BatchConversationMismatch(ConversationMismatch):
    """Item `index` of a batch named a conversation of another (from, to) pair."""

    def __init__(self, index: int, conversation_id: UUID) -> None:
        super().__init__(f"item {index}: conversation {conversation_id} is for another pair")
        self.index = index


async def enqueue_many(
    conn: AsyncConnection[Any],
    items: Sequence[NewMessage],
    *,
    api_key_id: int | None,
    request_id: str | None,
) -> list[EnqueueResult]:
    """Write every message, its outbox row and its 'created' event in one transaction and one
    statement (messages_enqueue_batch); the results in the order of `items`.

    All or nothing: an item whose named conversation turns out to be another pair's raises
    BatchConversationMismatch and nothing is written. `conn` must not be inside a transaction:
    the commit happens here, so the caller may wake the dispatcher as soon as this returns.
    """
    if not items:
        return []
    counted = [count_segments(item.body) for item in items]
    params = {
        "from_numbers": [item.from_number for item in items],
        "to_numbers": [item.to_number for item in items],
        "bodies": [item.body for item in items],
        "providers": [item.provider for item in items],
        "segments": [c[0] for c in counted],
        "encodings": [c[1] for c in counted],
        "api_key_id": api_key_id,
        "request_id": request_id,
    }
    async with conn.transaction():
        async with conn.cursor(row_factory=class_row(EnqueueResult)) as cur:
            await cur.execute(q("messages_enqueue_batch"), params)
            created = await cur.fetchall()
        if len(created) != len(items):  # pragma: no cover - one message per input row
            raise SmsOutboxError(f"batch wrote {len(created)} of {len(items)} messages")
        for index, (item, row) in enumerate(zip(items, created, strict=True)):
            if item.conversation_id is not None and row.conversation_id != item.conversation_id:
                raise BatchConversationMismatch(index, item.conversation_id)
    log.info(
        "batch created",
        extra={"action": "batch_created", "count": len(created)},
    )
    if log.isEnabledFor(logging.DEBUG):
        for row in created:
            log.debug(
                "message created",
                extra={
                    "action": "message_created",
                    "message_id": str(row.id),
                    "conversation_id": str(row.conversation_id),
                    "to": mask_number(row.to_number),
                    "provider": row.provider,
                    "segments": row.segments,
                },
            )
    return created
