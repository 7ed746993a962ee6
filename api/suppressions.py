"""GET/POST /sms/suppressions and DELETE /sms/suppressions/{phone_number}: the suppression list.

Any valid key may read and change it: a suppression only ever keeps a person from being texted.
What a key adds is recorded with its id (reason `api`).
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from api.auth import require_caller, require_key
from api.errors import ApiError
from api.payload import read_json_object
from api.query import page, unknown_and_repeated
from api.state import state
from shared import suppressions
from shared.config import Settings
from shared.suppressions import Suppression
from shared.validation import Problem

LIST_PARAMS: Final = ("phone_number", "limit", "cursor")
DELETE_PARAMS: Final = ("sender_number",)
CREATE_FIELDS: Final = ("phone_number", "sender_number")


def suppression_body(s: Suppression) -> dict[str, Any]:
    """The JSON shape of a suppression (sender_number null = every sender)."""
    return {
        "phone_number": s.phone_number,
        "sender_number": s.sender_number,
        "reason": s.reason,
        "source_message_id": None if s.source_message_id is None else str(s.source_message_id),
        "created_at": s.created_at.isoformat(),
    }


def _number(
    raw: Any, settings: Settings, field: str, problems: list[Problem], *, required: bool
) -> str | None:
    """A phone number field as E.164, or None with its problem added."""
    if raw is None:
        if required:
            problems.append(Problem(field, "required", "a phone number is required"))
        return None
    if not isinstance(raw, str):
        problems.append(Problem(field, "invalid_type", "must be a string"))
        return None
    e164, found = suppressions.check_number(raw, settings, field)
    problems += found
    return e164


async def list_suppressions(request: Request) -> JSONResponse:
    await require_key(request)
    app = state(request)
    params = request.query_params
    problems = unknown_and_repeated(params, LIST_PARAMS)
    phone = _number(
        params.get("phone_number"), app.settings, "phone_number", problems, required=False
    )
    limit, cursor = page(
        params,
        problems,
        default=suppressions.DEFAULT_PAGE,
        most=suppressions.MAX_PAGE,
        decode=suppressions.decode_cursor,
    )
    if problems:
        raise ApiError(400, problems)
    async with app.pool.connection() as conn:
        found = await suppressions.list_suppressions(
            conn, phone_number=phone, limit=limit, cursor=cursor
        )
    return JSONResponse(
        {
            "suppressions": [suppression_body(s) for s in found.rows],
            "next_cursor": found.next_cursor,
        }
    )


async def create_suppression(request: Request) -> JSONResponse:
    key_id = await require_key(request)
    app = state(request)
    payload = await read_json_object(request, app.settings.max_request_bytes)
    problems = [
        Problem(name, "unknown_field", f"unknown field; expected {', '.join(CREATE_FIELDS)}")
        for name in payload
        if name not in CREATE_FIELDS
    ]
    phone = _number(
        payload.get("phone_number"), app.settings, "phone_number", problems, required=True
    )
    sender = _number(
        payload.get("sender_number"), app.settings, "sender_number", problems, required=False
    )
    if problems:
        raise ApiError(400, problems)
    assert phone is not None
    async with app.pool.connection() as conn:
        found, created = await suppressions.add(
            conn, phone, sender, reason="api", api_key_id=key_id, actor=f"api-key:{key_id}"
        )
    return JSONResponse(suppression_body(found), status_code=201 if created else 200)


async def delete_suppression(request: Request) -> Response:
    caller = await require_caller(request)
    key_id = caller.id
    app = state(request)
    params = request.query_params
    problems = unknown_and_repeated(params, DELETE_PARAMS)
    phone = _number(
        request.path_params["phone_number"], app.settings, "phone_number", problems, required=True
    )
    sender = _number(
        params.get("sender_number"), app.settings, "sender_number", problems, required=False
    )
    if problems:
        raise ApiError(400, problems)
    assert phone is not None
    async with app.pool.connection() as conn:
        operator = caller.role == "operator"
        gone = await suppressions.remove(
            conn, phone, sender, actor=f"api-key:{key_id}", any_reason=operator
        )
        if gone is None and not operator and await suppressions.exists(conn, phone, sender):
            raise ApiError(
                403,
                code="recipient_opt_out",
                message="the recipient opted out (STOP or a provider refusal): only the recipient "
                "(START) or an operator key can lift it",
            )
    if gone is None:
        raise ApiError(404, code="not_found", message="no such suppression")
    return Response(status_code=204)


routes: list[BaseRoute] = [
    Route("/sms/suppressions", list_suppressions, methods=["GET"]),
    Route("/sms/suppressions", create_suppression, methods=["POST"]),
    Route("/sms/suppressions/{phone_number}", delete_suppression, methods=["DELETE"]),
]
