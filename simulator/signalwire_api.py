"""SignalWire's native Messaging API: the paths and shapes `signalwire-sdk`'s RestClient uses.

`client.messages.create(...)` posts JSON to /api/messaging/messages; `client.logs.messages.list()`
and `.get(id)` read /api/messaging/logs (filters created_after/created_before/created_on, page_size,
paging by `links.next`). Log entries carry no body, as on the real API.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator.faults import Fault
from simulator.numbers import rejection
from simulator.state import SimState
from simulator.store import SimMessage, signalwire_id
from simulator.twilio_api import basic_auth_ok

_DOCS = "https://developer.signalwire.com/rest/overview/error-codes/#"
_SIMPLE = {401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error"}


def errors(
    status: int,
    code: str,
    message: str,
    attribute: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """SignalWire's `errors[]` body (422 validation errors, 429)."""
    item = {"type": "validation_error", "code": code, "message": message, "attribute": attribute}
    item["url"] = _DOCS + code
    return JSONResponse({"errors": [item]}, status_code=status, headers=headers)


def simple(status: int) -> JSONResponse:
    """SignalWire's bare `{"error": ...}` body (401, 404, 5xx)."""
    return JSONResponse({"error": _SIMPLE.get(status, "Service Unavailable")}, status_code=status)


def fault_response(fault: Fault) -> JSONResponse:
    if fault.status == 429:
        return errors(
            429,
            "rate_limit_exceeded",
            "Too many requests.",
            headers={"Retry-After": f"{fault.retry_after or 1:g}"},
        )
    if fault.code is not None:
        return errors(422, fault.code, f"Simulated error {fault.code}.")
    return simple(fault.status)


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message_json(m: SimMessage) -> dict[str, Any]:
    """The Message record returned by create."""
    return {
        "id": m.sid,
        "from": m.from_number,
        "to": m.to_number,
        "body": m.body,
        "status": m.status,
        "direction": "outbound",
        "kind": "sms",
        "media": [],
        "number_of_segments": m.segments,
        "error_code": m.error_code,
        "error_message": None,
        "created_at": _iso(m.created_at),
        "project_id": m.account,
        "status_callback_url": m.status_callback,
        "custom_variables": m.custom_variables,
        "message_uri": f"/api/messaging/messages/{m.sid}",
    }


def log_json(m: SimMessage) -> dict[str, Any]:
    """A message log entry (no body on the real API either)."""
    return {
        "id": m.sid,
        "from": m.from_number,
        "to": m.to_number,
        "status": m.status,
        "direction": "outbound",
        "kind": "sms",
        "source": "realtime_api",
        "type": "relay_message",
        "url": None,
        "number_of_segments": m.segments,
        "charge": 0.0,
        "charge_details": [],
        "created_at": _iso(m.created_at),
    }


def routes(state: SimState) -> list[Route]:
    """The create and log endpoints bound to one simulator's state."""
    cfg = state.config

    def denied(request: Request) -> Response | None:
        ok = basic_auth_ok(request, cfg.signalwire_project, cfg.signalwire_token)
        return None if ok else simple(401)

    async def create(request: Request) -> Response:
        if (refused := denied(request)) is not None:
            return refused
        try:
            data = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "Bad Request"}, status_code=400)
        if not isinstance(data, dict):
            return JSONResponse({"error": "Bad Request"}, status_code=400)
        to, from_, body = (str(data.get(k) or "") for k in ("to", "from", "body"))
        for name, value in (("to", to), ("from", from_), ("body", body)):
            if not value:
                return errors(422, "missing_required_parameter", f"{name} is required", name)
        key = ("signalwire", from_, to, body)
        await state.faults.delay()
        fault = state.faults.before_accept()
        if fault is not None:
            state.store.count_request(key, fault.kind)
            return fault_response(fault)
        refusal = rejection("signalwire", from_, to)
        if refusal is not None:
            state.store.count_request(key, f"rejected_{refusal.code}")
            headers = {"Retry-After": f"{cfg.retry_after:g}"} if refusal.status == 429 else None
            return errors(refusal.status, refusal.code, refusal.message, refusal.attribute, headers)
        variables = data.get("custom_variables") or {}
        message = SimMessage(
            signalwire_id(),
            "signalwire",
            cfg.signalwire_project,
            from_,
            to,
            body,
            str(data.get("status_callback") or "") or None,
            {str(k): str(v) for k, v in dict(variables).items()},
        )
        state.store.add(message)
        state.store.count_request(key, "accepted")
        state.callbacks.schedule(message)
        if state.faults.hang():
            message.hung = True
            await state.faults.hold(request)
            return Response(status_code=504)
        return JSONResponse(message_json(message), status_code=201)

    async def log_get(request: Request) -> Response:
        if (refused := denied(request)) is not None:
            return refused
        await state.faults.delay()
        if (down := state.faults.outage()) is not None:
            return fault_response(down)
        message = state.store.messages.get(request.path_params["id"])
        if message is None or message.provider != "signalwire":
            return simple(404)
        return JSONResponse(log_json(message))

    async def log_list(request: Request) -> Response:
        if (refused := denied(request)) is not None:
            return refused
        await state.faults.delay()
        if (down := state.faults.outage()) is not None:
            return fault_response(down)
        q = request.query_params
        try:
            size = min(int(q.get("page_size", "50")), 1000)
            offset = int(q.get("page_token", "PA0").removeprefix("PA"))
            after, before, on = (
                _bound(q.get(k)) for k in ("created_after", "created_before", "created_on")
            )
        except ValueError:
            return errors(422, "invalid_parameter", "Invalid filter or paging value")
        found = [
            m
            for m in sorted(state.store.messages.values(), key=lambda m: m.created_at, reverse=True)
            if m.provider == "signalwire"
            and (after is None or m.created_at >= after)
            and (before is None or m.created_at < before)
            and (on is None or m.created_at.date() == on.date())
        ]
        chunk = found[offset : offset + size]
        keep = {k: v for k, v in q.items() if k != "page_token"}
        base = str(request.url.replace(query=""))

        def link(start: int) -> str:
            return f"{base}?{urlencode({**keep, 'page_size': size, 'page_token': f'PA{start}'})}"

        links = {"self": link(offset), "first": link(0)}
        if offset + size < len(found):
            links["next"] = link(offset + size)
        if offset > 0:
            links["prev"] = link(max(offset - size, 0))
        return JSONResponse({"links": links, "data": [log_json(m) for m in chunk]})

    return [
        Route("/api/messaging/messages", create, methods=["POST"]),
        Route("/api/messaging/logs", log_list, methods=["GET"]),
        Route("/api/messaging/logs/{id}", log_get, methods=["GET"]),
    ]


def _bound(raw: str | None) -> datetime | None:
    """A created_* filter: a day (`2024-04-30`, from its midnight UTC) or a full ISO timestamp."""
    if not raw:
        return None
    text = raw.strip().replace("Z", "+00:00")
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
