"""The console's read pages: overview, message search, failed messages, suppressions, webhook
endpoints, senders."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from api.operations import LISTED_STATUSES, parse_list_query
from api.ops import data
from api.ops.forms import signed_in
from api.ops.render import page
from api.ops.session import Operator
from api.ops.timeline import DONE
from api.state import state
from shared import messages, operations, suppressions, webhook_endpoints
from shared.validation import Problem

SEARCH_FIELDS: Final = ("id", "to", "from", "status", "since", "until", "cursor")
SEARCH_PAGE: Final = 50
SUPPRESSIONS_PAGE: Final = 50


@signed_in
async def overview(request: Request, operator: Operator) -> Response:
    app = state(request)
    async with app.pool.connection() as conn:
        found = await data.overview(conn, app.providers.keys())
    return page(request, "overview.html", operator, **found)


def _utc(raw: str, name: str, problems: list[Problem]) -> str | None:
    """A search form's time (an <input type=datetime-local>: no offset, read as UTC) in the
    API's form (ISO 8601 with an offset)."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        problems.append(Problem(name, "invalid_timestamp", "must be a date and time (UTC)"))
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _search_query(form: QueryParams) -> tuple[dict[str, str], list[Problem]]:
    """The search form's fields as the API's list parameters (GET /sms/messages), so the API's
    rules check them; problems with the form's own fields."""
    problems: list[Problem] = []
    api: dict[str, str] = {"limit": str(SEARCH_PAGE)}
    for name in ("to", "from", "status", "cursor"):
        if value := form.get(name, "").strip():
            api[name] = value
    for name in ("since", "until"):
        if (raw := form.get(name, "").strip()) and (stamp := _utc(raw, name, problems)):
            api[name] = stamp
    return api, problems


@signed_in
async def search(request: Request, operator: Operator) -> Response:
    """Messages by id, or by recipient, sender, status and time, newest first, paged with the
    API's cursor."""
    form = request.query_params
    app = state(request)
    rows: list[dict[str, Any]] = []
    next_cursor = None
    problems: list[Problem] = []
    async with app.pool.connection() as conn:
        if raw_id := form.get("id", "").strip():
            try:
                row = await messages.get_message(conn, UUID(raw_id))
                rows = [] if row is None else [row]
            except ValueError:
                problems.append(Problem("id", "invalid_uuid", "must be a message id (a UUID)"))
        else:
            api, problems = _search_query(form)
            filters, limit, cursor, api_problems = parse_list_query(
                QueryParams(api), app.settings.default_region
            )
            problems += api_problems
            if not problems:
                found = await operations.list_messages(conn, filters, limit=limit, cursor=cursor)
                rows, next_cursor = found.rows, found.next_cursor
    more = None
    if next_cursor is not None:
        kept = {k: v for k, v in form.items() if k in SEARCH_FIELDS and k != "cursor" and v}
        more = str(QueryParams({**kept, "cursor": next_cursor}))
    return page(
        request,
        "messages.html",
        operator,
        status=400 if problems else 200,
        form={name: form.get(name, "") for name in SEARCH_FIELDS},
        statuses=sorted(LISTED_STATUSES),
        problems=problems,
        rows=rows,
        more=more,
        searched=bool(set(form) & set(SEARCH_FIELDS)),
    )


@signed_in
async def failed(request: Request, operator: Operator) -> Response:
    """Failed messages (retry) and sends waiting to try again (cancel)."""
    after = None
    if cursor := request.query_params.get("cursor"):
        try:
            after = operations.decode_cursor(cursor)
        except operations.BadCursor:
            after = None
    async with state(request).pool.connection() as conn:
        rows, last = await data.failed(conn, after)
        waiting = await data.retrying(conn)
    more = None if last is None else operations.encode_cursor(*last)
    return page(
        request,
        "failed.html",
        operator,
        rows=rows,
        waiting=waiting,
        more=more,
        done=DONE.get(request.query_params.get("done", "")),
    )


@signed_in
async def suppressions_page(request: Request, operator: Operator) -> Response:
    app = state(request)
    problems: list[Problem] = []
    number = None
    if raw := request.query_params.get("number", "").strip():
        number, problems = suppressions.check_number(raw, app.settings, "number")
    cursor = request.query_params.get("cursor") or None
    if cursor is not None:
        try:
            suppressions.decode_cursor(cursor)
        except operations.BadCursor:
            problems.append(Problem("cursor", "invalid_cursor", "not a cursor from this page"))
    found = None
    if not problems:
        async with app.pool.connection() as conn:
            found = await suppressions.list_suppressions(
                conn, phone_number=number, limit=SUPPRESSIONS_PAGE, cursor=cursor
            )
    more = None
    if found is not None and found.next_cursor is not None:
        more = str(QueryParams({"number": raw, "cursor": found.next_cursor} if raw else
                               {"cursor": found.next_cursor}))  # fmt: skip
    return page(
        request,
        "suppressions.html",
        operator,
        status=400 if problems else 200,
        rows=found.rows if found else [],
        more=more,
        number=raw,
        problems=problems,
    )


@signed_in
async def webhooks(request: Request, operator: Operator) -> Response:
    async with state(request).pool.connection() as conn:
        endpoints = await webhook_endpoints.list_endpoints(conn, owner=None)
    return page(request, "webhooks.html", operator, endpoints=endpoints)


@signed_in
async def senders(request: Request, operator: Operator) -> Response:
    async with state(request).pool.connection() as conn:
        rows = await data.senders(conn)
    return page(request, "senders.html", operator, rows=rows)
