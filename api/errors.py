"""Error responses of the API: `{"errors": [{"field"?, "code", "message"}]}` (README, "Errors")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shared.db import DatabaseUnavailable
from shared.validation import Problem

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    500: "internal",
    503: "unavailable",
}
# What a 503 database_unavailable asks the caller to wait before trying again.
DATABASE_RETRY_AFTER_SECONDS: Final = 5


class ApiError(Exception):
    """Raised by handlers to answer with an error body; turned into a response by `handle`."""

    def __init__(
        self,
        status: int,
        errors: Sequence[Problem] | None = None,
        *,
        code: str | None = None,
        message: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(code or message)
        self.status = status
        self.items: list[dict[str, str]] = [
            {"field": p.field, "code": p.code, "message": p.message} for p in errors or ()
        ]
        if code is not None:
            self.items.append({"code": code, "message": message})
        self.headers = dict(headers or {})


def error_response(
    status: int, items: list[dict[str, str]], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"errors": items}, status_code=status, headers=headers)


def database_unavailable(down: DatabaseUnavailable) -> JSONResponse:
    """The one answer while the database cannot be reached: 503 with Retry-After."""
    return error_response(
        503,
        [
            {
                "code": "database_unavailable",
                "message": f"database unreachable ({down.reason}); try again later",
            }
        ],
        {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.items, exc.headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 and friends, in our error shape."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    return error_response(
        exc.status_code, [{"code": code, "message": str(exc.detail)}], exc.headers
    )
