"""SignalWire's native Messaging API: the paths and shapes `signalwire-sdk`'s RestClient uses.

`client.messages.create(...)` posts JSON to /api/messaging/messages and gets a `Message.Message`;
`client.logs.messages.list()` / `.paginate()` and `.get(id)` read /api/messaging/logs
(`Message.LogListResponse` of `Message.MessageLog` entries, which carry no body): filters
created_after / created_before / created_on, page_size, and page_number + page_token from the
`links` of the previous page. Bodies follow SignalWire's REST OpenAPI (tests/provider_schemas/).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator.faults import Fault
from simulator.numbers import error_message, rejection
from simulator.state import SimState, Withdrawn
from simulator.store import SimMessage, iso_time, signalwire_id
from simulator.twilio_api import basic_auth_ok

_DOCS = "https://developer.signalwire.com/rest/overview/error-codes/#"
# The bare `{"error": ...}` bodies (Types.StatusCodes.StatusCode400/401/404/500).
_SIMPLE = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
CHARGE_PER_SEGMENT = 0.00415  # USD; only the shape matters here
# Message.CreateMessageRequest's properties; it has `unevaluatedProperties: {not: {}}`, so a
# body with any other (ValidityPeriod's kin included: this API takes no validity) is invalid.
CREATE_PROPERTIES = frozenset(
    ("to", "from", "body", "media", "send_as_mms", "status_callback", "custom_variables")
)


def errors(
    status: int,
    code: str,
    message: str,
    attribute: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """SignalWire's `errors[]` body (422 validation errors, 429)."""
    return error_list(status, [error_item(code, message, attribute)], headers)


def error_item(code: str, message: str, attribute: str | None = None) -> dict[str, Any]:
    """One `Types.StatusCodes.RestApiErrorItem`."""
    return {
        "type": "validation_error",
        "code": code,
        "message": message,
        "attribute": attribute,
        "url": _DOCS + code,
    }


def error_list(
    status: int, items: list[dict[str, Any]], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"errors": items}, status_code=status, headers=headers)


def unknown_properties(data: Mapping[str, Any]) -> JSONResponse | None:
    """422 naming each property the create schema does not declare, or None if there is none.

    `invalid_parameter` is the code SignalWire gives its generic validation errors (its error
    code list, signalwire/docs-legacy#703); there is one item per unknown property.
    """
    unknown = sorted(set(data) - CREATE_PROPERTIES)
    if not unknown:
        return None
    items = [error_item("invalid_parameter", "is not a permitted parameter", k) for k in unknown]
    return error_list(422, items)


def simple(status: int) -> JSONResponse:
    """SignalWire's bare `{"error": ...}` body (400, 401, 404, 5xx)."""
    return JSONResponse({"error": _SIMPLE.get(status, _SIMPLE[503])}, status_code=status)


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


def message_json(m: SimMessage) -> dict[str, Any]:
    """The `Message.Message` record returned by create (closed schema: no custom_variables)."""
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
        "error_message": error_message(m.error_code),
        "created_at": iso_time(m.created_at),
        "project_id": m.account,
        "status_callback_url": m.status_callback,
        "message_uri": f"/api/messaging/logs/{m.sid}",
    }


def log_json(m: SimMessage) -> dict[str, Any]:
    """A `Message.MessageLog` entry (no body on the real API either)."""
    charge = round(CHARGE_PER_SEGMENT * m.segments, 5) if m.billed else 0.0
    return {
        "id": m.sid,
        "from": m.from_number,
        "to": m.to_number,
        "status": m.status,
        "direction": "outbound",
        "kind": "sms",
        "source": "realtime_api",
        "type": "relay_message",
        "url": None,  # "Null for Relay messages"
        "number_of_segments": m.segments,
        "charge": charge,
        "charge_details": [{"description": "Outbound SMS", "charge": charge}] if m.billed else [],
        "created_at": iso_time(m.created_at),
        "error_message": error_message(m.error_code),
        "error_code": m.error_code,
    }


