"""Per-request context: the X-Request-ID, one access log line, and the error boundary.

The access line is the request's only INFO line when it goes well: what the handler did (the
message it created, a replay) is added to it with shared.logs.annotate.

An exception no handler answered ends here, once: a database that cannot be reached (whatever
psycopg or psycopg_pool raised, translated by shared.db.unavailable) is the 503
`database_unavailable` with Retry-After; anything else is the last-resort 500.
"""

from __future__ import annotations

import logging
import time
import uuid

import psycopg
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import database_unavailable, error_response
from shared.db import DatabaseUnavailable, unavailable
from shared.logs import mask_number, request_fields_var, request_id_var

log = logging.getLogger(__name__)
MAX_REQUEST_ID = 200
# Where the request's id is kept in its scope's state (read back with `request_id`).
_REQUEST_ID_KEY = "request_id"


def request_id_from(headers: Headers) -> str:
    """The caller's X-Request-ID when sane (1-200 printable ASCII characters), else a new one."""
    given = headers.get("x-request-id", "")
    if 0 < len(given) <= MAX_REQUEST_ID and given.isascii() and given.isprintable():
        return given
    return uuid.uuid4().hex


def request_id(request: Request) -> str:
    """The X-Request-ID RequestContext gave this request (what the 202 and the logs carry)."""
    found = request.scope.get("state", {}).get(_REQUEST_ID_KEY)
    if not isinstance(found, str):
        raise RuntimeError("RequestContext did not run: no request id in the request")
    return found


class RequestContext:
    """Pure ASGI middleware (no BaseHTTPMiddleware: request bodies stay streamed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(Headers(scope=scope))
        scope.setdefault("state", {})[_REQUEST_ID_KEY] = request_id
        token = request_id_var.set(request_id)
        fields: dict[str, object] = {}
        fields_token = request_fields_var.set(fields)
        started = time.monotonic()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as e:
            down = unavailable(e)
            if down is None:
                _log_unexpected(e)
                response = error_response(500, [{"code": "internal", "message": "internal error"}])
            else:
                _log_unavailable(down)
                response = database_unavailable(down)
            if not response_started:
                await response(scope, receive, send_with_id)
        finally:
            log.info(
                "request finished",
                extra={
                    "action": "http_request",
                    "method": scope["method"],
                    "path": _loggable_path(scope),
                    "status": status,
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                    **fields,
                },
            )
            request_fields_var.reset(fields_token)
            request_id_var.reset(token)


def _loggable_path(scope: Scope) -> str:
    """The request's path for the log: a phone number in it (DELETE /sms/suppressions/{number})
    masked as every number in a log line is."""
    params = scope.get("path_params") or {}
    template = getattr(scope.get("route"), "path", None)
    if "phone_number" in params and isinstance(template, str):
        masked = mask_number(str(params["phone_number"])) or "***"
        return template.replace("{phone_number}", masked)
    return str(scope["path"])


def _log_unavailable(down: DatabaseUnavailable) -> None:
    log.warning(
        "request failed: database unreachable (%s)",
        down.reason,
        extra={
            "action": "request_failed",
            "error_code": "database_unavailable",
            "error_category": down.category,
        },
    )


def _log_unexpected(e: Exception) -> None:
    """Logged once, here. A database error's text can quote the failing row (body, numbers), so
    only its SQLSTATE and primary message are kept."""
    if isinstance(e, psycopg.Error):
        log.error(
            "request failed: database error",
            extra={
                "action": "request_failed",
                "error_category": type(e).__name__,
                "error_code": e.sqlstate,
                "error": e.diag.message_primary,
            },
        )
    else:
        log.exception("request failed", extra={"action": "request_failed"})
