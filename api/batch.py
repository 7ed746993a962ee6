"""POST /sms/send/batch: up to 1,000 messages, each checked as POST /sms/send checks one, written
all or nothing in one transaction, 202 with each message's /sms/send body in request order.

No Idempotency-Key: a batch that carries one is refused (400 idempotency_key_not_supported) rather
than silently sent twice on a retry; send one message per request to get replay protection.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from api.accepted import accepted_body
from api.auth import require_caller_and_default_sender
from api.connections import Connect, on_demand
from api.errors import ApiError
from api.limits import recipient_limited
from api.middleware import request_id
from api.payload import read_json_object
from api.references import check_references
from api.send import new_message, opted_out
from api.state import state
from shared import messages, metrics
from shared.senders import Sender
from shared.validation import IDEMPOTENCY_HEADER, Problem, SendInput, parse_batch, prefixed

log = logging.getLogger(__name__)

# What check_references' answer depends on: the sender asked for (and whether `from` was given at
# all), and the conversation with the recipient it must match. Items alike share one check.
_RefKey = tuple[str | None, bool, UUID | None, str | None]


async def check_all_references(
    connect: Connect, parsed: list[SendInput], default: Sender | None
) -> tuple[list[Sender | None], list[Problem]]:
    """check_references for each item, once per distinct question."""
    answers: dict[_RefKey, tuple[Sender | None, list[Problem]]] = {}
    chosen: list[Sender | None] = []
    problems: list[Problem] = []
    for index, given in enumerate(parsed):
        mate = given.to if given.conversation_id is not None else None
        key: _RefKey = (given.from_number, given.from_named, given.conversation_id, mate)
        if key not in answers:
            answers[key] = await check_references(connect, given, default)
        sender, found = answers[key]
        chosen.append(sender)
        problems += prefixed(index, found)
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
    app = state(request)
    caller, default = await require_caller_and_default_sender(request)
    payload = await read_json_object(request, app.settings.max_batch_request_bytes)
    key_problems = _key_refused() if IDEMPOTENCY_HEADER in request.headers else []
    countries = caller.allowed_countries(app.settings.allowed_countries)
    parsed, problems = parse_batch(
        payload, app.settings, now=datetime.now(UTC), countries=countries
    )
    async with on_demand(app.pool) as connect:
        chosen, found = await check_all_references(connect, parsed, default)
        problems = key_problems + problems + found
        if problems or not parsed:
            raise ApiError(400, problems)
        items = []
        for given, sender in zip(parsed, chosen, strict=True):
            assert sender is not None
            items.append(new_message(given, sender))
        # Limits last: a refused or invalid batch spends none of the key's quota. A batch is one
        # request of rate_per_minute and len(items) messages of daily_message_limit.
        admission = await app.quota.admit(connect, caller, messages=len(items))
        to_numbers = [item.to_number for item in items]
        fields = [f"messages[{i}].to" for i in range(len(items))]
        with admission:
            try:
                conn = await connect()
                created = await messages.enqueue_many(
                    conn,
                    items,
                    api_key_id=caller.id,
                    request_id=request_id(request),
                    recipient_limit=caller.limits.recipient_hourly_limit,
                )
            except messages.BatchConversationMismatch as e:
                # The conversation changed between the check and the transaction: nothing written.
                field = f"messages[{e.index}].conversation_id"
                raise ApiError(
                    400, [Problem(field, "conversation_mismatch", "another sender/recipient")]
                ) from None
            except messages.RecipientsOptedOut as e:
                raise ApiError(422, [opted_out(fields[i]) for i in e.ordinals]) from None
            except messages.RecipientLimitReached as e:
                refusal = await recipient_limited(conn, caller, e, to_numbers, fields)
                raise refusal from None
    for provider, count in Counter(r.provider for r in created).items():
        metrics.MESSAGES_ACCEPTED.labels(provider).inc(count)
    app.wakeup.wake()
    return JSONResponse({"messages": [accepted_body(r) for r in created]}, status_code=202)


routes: list[BaseRoute] = [Route("/sms/send/batch", send_batch, methods=["POST"])]
