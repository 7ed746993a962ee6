"""Error responses of the API: `{"errors": [{"field"?, "code", "message"}]}` (DESIGN section 8)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shared.messages import Problem

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
