"""GET /sms/messages (filters, cursor pages), POST /sms/messages/{id}/cancel and /retry; a sender
key lists and acts on only the messages it created, an operator key on every one."""

from __future__ import annotations

from datetime import datetime
from typing import Final
from uuid import UUID

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import require_caller
from api.errors import ApiError
from api.messages import message_fields, message_view, not_found
from api.query import page, unknown_and_repeated
from api.state import state
from shared import messages, metrics, operations
from shared.lifecycle import STATUSES
from shared.operations import Filters
from shared.validation import MAX_NUMBER_INPUT, PRIORITIES, Problem, to_e164

LIST_PARAMS: Final = (
    "status",
    "priority",
    "conversation_id",
    "to",
    "from",
    "since",
    "until",
    "limit",
    "cursor",
)

# Outbound statuses, and `received`: an inbound message (a reply, a STOP).
LISTED_STATUSES = STATUSES | {"received"}


def _timestamp(raw: str, name: str, problems: list[Problem]) -> datetime | None:
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        problems.append(
            Problem(name, "invalid_timestamp", "must be an ISO 8601 date-time with an offset")
        )
        return None
    return value


def parse_list_query(
    params: QueryParams, region: str
) -> tuple[Filters, int, str | None, list[Problem]]:
    """The filters, page size and cursor of a listing, and every problem with them at once."""
    problems = unknown_and_repeated(params, LIST_PARAMS)
    status = params.get("status")
    if status is not None and status not in LISTED_STATUSES:
        problems.append(
            Problem("status", "invalid_status", f"one of {', '.join(sorted(LISTED_STATUSES))}")
        )
    priority = params.get("priority")
    if priority is not None and priority not in PRIORITIES:
        problems.append(Problem("priority", "invalid_priority", f"one of {', '.join(PRIORITIES)}"))
    conversation_id = None
    if (raw := params.get("conversation_id")) is not None:
        try:
            conversation_id = UUID(raw)
        except ValueError:
            problems.append(Problem("conversation_id", "invalid_uuid", "must be a UUID"))
    numbers: dict[str, str | None] = {}
    for name in ("to", "from"):
        raw = params.get(name)
        numbers[name] = None
        if raw is not None:
            numbers[name] = e164 = to_e164(raw, region) if len(raw) <= MAX_NUMBER_INPUT else None
            if e164 is None:
                problems.append(Problem(name, "invalid_number", "not a phone number"))
    since = until = None
    if (raw := params.get("since")) is not None:
        since = _timestamp(raw, "since", problems)
    if (raw := params.get("until")) is not None:
        until = _timestamp(raw, "until", problems)
    limit, cursor = page(
        params,
        problems,
        default=operations.DEFAULT_PAGE,
        most=operations.MAX_PAGE,
        decode=operations.decode_cursor,
    )
    filters = Filters(
        status=status,
        priority=priority,
        conversation_id=conversation_id,
        to_number=numbers["to"],
        from_number=numbers["from"],
        since=since,
        until=until,
    )
    return filters, limit, cursor, problems


async def list_messages(request: Request) -> JSONResponse:
    caller = await require_caller(request)
    app = state(request)
    filters, limit, cursor, problems = parse_list_query(
        request.query_params, app.settings.default_region
    )
    if problems:
        raise ApiError(400, problems)
    async with app.pool.connection() as conn:
        page = await operations.list_messages(
            conn, filters, limit=limit, cursor=cursor, owner=caller.owner
        )
    return JSONResponse(
        {"messages": [message_fields(row) for row in page.rows], "next_cursor": page.next_cursor}
    )


def _message_id(request: Request) -> UUID:
    try:
        return UUID(request.path_params["message_id"])
    except ValueError:
        raise not_found() from None


async def _operate(request: Request, action: str) -> JSONResponse:
    caller = await require_caller(request)
    message_id = _message_id(request)
    app = state(request)
    actor = f"api-key:{caller.id}"
    owner = caller.owner
    async with app.pool.connection() as conn:
        try:
            if action == "cancel":
                await operations.cancel(conn, message_id, actor=actor, owner=owner)
            else:
                await operations.requeue(conn, message_id, actor=actor, owner=owner)
        except operations.NotFound:
            raise not_found() from None
        except operations.Refused as e:
            raise ApiError(409, code=e.code, message=e.message) from None
        row = await messages.get_message(conn, message_id, owner=owner)
        events = await messages.get_events(conn, message_id)
    assert row is not None
    metrics.OPERATOR_ACTIONS.labels(action).inc()
    if action == "retry":
        app.wakeup.wake()
    return JSONResponse(message_view(row, events))


async def cancel_message(request: Request) -> JSONResponse:
    return await _operate(request, "cancel")


async def retry_message(request: Request) -> JSONResponse:
    return await _operate(request, "retry")
