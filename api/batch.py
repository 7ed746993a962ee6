"""POST /sms/send/batch: up to 1,000 messages, each checked as POST /sms/send checks one, written
all or nothing in one transaction, 202 with each message's /sms/send body in request order.

No Idempotency-Key: a batch that carries one is refused (400 idempotency_key_not_supported) rather
than silently sent twice on a retry; send one message per request to get replay protection.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Final
from uuid import UUID

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from api.auth import require_key_and_default_sender
from api.connections import autocommit
from api.errors import ApiError
from api.payload import read_json_object
from api.send import (
    IDEMPOTENCY_HEADER,
    SendInput,
    accepted_body,
    check_references,
    parse_send,
)
from shared import messages, metrics
from shared.config import Settings
from shared.messages import NewMessage, Problem
from shared.senders import Sender

log = logging.getLogger(__name__)

MAX_BATCH: Final = 1000
FIELDS: Final = ("messages",)

# What check_references' answer depends on: the sender asked for (and whether `from` was given at
# all), and the conversation with the recipient it must match. Items alike share one check.
_RefKey = tuple[str | None, bool, UUID | None, str | None]


def _prefixed(index: int, problems: list[Problem]) -> list[Problem]:
    return [Problem(f"messages[{index}].{p.field}", p.code, p.message) for p in problems]


def parse_batch(
    payload: dict[str, Any], settings: Settings
) -> tuple[list[tuple[SendInput, bool]], list[Problem]]:
    """Each item through /sms/send's parse_send (with whether it named a `from`), and every
    problem of the envelope and the items, fields named `messages[i].field`."""
    problems = [
        Problem(name, "unknown_field", f"unknown field; expected {', '.join(FIELDS)}")
        for name in payload
        if name not in FIELDS
    ]
    items = payload.get("messages")
    if items is None:
        problems.append(Problem("messages", "required", "a list of messages is required"))
        return [], problems
    if not isinstance(items, list):
        problems.append(Problem("messages", "invalid_type", "must be a list of messages"))
        return [], problems
    if not items:
        problems.append(Problem("messages", "empty", "at least one message is required"))
        return [], problems
    if len(items) > MAX_BATCH:
        problems.append(
            Problem("messages", "too_many", f"{len(items)} messages, at most {MAX_BATCH}")
        )
        return [], problems
    parsed: list[tuple[SendInput, bool]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(Problem(f"messages[{index}]", "invalid_type", "must be an object"))
            parsed.append((SendInput(None, None, None, None), False))
            continue
        given, found = parse_send(item, settings)
        problems += _prefixed(index, found)
        parsed.append((given, item.get("from") is not None))
    return parsed, problems


async def check_all_references(
    conn: AsyncConnection[Any], parsed: list[tuple[SendInput, bool]], default: Sender | None
) -> tuple[list[Sender | None], list[Problem]]:
    """/sms/send's check_references for each item, once per distinct question."""
    answers: dict[_RefKey, tuple[Sender | None, list[Problem]]] = {}
    chosen: list[Sender | None] = []
    problems: list[Problem] = []
    for index, (given, from_named) in enumerate(parsed):
        mate = given.to if given.conversation_id is not None else None
        key: _RefKey = (given.from_number, from_named, given.conversation_id, mate)
        if key not in answers:
            answers[key] = await check_references(conn, given, from_named, default)
        sender, found = answers[key]
        chosen.append(sender)
        problems += _prefixed(index, found)
    return chosen, problems


def _key_refused() -> list[Problem]:
    return [
        Problem(
            IDEMPOTENCY_HEADER,
            "idempotency_key_not_supported",
            "POST /sms/send/batch takes no Idempotency-Key; use POST /sms/send for replay safety",
        )
    ]


async def send_batch(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    pool: AsyncConnectionPool = request.app.state.pool
    api_key_id, default = await require_key_and_default_sender(request)
    payload = await read_json_object(request, settings.max_batch_request_bytes)
    key_problems = _key_refused() if IDEMPOTENCY_HEADER in request.headers else []
    parsed, problems = parse_batch(payload, settings)
    async with autocommit(pool) as conn:
        chosen, found = await check_all_references(conn, parsed, default)
        problems = key_problems + problems + found
        if problems or not parsed:
            raise ApiError(400, problems)
        items = []
        for (given, _), sender in zip(parsed, chosen, strict=True):
            assert sender is not None and given.to is not None and given.body is not None
            items.append(
                NewMessage(
                    to_number=given.to,
                    from_number=sender.phone_number,
                    provider=sender.provider,
                    body=given.body,
                    conversation_id=given.conversation_id,
                )
            )
        try:
            created = await messages.enqueue_many(
                conn, items, api_key_id=api_key_id, request_id=request.state.request_id
            )
        except messages.BatchConversationMismatch as e:
            # The conversation changed between the check and the transaction: nothing written.
            field = f"messages[{e.index}].conversation_id"
            raise ApiError(
                400, [Problem(field, "conversation_mismatch", "another sender/recipient")]
            ) from None
    for provider, count in Counter(r.provider for r in created).items():
        metrics.MESSAGES_ACCEPTED.labels(provider).inc(count)
    request.app.state.wakeup.wake()
    return JSONResponse({"messages": [accepted_body(r) for r in created]}, status_code=202)


routes: list[BaseRoute] = [Route("/sms/send/batch", send_batch, methods=["POST"])]