def routes(state: SimState) -> list[Route]:
    """The create and log endpoints bound to one simulator's state."""
    cfg = state.config

    def denied(request: Request) -> Response | None:
        ok = basic_auth_ok(request, cfg.signalwire_project, cfg.signalwire_token)
        return None if ok else simple(401)

    async def accept(
        request: Request, raw: bytes, delayed: bool
    ) -> Response | tuple[SimMessage, dict[str, Any]]:
        """What SignalWire does with a create request once it arrives: a refusal or a message."""
        if (refused := denied(request)) is not None:
            return refused
        try:
            data = json.loads(raw)
        except ValueError:
            return simple(400)
        if not isinstance(data, dict):
            return simple(400)
        if (unknown := unknown_properties(data)) is not None:
            return unknown
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
        if (limited := state.paced(from_, body)) is not None:
            state.store.count_request(key, "pace_limited")
            return fault_response(limited)
        raw_variables = data.get("custom_variables")
        variables = (
            {str(k): str(v) for k, v in raw_variables.items()}
            if isinstance(raw_variables, dict)
            else {}
        )
        message = SimMessage(
            signalwire_id(),
            "signalwire",
            cfg.signalwire_project,
            from_,
            to,
            body,
            str(data.get("status_callback") or "") or None,
            variables,
            message_id=variables.get("message_id") or None,
            ingress_delayed=delayed,
        )
        state.store.add(message)
        state.store.count_request(key, "accepted")
        answer = message_json(message)  # as created: queued, before any status change
        state.callbacks.schedule(message)
        message.hung = state.faults.hang()
        return message, answer

    async def create(request: Request) -> Response:
        raw = await request.body()  # all of it arrived, as a proxy in front would have it
        try:
            outcome = await state.admit(lambda delayed: accept(request, raw, delayed))
        except Withdrawn:
            return fault_response(Fault("outage", 503))
        if isinstance(outcome, Response):
            return outcome
        message, answer = outcome
        if message.hung:
            await state.faults.hold(request)
            return Response(status_code=504)  # only if the client is still there at hang_max
        return JSONResponse(answer, status_code=201)

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
        base = str(request.url.replace(query=""))
        try:
            return JSONResponse(log_page(state, base, request.query_params))
        except InvalidParameter as e:
            return errors(422, e.code, e.message, e.attribute)

    return [
        Route("/api/messaging/messages", create, methods=["POST"]),
        Route("/api/messaging/logs", log_list, methods=["GET"]),
        Route("/api/messaging/logs/{id}", log_get, methods=["GET"]),
    ]


class InvalidParameter(ValueError):
    """A log-list query value SignalWire would answer 422 for."""

    def __init__(self, attribute: str, code: str, message: str) -> None:
        super().__init__(message)
        self.attribute, self.code, self.message = attribute, code, message


_PAGING = ("page_number", "page_size", "page_token")


def log_page(state: SimState, base: str, q: Mapping[str, str]) -> dict[str, Any]:
    """One page of `GET /api/messaging/logs`, newest first, with `links` to the next and previous.

    Pages after the first are named by page_token, a cursor (`PA` + the last id of this page for
    `next`, `PB` + its first for `prev`), as in the spec's LogPaginationResponse examples.
    """
    try:
        size = int(q.get("page_size", "50"))
        number = int(q.get("page_number", "0"))
    except ValueError:
        raise InvalidParameter("page_size", "invalid_parameter", "Must be an integer") from None
    if not 1 <= size <= 1000:
        raise InvalidParameter("page_size", "invalid_parameter", "Must be between 1 and 1000")
    after, before, on = (_bound(q, k) for k in ("created_after", "created_before", "created_on"))
    found = [
        m
        for m in state.store.newest_first("signalwire")
        if (after is None or m.created_at >= after)
        and (before is None or m.created_at < before)
        and (on is None or m.created_at.astimezone(UTC).date() == on.date())
    ]
    token = q.get("page_token") or None
    if number > 0 and token is None:
        raise InvalidParameter(
            "page_token", "invalid_parameter", "page_token is required when page_number > 0"
        )
    start = state.store.page_start(found, token, size) if token else 0
    if start is None:
        raise InvalidParameter("page_token", "invalid_parameter", "Invalid page_token")
    chunk = found[start : start + size]
    filters = {k: v for k, v in q.items() if k not in _PAGING}

    def link(n: int | None, cursor: str | None) -> str:
        params: dict[str, Any] = dict(filters)
        if n is not None:
            params["page_number"] = n
        params["page_size"] = size
        if cursor is not None:
            params["page_token"] = cursor
        return f"{base}?{urlencode(params)}"

    links = {"self": link(number, token), "first": link(None, None)}
    if chunk and start + len(chunk) < len(found):
        links["next"] = link(number + 1, f"PA{chunk[-1].sid}")
    if chunk and start > 0:
        links["prev"] = link(max(number - 1, 0), f"PB{chunk[0].sid}")
    return {"links": links, "data": [log_json(m) for m in chunk]}


def _bound(q: Mapping[str, str], name: str) -> datetime | None:
    """A created_* filter: a day (`2024-04-30`, from its midnight UTC) or a full ISO timestamp."""
    raw = q.get(name)
    if not raw:
        return None
    text = raw.strip().replace("Z", "+00:00")
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidParameter(name, "datetime_required", "This value must be a DateTime") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
