"""Twilio's Messages resource (2010-04-01), close enough that the twilio SDK cannot tell."""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator.faults import Fault
from simulator.numbers import rejection
from simulator.state import SimState
from simulator.store import SimMessage, twilio_sid

PREFIX = "/2010-04-01/Accounts/{account_sid}"
_ERRORS = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
}


def basic_auth_ok(request: Request, user: str, password: str) -> bool:
    """Constant-time check of HTTP Basic credentials."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return False
    try:
        got_user, _, got_password = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(got_user, user) & hmac.compare_digest(got_password, password)


def error(
    status: int, code: int, message: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Twilio's error body: {code, message, more_info, status}."""
    body = {
        "code": code,
        "message": message or _ERRORS.get(code, "Error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return JSONResponse(body, status_code=status, headers=headers)


def fault_response(fault: Fault) -> JSONResponse:
    if fault.status == 429:
        return error(429, 20429, headers={"Retry-After": f"{fault.retry_after or 1:g}"})
    if fault.code is not None:
        return error(fault.status, int(fault.code) if fault.code.isdigit() else 20001)
    return error(fault.status, 20500 if fault.status == 500 else 20503)


def _date(value: datetime | None) -> str | None:
    return format_datetime(value, usegmt=True) if value is not None else None


def message_json(m: SimMessage) -> dict[str, Any]:
    """A Message resource as Twilio renders it (dates in RFC 2822, counts as strings)."""
    uri = f"/2010-04-01/Accounts/{m.account}/Messages/{m.sid}.json"
    return {
        "account_sid": m.account,
        "api_version": "2010-04-01",
        "body": m.body,
        "date_created": _date(m.created_at),
        "date_sent": _date(m.sent_at),
        "date_updated": _date(m.updated_at),
        "direction": "outbound-api",
        "error_code": int(m.error_code) if m.error_code and m.error_code.isdigit() else None,
        "error_message": None,
        "from": m.from_number,
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": str(m.segments),
        "price": None,
        "price_unit": "USD",
        "sid": m.sid,
        "status": m.status,
        "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        "to": m.to_number,
        "uri": uri,
    }


def routes(state: SimState) -> list[Route]:
    """The Messages create, fetch and list endpoints bound to one simulator's state."""
    cfg = state.config

    def denied(request: Request) -> Response | None:
        account = request.path_params["account_sid"]
        if account != cfg.twilio_account_sid or not basic_auth_ok(
            request, cfg.twilio_account_sid, cfg.twilio_auth_token
        ):
            return error(401, 20003)
        return None

    async def create(request: Request) -> Response:
        if (refused := denied(request)) is not None:
            return refused
        # Parsed by hand: starlette's form parser needs python-multipart, which we do not install.
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        to, from_, body = (form.get(k, "") for k in ("To", "From", "Body"))
        if not to:
            return error(400, 21604, "A 'To' phone number is required.")
        if not from_:
            return error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return error(400, 21602, "Message body is required.")
        key = ("twilio", from_, to, body)
        await state.faults.delay()
        fault = state.faults.before_accept()
        if fault is not None:
            state.store.count_request(key, fault.kind)
            return fault_response(fault)
        refusal = rejection("twilio", from_, to)
        if refusal is not None:
            state.store.count_request(key, f"rejected_{refusal.code}")
            return error(refusal.status, int(refusal.code), refusal.message)
        callback = form.get("StatusCallback") or None
        message = state.store.add(
            SimMessage(twilio_sid(), "twilio", cfg.twilio_account_sid, from_, to, body, callback)
        )
        state.store.count_request(key, "accepted")
        state.callbacks.schedule(message)
        if state.faults.hang():
            message.hung = True
            await state.faults.hold(request)
            return Response(status_code=504)  # only if the client is still there at hang_max
        return JSONResponse(message_json(message), status_code=201)

    async def fetch(request: Request) -> Response:
        if (refused := denied(request)) is not None:
            return refused
        await state.faults.delay()
        if (down := state.faults.outage()) is not None:
            return fault_response(down)
        message = state.store.messages.get(request.path_params["sid"])
        if message is None or message.provider != "twilio":
            return error(404, 20404)
        return JSONResponse(message_json(message))

    async def listing(request: Request) -> Response:
        if (refused := denied(request)) is not None:
            return refused
        await state.faults.delay()
        if (down := state.faults.outage()) is not None:
            return fault_response(down)
        q = request.query_params
        try:
            page, size = int(q.get("Page", "0")), min(int(q.get("PageSize", "50")), 1000)
            sent_filters = [(op, _when(q[name])) for op, name in _SENT if q.get(name)]
        except ValueError:
            return error(400, 20001, "Invalid filter or paging value")
        found = [
            m
            for m in sorted(state.store.messages.values(), key=lambda m: m.created_at, reverse=True)
            if m.provider == "twilio"
            and q.get("To") in (None, m.to_number)
            and q.get("From") in (None, m.from_number)
            and all(_sent_matches(m.sent_at, op, when) for op, when in sent_filters)
        ]
        chunk = found[page * size : (page + 1) * size]
        base = request.url.path
        keep = {k: v for k, v in q.items() if k not in ("Page", "PageSize", "PageToken")}

        def link(n: int) -> str:
            return f"{base}?{urlencode({**keep, 'Page': n, 'PageSize': size})}"

        more = (page + 1) * size < len(found)
        return JSONResponse(
            {
                "messages": [message_json(m) for m in chunk],
                "page": page,
                "page_size": size,
                "start": page * size,
                "end": page * size + max(len(chunk) - 1, 0),
                "uri": link(page),
                "first_page_uri": link(0),
                "next_page_uri": link(page + 1) if more else None,
                "previous_page_uri": link(page - 1) if page > 0 else None,
            }
        )

    return [
        Route(PREFIX + "/Messages.json", create, methods=["POST"]),
        Route(PREFIX + "/Messages.json", listing, methods=["GET"]),
        Route(PREFIX + "/Messages/{sid}.json", fetch, methods=["GET"]),
    ]


# DateSent filters as the SDK sends them: exact day, on-or-before ("DateSent<"), on-or-after.
_SENT = (("=", "DateSent"), ("<", "DateSent<"), (">", "DateSent>"))


def _when(raw: str) -> datetime:
    """A DateSent value: `YYYY-MM-DD` (a day) or a full ISO timestamp."""
    text = raw.strip().replace("Z", "+00:00")
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _sent_matches(sent_at: datetime | None, op: str, when: datetime) -> bool:
    """Twilio filters on date_sent, which stays null until the carrier takes the message."""
    if sent_at is None:
        return False
    if op == "=":
        return sent_at.date() == when.date()
    return sent_at <= when if op == "<" else sent_at >= when
