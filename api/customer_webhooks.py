"""/sms/webhooks: the status webhook endpoints of the caller's key (DESIGN section 13).

A sender key registers, lists, removes, rotates and tests its own endpoints; another key's id
answers 404 as an unknown one does. An operator key lists and acts on every key's. The secret is
in the answer of the registration and of a rotation, and nowhere else.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from api.auth import require_caller, unauthorized
from api.errors import ApiError
from api.payload import read_json_object
from api.state import state
from shared import webhook_endpoints
from shared.validation import Problem
from shared.webhook_endpoints import Endpoint, WithSecret
from shared.webhook_registration import MAX_ENDPOINTS_PER_KEY, TEST_EVENT, check_registration

CREATE_FIELDS: Final = ("url", "events")


def _time(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def endpoint_body(e: Endpoint) -> dict[str, Any]:
    """The JSON shape of an endpoint (never its secret), its delivery health nested."""
    return {
        "id": e.id,
        "api_key_id": e.api_key_id,
        "url": e.url,
        "events": list(e.events),
        "enabled": e.enabled,
        "disabled_reason": e.disabled_reason,
        "disabled_at": _time(e.disabled_at),
        "created_at": _time(e.created_at),
        "previous_secret_expires_at": _time(e.previous_secret_expires_at),
        "health": {
            "last_success_at": _time(e.last_success_at),
            "last_failure_at": _time(e.last_failure_at),
            "last_error": e.last_error,
            "failing_since": _time(e.failing_since),
            "pending": e.pending,
            "oldest_pending_seconds": (
                None if e.oldest_pending_seconds is None else float(e.oldest_pending_seconds)
            ),
        },
    }


def _with_secret(made: WithSecret) -> dict[str, Any]:
    return {**endpoint_body(made.endpoint), "secret": made.secret}


def _endpoint_id(request: Request) -> int:
    found = webhook_endpoints.parse_id(request.path_params["endpoint_id"])
    if found is None:
        raise _not_found()
    return found


def _not_found() -> ApiError:
    return ApiError(404, code="not_found", message="no such webhook endpoint")


def _actor(key_id: int) -> str:
    return f"api-key:{key_id}"


async def create_endpoint(request: Request) -> JSONResponse:
    caller = await require_caller(request)
    app = state(request)
    payload = await read_json_object(request, app.settings.max_request_bytes)
    problems = [
        Problem(name, "unknown_field", f"unknown field; expected {', '.join(CREATE_FIELDS)}")
        for name in payload
        if name not in CREATE_FIELDS
    ]
    registration, found = await check_registration(
        payload.get("url"),
        payload.get("events"),
        allow_http=app.settings.allow_http_webhooks,
        allow_private=app.settings.webhook_allow_private_urls,
        resolve=app.resolve,
    )
    problems += found
    if problems:
        raise ApiError(400, problems)
    assert registration is not None
    try:
        async with app.pool.connection() as conn:
            made = await webhook_endpoints.create(
                conn, caller.id, registration, actor=_actor(caller.id)
            )
    except webhook_endpoints.KeyUnusable:  # revoked since this request was authenticated
        raise unauthorized() from None
    except webhook_endpoints.LimitReached:
        raise ApiError(
            409,
            code="endpoint_limit_reached",
            message=f"this key has {MAX_ENDPOINTS_PER_KEY} webhook endpoints already; "
            "delete one first",
        ) from None
    return JSONResponse(_with_secret(made), status_code=201)


async def list_endpoints(request: Request) -> JSONResponse:
    caller = await require_caller(request)
    async with state(request).pool.connection() as conn:
        found = await webhook_endpoints.list_endpoints(conn, owner=caller.owner)
    return JSONResponse({"webhooks": [endpoint_body(e) for e in found]})


async def delete_endpoint(request: Request) -> Response:
    caller = await require_caller(request)
    endpoint_id = _endpoint_id(request)
    try:
        async with state(request).pool.connection() as conn:
            await webhook_endpoints.remove(
                conn, endpoint_id, owner=caller.owner, actor=_actor(caller.id)
            )
    except webhook_endpoints.NotFound:
        raise _not_found() from None
    return Response(status_code=204)


async def rotate_secret(request: Request) -> JSONResponse:
    caller = await require_caller(request)
    endpoint_id = _endpoint_id(request)
    try:
        async with state(request).pool.connection() as conn:
            made = await webhook_endpoints.rotate(
                conn, endpoint_id, owner=caller.owner, actor=_actor(caller.id)
            )
    except webhook_endpoints.NotFound:
        raise _not_found() from None
    return JSONResponse(_with_secret(made))


async def send_test(request: Request) -> JSONResponse:
    caller = await require_caller(request)
    endpoint_id = _endpoint_id(request)
    try:
        async with state(request).pool.connection() as conn:
            msg_id = await webhook_endpoints.queue_test(conn, endpoint_id, owner=caller.owner)
    except webhook_endpoints.NotFound:
        raise _not_found() from None
    except webhook_endpoints.Disabled:
        raise ApiError(
            409,
            code="endpoint_disabled",
            message="the endpoint is disabled (see disabled_reason); nothing is sent to it",
        ) from None
    return JSONResponse(
        {"endpoint_id": endpoint_id, "type": TEST_EVENT, "webhook_id": msg_id}, status_code=202
    )


routes: list[BaseRoute] = [
    Route("/sms/webhooks", list_endpoints, methods=["GET"]),
    Route("/sms/webhooks", create_endpoint, methods=["POST"]),
    Route("/sms/webhooks/{endpoint_id}", delete_endpoint, methods=["DELETE"]),
    Route("/sms/webhooks/{endpoint_id}/rotate-secret", rotate_secret, methods=["POST"]),
    Route("/sms/webhooks/{endpoint_id}/test", send_test, methods=["POST"]),
]
