"""Reading a JSON request body: content type, a size limit enforced while reading, parsing."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from starlette.requests import Request

from api.errors import ApiError


def _too_large(limit: int) -> NoReturn:
    raise ApiError(413, code="too_large", message=f"request body is larger than {limit} bytes")


def is_json(content_type: str | None) -> bool:
    """application/json or application/<something>+json, any parameters (charset) allowed."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes: a declared Content-Length
    over the limit is refused before reading, a streamed one after at most one chunk too many."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        _too_large(limit)
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            _too_large(limit)
    return bytes(received)


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The request's JSON object, or the matching 415 / 413 / 400 ApiError."""
    if not is_json(request.headers.get("content-type")):
        raise ApiError(
            415, code="unsupported_media_type", message="Content-Type must be application/json"
        )
    raw = await read_limited(request, limit)
    try:
        payload = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; their text quotes no input.
        raise ApiError(400, code="malformed_json", message="request body is not valid JSON") from e
    if not isinstance(payload, dict):
        raise ApiError(400, code="invalid_type", message="request body must be a JSON object")
    return payload
