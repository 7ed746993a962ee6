"""GET /sms/messages/{id}: a message, its error, attempts and event timeline; a sender key sees
only the messages it created (the query's owner guard), an operator key every one."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import require_caller
from api.errors import ApiError
from api.state import state
from shared import messages


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def message_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The JSON shape of a message without its history (the keys of the 202 body, its fate)."""
    error = None
    if row["error_code"] is not None or row["error_category"] is not None:
        error = {
            "code": row["error_code"],
            "category": row["error_category"],
            "message": row["error_message"],
        }
    return {
        "id": str(row["id"]),
        "status": row["delivery_status"],
        "conversation_id": str(row["conversation_id"]),
        "direction": row["direction"],
        "to": row["to_number"],
        "from": row["from_number"],
        "body": row["body"],
        "provider": row["provider"],
        "provider_sid": row["provider_sid"],
        "segments": row["segments"],
        "encoding": row["encoding"],
        "attempts": row["attempts"],
        "error": error,
        "request_id": row["request_id"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "submitted_at": _iso(row["submitted_at"]),
        "final_at": _iso(row["final_at"]),
        "priority": row["priority"],
        "send_at": _iso(row["send_at"]),
        "expires_at": _iso(row["expires_at"]),
    }


def message_view(row: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """A message with its event timeline (GET /sms/messages/{id}, cancel, retry)."""
    return {
        **message_fields(row),
        "events": [
            {
                "id": e["id"],
                "type": e["event_type"],
                "attempt": e["attempt"],
                "from_status": e["from_status"],
                "to_status": e["to_status"],
                "provider": e["provider"],
                "provider_sid": e["provider_sid"],
                "error_code": e["error_code"],
                "error_category": e["error_category"],
                "detail": e["detail"],
                "occurred_at": _iso(e["occurred_at"]),
            }
            for e in events
        ],
    }


def not_found() -> ApiError:
    """The one 404 of a message: an unknown id, a malformed one, and another key's message (to a
    sender key) answer exactly alike."""
    return ApiError(404, code="not_found", message="no such message")


async def get_message(request: Request) -> JSONResponse:
    caller = await require_caller(request)
    try:
        message_id = UUID(request.path_params["message_id"])
    except ValueError:
        raise not_found() from None
    async with state(request).pool.connection() as conn:
        row = await messages.get_message(conn, message_id, owner=caller.owner)
        if row is None:
            raise not_found()
        events = await messages.get_events(conn, message_id)
    return JSONResponse(message_view(row, events))
