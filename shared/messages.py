"""Outbound messages in the database: the transactional enqueue and the read of their history."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import class_row, dict_row

from shared.errors import SmsOutboxError
from shared.logs import annotate, mask_number
from shared.queries import q
from shared.segments import count_segments
from shared.validation import DEFAULT_PRIORITY

log = logging.getLogger(__name__)

# The unique constraint behind idempotency: UNIQUE (api_key_id, idempotency_key).
IDEMPOTENCY_CONSTRAINT: Final = "sms_messages_api_key_id_idempotency_key_key"


class IdempotencyKeyReused(SmsOutboxError):
    """The idempotency key already created a message for a different request."""


class ConversationMismatch(SmsOutboxError):
    """The named conversation belongs to another (from, to) pair."""


class RecipientsOptedOut(SmsOutboxError):
    """Recipients of the request opted out of their sender (sms_suppressions): nothing was written.

    `ordinals` are the 0-based indexes of the refused items (always [0] for a single send).
    """

    def __init__(self, ordinals: list[int]) -> None:
        super().__init__(f"{len(ordinals)} recipient(s) opted out of their sender")
        self.ordinals = ordinals


class RecipientLimitReached(SmsOutboxError):
    """Recipients of the request would pass the key's recipient_hourly_limit: nothing was written.

    `ordinals` are the 0-based indexes of the first item to each such recipient, in request order.
    """

    def __init__(self, ordinals: list[int]) -> None:
        super().__init__(f"{len(ordinals)} recipient(s) over the key's hourly limit")
        self.ordinals = ordinals


class CommitFailed(SmsOutboxError):
    """A group's COMMIT raised (its cause says why): when the connection was lost, whether the
    group was committed is unknown."""


class BatchConversationMismatch(ConversationMismatch):
    """Item `index` of a batch named a conversation of another (from, to) pair."""

    def __init__(self, index: int, conversation_id: UUID) -> None:
        super().__init__(f"item {index}: conversation {conversation_id} is for another pair")
        self.index = index


@dataclass(frozen=True)
class NewMessage:
    """One valid message to write: numbers in E.164, body normalized, sender already chosen,
    schedule checked (priority high/normal/low; expires_at absolute, after send_at)."""

    to_number: str
    from_number: str
    provider: str
    body: str
    conversation_id: UUID | None = None
    priority: str = DEFAULT_PRIORITY
    send_at: datetime | None = None
    expires_at: datetime | None = None


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
    priority: str
    send_at: datetime | None
    expires_at: datetime | None
    replayed: bool = False


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
    priority: str = DEFAULT_PRIORITY,
    send_at: datetime | None = None,
    expires_at: datetime | None = None,
    recipient_limit: int | None = None,
) -> EnqueueResult:
    """Write the message, its outbox row and its 'created' event in one transaction.

    `conn` must not be inside a transaction: the commit happens here, so the caller may wake the
    dispatcher as soon as this returns. A second request with the same idempotency key returns the
    first one's message (replayed=True), or raises IdempotencyKeyReused when its request differs.
    A recipient who opted out of the sender raises RecipientsOptedOut([0]) and writes nothing; so
    does RecipientLimitReached([0]) when this message would take the key's messages to the
    recipient in the trailing hour past `recipient_limit` (its recipient_hourly_limit).
    """
    if (idempotency_key is None) != (request_hash is None):
        raise ValueError("idempotency_key and request_hash go together")
    if idempotency_key is not None and api_key_id is None:
        raise ValueError("an idempotency key is scoped to an API key")
    item = NewMessage(
        to_number, from_number, provider, body, conversation_id, priority, send_at, expires_at
    )

    async def write() -> EnqueueResult:
        (created,) = await _write(
            conn,
            [item],
            api_key_id=api_key_id,
            request_id=request_id,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            recipient_limit=recipient_limit,
        )
        return created

    try:
        if conn.autocommit and conversation_id is None:
            # messages_enqueue is one statement, so atomic on its own: one round trip, no
            # BEGIN/COMMIT (with a recipient limit too: the statement takes the recipients'
            # locks, which its commit releases). A named conversation needs a transaction.
            created = await write()
        else:
            async with conn.transaction():
                created = await write()
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
    _log_created(created, logging.INFO)
    return created


async def enqueue_many(
    conn: AsyncConnection[Any],
    items: Sequence[NewMessage],
    *,
    api_key_id: int | None,
    request_id: str | None,
    recipient_limit: int | None = None,
) -> list[EnqueueResult]:
    """Write every message, its outbox row and its 'created' event in one transaction and one
    statement; the results in the order of `items`.

    All or nothing: an item whose named conversation turns out to be another pair's raises
    BatchConversationMismatch and nothing is written; so do recipients who opted out of their
    sender (RecipientsOptedOut names every such item) and, with `recipient_limit` (the key's
    recipient_hourly_limit), recipients the batch would take past it (RecipientLimitReached).
    `conn` must not be inside a transaction: the commit happens here, so the caller may wake the
    dispatcher as soon as this returns.
    """
    if not items:
        return []

    async def write() -> list[EnqueueResult]:
        return await _write(
            conn,
            items,
            api_key_id=api_key_id,
            request_id=request_id,
            recipient_limit=recipient_limit,
        )

    if conn.autocommit and recipient_limit is not None and not _names_conversations(items):
        # The statement (which takes the recipients' locks) in its own implicit transaction: one
        # round trip, as enqueue's. (Without a limit the batch keeps its explicit transaction: two
        # round trips more per batch, nothing worth changing on its own.)
        created = await write()
    else:
        async with conn.transaction():
            created = await write()
            for index, (item, row) in enumerate(zip(items, created, strict=True)):
                if item.conversation_id is not None and row.conversation_id != item.conversation_id:
                    raise BatchConversationMismatch(index, item.conversation_id)
    if not annotate(outcome="batch_created", count=len(created)):
        log.info("batch created", extra={"action": "batch_created", "count": len(created)})
    if log.isEnabledFor(logging.DEBUG):
        for row in created:
            _log_created(row, logging.DEBUG)
    return created


@dataclass(frozen=True)
class Pending:
    """One POST /sms/send's message as a group commit writes it: the row and what its request
    binds (enqueue's arguments)."""

    message: NewMessage
    api_key_id: int | None
    idempotency_key: str | None
    request_hash: str | None
    request_id: str | None
    recipient_limit: int | None = None


async def enqueue_pending(conn: AsyncConnection[Any], row: Pending) -> EnqueueResult:
    """enqueue of one request's Pending row: its own transaction."""
    m = row.message
    return await enqueue(
        conn,
        api_key_id=row.api_key_id,
        to_number=m.to_number,
        from_number=m.from_number,
        provider=m.provider,
        body=m.body,
        conversation_id=m.conversation_id,
        idempotency_key=row.idempotency_key,
        request_hash=row.request_hash,
        request_id=row.request_id,
        priority=m.priority,
        send_at=m.send_at,
        expires_at=m.expires_at,
        recipient_limit=row.recipient_limit,
    )


# A row's answer in a group: its message, or the refusal that wrote nothing for it.
Outcome = EnqueueResult | RecipientsOptedOut | RecipientLimitReached
BeforeCommit = Callable[[AsyncConnection[Any], Sequence[Pending]], Awaitable[None]]
# Scoped to the group's transaction (is_local): the pooled connection keeps its own setting.
_GROUP_LOCK_TIMEOUT: Final = "SELECT set_config('lock_timeout', %s, true)"


async def enqueue_group(
    conn: AsyncConnection[Any],
    rows: Sequence[Pending],
    *,
    lock_timeout_ms: int,
    before_commit: BeforeCommit | None = None,
) -> list[Outcome]:
    """Write the rows of many requests in ONE transaction (one commit) with ONE statement,
    messages_enqueue_group (each row with its own api key, request id and limit), pipelined: one
    round trip for the statements, one for the commit. The answers in the order of `rows`.

    A refusal (opted out, over the recipient limit) writes nothing for its row and is its answer;
    the others are written. Any error before the commit (an idempotency key another transaction
    committed, a wait for a lock longer than `lock_timeout_ms`, a conversation that is another
    pair's, a lost connection) means nothing is written, and is raised: the caller writes each
    row alone to find whose it was. An error of the COMMIT itself is raised as CommitFailed.
    `conn` must not be in a transaction; `before_commit` runs after the statements (tests).
    """
    if not rows:
        return []
    params = _group_params(rows)
    outcomes: list[Outcome] = []
    committing = False
    try:
        async with conn.pipeline(), conn.transaction():
            await conn.execute(_GROUP_LOCK_TIMEOUT, (f"{lock_timeout_ms}ms",))
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(q("messages_enqueue_group"), params)
                answer = await cur.fetchall()
            if len(answer) != len(rows):  # pragma: no cover - one answer per row, each alone
                raise SmsOutboxError(f"enqueue answered {len(answer)} of {len(rows)} rows")
            for row, found in zip(rows, answer, strict=True):
                try:  # each row is its own request's one message: its ordinal there is 1
                    (created,) = _answer([{**found, "ord": 1}], 1)
                except (RecipientsOptedOut, RecipientLimitReached) as refused:
                    outcomes.append(refused)
                else:
                    wanted = row.message.conversation_id
                    if wanted is not None and created.conversation_id != wanted:
                        raise ConversationMismatch(f"conversation {wanted} is for another pair")
                    outcomes.append(created)
            if before_commit is not None:
                await before_commit(conn, rows)
            committing = True  # the block's end sends COMMIT
    except Exception as e:
        if committing:
            raise CommitFailed("the group's commit failed") from e
        raise
    return outcomes


async def _write(
    conn: AsyncConnection[Any],
    items: Sequence[NewMessage],
    *,
    api_key_id: int | None,
    request_id: str | None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    recipient_limit: int | None = None,
) -> list[EnqueueResult]:
    """Run messages_enqueue, the enqueue statement of one request, for `items`, all or nothing;
    with a `recipient_limit`, the statement itself locks the key's recipients and counts their
    hour."""
    if idempotency_key is not None and len(items) != 1:
        raise ValueError("an idempotency key names one message")
    if recipient_limit is not None and api_key_id is None:
        raise ValueError("a recipient limit is an API key's")
    params = {
        **_columns(items, [idempotency_key] * len(items), [request_hash] * len(items)),
        "api_key_id": api_key_id,
        "request_id": request_id,
        "recipient_limit": recipient_limit,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q("messages_enqueue"), params)
        rows = await cur.fetchall()
    return _answer(rows, len(items))


def _group_params(rows: Sequence[Pending]) -> dict[str, Any]:
    """messages_enqueue_group's parameters: each row with its own request's values."""
    if any(row.recipient_limit is not None and row.api_key_id is None for row in rows):
        raise ValueError("a recipient limit is an API key's")
    return {
        **_columns(
            [row.message for row in rows],
            [row.idempotency_key for row in rows],
            [row.request_hash for row in rows],
        ),
        "api_key_ids": [row.api_key_id for row in rows],
        "request_ids": [row.request_id for row in rows],
        "recipient_limits": [row.recipient_limit for row in rows],
    }


def _columns(
    items: Sequence[NewMessage],
    idempotency_keys: Sequence[str | None],
    request_hashes: Sequence[str | None],
) -> dict[str, Any]:
    """The messages' columns as the enqueue statements' parallel arrays."""
    counted = [count_segments(item.body) for item in items]
    return {
        "from_numbers": [item.from_number for item in items],
        "to_numbers": [item.to_number for item in items],
        "bodies": [item.body for item in items],
        "providers": [item.provider for item in items],
        "segments": [c[0] for c in counted],
        "encodings": [c[1] for c in counted],
        "idempotency_keys": list(idempotency_keys),
        "request_hashes": list(request_hashes),
        "priorities": [item.priority for item in items],
        "send_ats": [item.send_at for item in items],
        "expires_ats": [item.expires_at for item in items],
    }


def _answer(rows: Sequence[dict[str, Any]], count: int) -> list[EnqueueResult]:
    """The created messages of messages_enqueue's answer for `count` items, or its refusal."""
    # The statement answers the created messages, or the refused rows' 1-based ordinals and
    # writes nothing: (over_limit) messages_enqueue's `limited`, (opted_out) its `blocked`. The
    # limit is answered first, as it was when a separate check ran before the insert.
    limited = [int(row["ord"]) - 1 for row in rows if row["over_limit"]]
    if limited:
        raise RecipientLimitReached(limited)
    refused = [int(row["ord"]) - 1 for row in rows if row["opted_out"]]
    if refused:
        raise RecipientsOptedOut(refused)
    created = [EnqueueResult(**{k: row[k] for k in _RESULT_FIELDS}) for row in rows]
    if len(created) != count:  # pragma: no cover - one message per input row
        raise SmsOutboxError(f"enqueue wrote {len(created)} of {count} messages")
    return created


_RESULT_FIELDS: Final = tuple(f.name for f in fields(EnqueueResult) if f.name != "replayed")


def _names_conversations(items: Sequence[NewMessage]) -> bool:
    return any(item.conversation_id is not None for item in items)


def log_created(row: EnqueueResult) -> None:
    """Say that `row` was created, as enqueue does: in the request's access line when there is one
    (a group commit's request says it for its own message, in its own task)."""
    _log_created(row, logging.INFO)


def _log_created(row: EnqueueResult, level: int) -> None:
    fields = {
        "message_id": str(row.id),
        "conversation_id": str(row.conversation_id),
        "to": mask_number(row.to_number),
        "provider": row.provider,
        "segments": row.segments,
    }
    # Within an HTTP request, the request's access line says it (one line per request).
    if level == logging.INFO and annotate(outcome="message_created", **fields):
        return
    log.log(level, "message created", extra={"action": "message_created", **fields})


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


async def get_message(
    conn: AsyncConnection[Any], message_id: UUID, *, owner: int | None = None
) -> dict[str, Any] | None:
    """The sms_messages row as a dict, or None; with `owner` (a sender key's id) only a message
    that key created."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q("messages_read_one"), {"id": message_id, "owner": owner})
        return await cur.fetchone()


async def get_events(conn: AsyncConnection[Any], message_id: UUID) -> list[dict[str, Any]]:
    """The message's events, oldest first."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q("events_timeline"), {"message_id": message_id})
        return await cur.fetchall()
