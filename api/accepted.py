"""The 202 of an accepted message: one body for POST /sms/send and each item of the batch."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.responses import JSONResponse

from shared.messages import EnqueueResult


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def accepted_body(result: EnqueueResult) -> dict[str, Any]:
    """One accepted message as the README's API section shows it (and each of a batch's 202)."""
    return {
        "id": str(result.id),
        "status": "pending",
        "conversation_id": str(result.conversation_id),
        "to": result.to_number,
        "from": result.from_number,
        "provider": result.provider,
        "provider_sid": None,
        "segments": result.segments,
        "encoding": result.encoding,
        "created_at": result.created_at.isoformat(),
        "priority": result.priority,
        "send_at": _iso(result.send_at),
        "expires_at": _iso(result.expires_at),
    }


def accepted(result: EnqueueResult) -> JSONResponse:
    """The 202 of the README's API section; a replay answers exactly what the first request got."""
    headers = {"Location": f"/sms/messages/{result.id}"}
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(accepted_body(result), status_code=202, headers=headers)
