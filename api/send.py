"""POST /sms/send: authenticate, validate everything at once, enqueue (group commit), 202."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.accepted import accepted
from api.auth import require_caller_and_default_sender
from api.connections import autocommit, on_demand
from api.errors import ApiError
from api.limits import recipient_limited
from api.middleware import request_id
from api.payload import read_json_object
from api.references import check_references
from api.state import AppState, state
from shared import messages, metrics
from shared.logs import annotate, mask_number
from shared.messages import EnqueueResult, NewMessage
from shared.senders import Sender
from shared.validation import (
    IDEMPOTENCY_HEADER,
    Problem,
    SendInput,
    check_idempotency_key,
    parse_send,
)


def request_hash(payload: dict[str, Any]) -> str:
    """SHA-256 of the request's JSON in canonical form (key order and spacing do not matter).

    Every field counts, priority and schedule included: the same key with another send_at is
    another request (409). validity_seconds is hashed as given, so a replay matches however late.
    """
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def opted_out(field: str) -> Problem:
    """The problem of a recipient on the suppression list for this sender (or for every one)."""
    return Problem(
        field, "recipient_opted_out", "the recipient opted out of messages from this sender"
    )


def new_message(given: SendInput, sender: Sender) -> NewMessage:
    """The message one checked send input asks for, from its resolved sender (both send paths)."""
    assert given.to is not None and given.body is not None
    return NewMessage(
        to_number=given.to,
        from_number=sender.phone_number,
        provider=sender.provider,
        body=given.body,
        conversation_id=given.conversation_id,
        priority=given.priority,
        send_at=given.send_at,
        expires_at=given.expires_at,
    )


def _reused() -> ApiError:
    return ApiError(
        409,
        code="idempotency_key_reused",
        message="this Idempotency-Key was already used with a different request",
    )


async def send_sms(request: Request) -> JSONResponse:
    app = state(request)
    caller, default = await require_caller_and_default_sender(request)
    key = request.headers.get(IDEMPOTENCY_HEADER)
    payload = await read_json_object(request, app.settings.max_request_bytes)
    key_problems = check_idempotency_key(key)
    countries = caller.allowed_countries(app.settings.allowed_countries)
    given, problems = parse_send(payload, app.settings, now=datetime.now(UTC), countries=countries)
    digest = request_hash(payload) if key is not None and not key_problems else None
    # A connection only for what needs a read (a replay, a named sender or conversation, a quota
    # refill): the plain send's first statement is its group's write.
    async with on_demand(app.pool) as connect:
        if key is not None and digest is not None:
            try:
                earlier = await messages.find_by_idempotency_key(
                    await connect(), caller.id, key, digest
                )
            except messages.IdempotencyKeyReused:
                raise _reused() from None
            if earlier is not None:
                _log_replay(earlier)
                return accepted(earlier)
        sender, found = await check_references(connect, given, default)
        problems = key_problems + problems + found
        if problems:
            raise ApiError(400, problems)
        assert sender is not None and given.to is not None and given.body is not None
        # Limits last: a refused or invalid request spends none of the key's quota.
        admission = await app.quota.admit(connect, caller, messages=1)
    # The write is the group commit's (api/group_commit.py): this connection goes back to the
    # pool first, so a request never holds one while it waits for its group.
    row = messages.Pending(
        new_message(given, sender),
        api_key_id=caller.id,
        idempotency_key=key if digest is not None else None,
        request_hash=digest,
        request_id=request_id(request),
        recipient_limit=caller.limits.recipient_hourly_limit,
    )
    with admission:
        try:
            result = await _write(app, row)
        except messages.IdempotencyKeyReused:
            raise _reused() from None
        except messages.ConversationMismatch:
            raise ApiError(
                400,
                [Problem("conversation_id", "conversation_mismatch", "another sender/recipient")],
            ) from None
        except messages.RecipientsOptedOut:
            raise ApiError(422, [opted_out("to")]) from None
        except messages.RecipientLimitReached as e:
            async with autocommit(app.pool) as conn:
                refusal = await recipient_limited(conn, caller, e, [given.to], ["to"])
            raise refusal from None
    if result.replayed:
        admission.refund()  # a concurrent twin with the same key created it: nothing new
        _log_replay(result)
    else:
        metrics.MESSAGES_ACCEPTED.labels(result.provider).inc()
    return accepted(result)


async def _write(app: AppState, row: messages.Pending) -> EnqueueResult:
    """The row through the group commit (which wakes the dispatcher), or alone without one."""
    if app.committer is not None:
        return await app.committer.enqueue(row)
    async with autocommit(app.pool) as conn:
        result = await messages.enqueue_pending(conn, row)
    if not result.replayed:
        app.wakeup.wake()
    return result


def _log_replay(result: EnqueueResult) -> None:
    # In the request's access line (shared.logs.annotate), not a line of its own.
    annotate(
        outcome="idempotent_replay",
        message_id=str(result.id),
        conversation_id=str(result.conversation_id),
        to=mask_number(result.to_number),
        provider=result.provider,
    )
