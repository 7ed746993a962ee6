"""POST /sms/send: authenticate, validate everything at once, enqueue in one transaction, 202."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import require_key_and_default_sender
from api.connections import autocommit
from api.errors import ApiError
from api.payload import read_json_object
from shared import messages, metrics, senders
from shared.config import Settings
from shared.logs import mask_number
from shared.messages import EnqueueResult, Problem
from shared.senders import Sender

log = logging.getLogger(__name__)

FIELDS: Final = ("to", "body", "from", "conversation_id")
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY: Final = 255


@dataclass(frozen=True)
class SendInput:
    """The request's fields after the checks that need no database; None where unusable."""

    to: str | None
    body: str | None
    from_number: str | None
    conversation_id: UUID | None


def _string(payload: dict[str, Any], name: str, problems: list[Problem]) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(Problem(name, "invalid_type", "must be a string"))
        return None
    return value


def parse_send(payload: dict[str, Any], settings: Settings) -> tuple[SendInput, list[Problem]]:
    """Check the request's shape, the recipient and the body; no database needed."""
    problems = [
        Problem(name, "unknown_field", f"unknown field; expected {', '.join(FIELDS)}")
        for name in payload
        if name not in FIELDS
    ]
    to: str | None = None
    raw_to = _string(payload, "to", problems)
    if raw_to is None and payload.get("to") is None:
        problems.append(Problem("to", "required", "the recipient's phone number is required"))
    elif raw_to is not None:
        e164, found = messages.check_recipient(raw_to, settings)
        problems += found
        to = e164 or None
    body: str | None = None
    raw_body = _string(payload, "body", problems)
    if raw_body is None and payload.get("body") is None:
        problems.append(Problem("body", "required", "the message text is required"))
    elif raw_body is not None:
        body = messages.normalize_body(raw_body)
        found = messages.check_body(body)
        problems += found
        body = None if found else body
    from_number: str | None = None
    raw_from = _string(payload, "from", problems)
    if raw_from is not None:
        from_number = senders.to_e164(raw_from, settings.default_region)
        if from_number is None:
            problems.append(Problem("from", "invalid_number", "not a phone number"))
    conversation_id: UUID | None = None
    raw_conversation = _string(payload, "conversation_id", problems)
    if raw_conversation is not None:
        try:
            conversation_id = UUID(raw_conversation)
        except ValueError:
            problems.append(Problem("conversation_id", "invalid_uuid", "must be a UUID"))
    valid = SendInput(to, body, from_number, conversation_id)
    return valid, problems


async def check_references(
    conn: AsyncConnection[Any], given: SendInput, from_named: bool, default: Sender | None
) -> tuple[Sender | None, list[Problem]]:
    """The sender to use, and the problems with `from` and `conversation_id` (database checks);
    `default` is the default sender, read with the API key."""
    problems: list[Problem] = []
    sender: Sender | None = None
    # Plain reads, each one statement (one round trip on the autocommit connection); the enqueue
    # checks the conversation's pair again inside its own transaction.
    if given.from_number is not None:
        sender = await senders.lookup(conn, given.from_number)
        if sender is None:
            problems.append(Problem("from", "unknown_sender", "not one of our sender numbers"))
        elif not sender.enabled:
            problems.append(Problem("from", "sender_disabled", "this sender is disabled"))
            sender = None
    elif not from_named:
        sender = default
        if sender is None:
            problems.append(
                Problem("from", "no_default_sender", "no default sender is set; name one")
            )
    if given.conversation_id is not None:
        pair = await messages.conversation_pair(conn, given.conversation_id)
        if pair is None:
            problems.append(
                Problem("conversation_id", "unknown_conversation", "no such conversation")
            )
        elif sender is not None and pair != (sender.phone_number, given.to):
            problems.append(
                Problem(
                    "conversation_id",
                    "conversation_mismatch",
                    "the conversation is between another sender and recipient",
                )
            )
    return sender, problems


def check_idempotency_key(value: str | None) -> list[Problem]:
    """1-255 printable ASCII characters, when the header is present."""
    if value is None:
        return []
    if 0 < len(value) <= MAX_IDEMPOTENCY_KEY and value.isascii() and value.isprintable():
        return []
    return [
        Problem(
            IDEMPOTENCY_HEADER,
            "invalid_idempotency_key",
            f"must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters",
        )
    ]


def request_hash(payload: dict[str, Any]) -> str:
    """SHA-256 of the request's JSON in canonical form (key order and spacing do not matter)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def accepted_body(result: EnqueueResult) -> dict[str, Any]:
    """One accepted message as DESIGN section 8 shows it (also each item of the batch's 202)."""
    return {
        "id": str(result.id),
        "status": "pending",
        "conversation_id": str(result.conversation_id),
        "to": result.to_number,
        "from": result.from_number,
        "provider": result.provider,
        "provider_sid": None,
        "segments": result.segments,
        "encoding": result.encoding,
        "created_at": result.created_at.isoformat(),
    }


def accepted(result: EnqueueResult) -> JSONResponse:
    """The 202 of DESIGN section 8; a replay answers exactly what the first request got."""
    headers = {"Location": f"/sms/messages/{result.id}"}
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(accepted_body(result), status_code=202, headers=headers)


def _reused() -> ApiError:
    return ApiError(
        409,
        code="idempotency_key_reused",
        message="this Idempotency-Key was already used with a different request",
    )


async def send_sms(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    pool: AsyncConnectionPool = request.app.state.pool
    api_key_id, default = await require_key_and_default_sender(request)
    key = request.headers.get(IDEMPOTENCY_HEADER)
    payload = await read_json_object(request, settings.max_request_bytes)
    key_problems = check_idempotency_key(key)
    given, problems = parse_send(payload, settings)
    digest = request_hash(payload) if key is not None and not key_problems else None
    async with autocommit(pool) as conn:
        if key is not None and digest is not None:
            try:
                earlier = await messages.find_by_idempotency_key(conn, api_key_id, key, digest)
            except messages.IdempotencyKeyReused:
                raise _reused() from None
            if earlier is not None:
                _log_replay(earlier)
                return accepted(earlier)
        sender, found = await check_references(
            conn, given, from_named=payload.get("from") is not None, default=default
        )
        problems = key_problems + problems + found
        if problems:
            raise ApiError(400, problems)
        assert sender is not None and given.to is not None and given.body is not None
        try:
            result = await messages.enqueue(
                conn,
                api_key_id=api_key_id,
                to_number=given.to,
                from_number=sender.phone_number,
                provider=sender.provider,
                body=given.body,
                conversation_id=given.conversation_id,
                idempotency_key=key if digest is not None else None,
                request_hash=digest,
                request_id=request.state.request_id,
            )
        except messages.IdempotencyKeyReused:
            raise _reused() from None
        except messages.ConversationMismatch:
            raise ApiError(
                400,
                [Problem("conversation_id", "conversation_mismatch", "another sender/recipient")],
            ) from None
    if result.replayed:
        _log_replay(result)
    else:
        metrics.MESSAGES_ACCEPTED.labels(result.provider).inc()
        request.app.state.wakeup.wake()
    return accepted(result)


def _log_replay(result: EnqueueResult) -> None:
    log.info(
        "idempotent replay",
        extra={
            "action": "idempotent_replay",
            "message_id": str(result.id),
            "conversation_id": str(result.conversation_id),
            "to": mask_number(result.to_number),
            "provider": result.provider,
        },
    )
