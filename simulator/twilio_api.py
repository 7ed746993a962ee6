"""Twilio's Messages resource (2010-04-01), close enough that the twilio SDK cannot tell.

Bodies follow `api.v2010.account.message` and `ListMessageResponse` of Twilio's OpenAPI
description (tests/provider_schemas/): all 20 properties, RFC 2822 dates in +0000, counts as
strings, URIs relative to https://api.twilio.com.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from datetime import UTC, date, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator.faults import Fault
from simulator.numbers import error_message, rejection
from simulator.state import SimState, Withdrawn
from simulator.store import SimMessage, twilio_sid

API_VERSION = "2010-04-01"
PREFIX = "/2010-04-01/Accounts/{account_sid}"
PRICE_PER_SEGMENT = 0.0079  # USD, a US long-code segment; only the shape matters here
_ERRORS = {
    20001: "Invalid parameter",
    21624: "Invalid validity period value",
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


VALIDITY_RANGE = range(1, 36001)  # seconds; the Messages create spec's ValidityPeriod


def validity_period(raw: str | None) -> int | Response | None:
    """`ValidityPeriod` as seconds (None when not sent), or Twilio's 400 for a bad value.

    The spec: "Accepted values are integers from `1` to `36000`". Twilio's error 21624
    ("Invalid validity period value": "can only be set to integers between 1 and 36,000
    seconds") names this request parameter, so a non-integer gets it too.
    """
    if raw is None:
        return None
    text = raw.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isascii() and digits.isdigit()) or int(text) not in VALIDITY_RANGE:
        return error(
            400,
            21624,
            "Validity period can only be set to integers between 1 and 36,000 seconds.",
        )
    return int(text)


def rfc2822(value: datetime | None) -> str | None:
    """Twilio's date format: `Thu, 24 Aug 2023 05:01:45 +0000` (whole seconds, GMT)."""
    if value is None:
        return None
    return format_datetime(value.astimezone(UTC).replace(microsecond=0))


def message_json(m: SimMessage) -> dict[str, Any]:
    """A Message resource as Twilio renders it (create 201, fetch 200 and list items)."""
    uri = f"/{API_VERSION}/Accounts/{m.account}/Messages/{m.sid}.json"
    code = int(m.error_code) if m.error_code and m.error_code.isdigit() else None
    return {
        "account_sid": m.account,
        "api_version": API_VERSION,
        "body": m.body,
        "date_created": rfc2822(m.created_at),
        "date_sent": rfc2822(m.sent_at),
        "date_updated": rfc2822(m.updated_at),
        "direction": "outbound-api",
        "error_code": code,
        "error_message": error_message(str(code)) if code is not None else None,
        "from": m.from_number,
        "messaging_service_sid": None,  # sent from a number, not through a Messaging Service
        "num_media": "0",
        "num_segments": str(m.segments),
        # Populated once the carrier took it; a failed message is not charged.
        "price": f"{-PRICE_PER_SEGMENT * m.segments:.5f}" if m.billed else None,
        "price_unit": "USD",
        "sid": m.sid,
        "status": m.status,
        "subresource_uris": {
            "media": uri.removesuffix(".json") + "/Media.json",
            "feedback": uri.removesuffix(".json") + "/Feedback.json",
        },
        "to": m.to_number,
        "uri": uri,
    }


def our_message_id(status_callback: str | None) -> str | None:
    """Our message id, which rides in the StatusCallback query string (`message_id=`)."""
    if not status_callback:
        return None
    return dict(parse_qsl(urlsplit(status_callback).query)).get("message_id") or None


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

    async def accept(
        request: Request, raw: bytes, delayed: bool
    ) -> Response | tuple[SimMessage, dict[str, Any]]:
        """What Twilio does with a create request once it arrives: a refusal or a message."""
        if (refused := denied(request)) is not None:
            return refused
        # Parsed by hand: starlette's form parser needs python-multipart, which we do not install.
        form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        to, from_, body = (form.get(k, "") for k in ("To", "From", "Body"))
        if not to:
            return error(400, 21604, "A 'To' phone number is required.")
        if not from_:
            return error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return error(400, 21602, "Message body is required.")
        validity = validity_period(form.get("ValidityPeriod"))
        if isinstance(validity, Response):
            return validity
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
        if (limited := state.paced(from_, body)) is not None:
            state.store.count_request(key, "pace_limited")
            return fault_response(limited)
        callback = form.get("StatusCallback") or None
        message = SimMessage(
            twilio_sid(),
            "twilio",
            cfg.twilio_account_sid,
            from_,
            to,
            body,
            callback,
            message_id=our_message_id(callback),
            ingress_delayed=delayed,
            validity_period=validity,
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

    async def fetch(request: Request) -> Response:
        if (refused := denied(request)) is not None:
            return refused
        await state.faults.delay()
        if (down := state.faults.outage()) is not None:
            return fault_response(down)
        message = state.store.messages.get(request.path_params["sid"])
        if message is None or message.provider != "twilio":
            return error(404, 20404, f"The requested resource {request.url.path} was not found")
        return JSONResponse(message_json(message))

    async def listing(request: Request) -> Response:
        if (refused := denied(request)) is not None:
            return refused
        await state.faults.delay()
        if (down := state.faults.outage()) is not None:
            return fault_response(down)
        try:
            return JSONResponse(list_page(state, request.url.path, request.query_params))
        except ValueError as e:
            return error(400, 20001, str(e))

    return [
        Route(PREFIX + "/Messages.json", create, methods=["POST"]),
        Route(PREFIX + "/Messages.json", listing, methods=["GET"]),
        Route(PREFIX + "/Messages/{sid}.json", fetch, methods=["GET"]),
    ]


_PAGING = ("PageSize", "Page", "PageToken")
# DateSent filters as the SDK sends them: on that day / on or before / on or after.
_SENT = (("=", "DateSent"), ("<", "DateSent<"), (">", "DateSent>"))


def list_page(state: SimState, path: str, q: Mapping[str, str]) -> dict[str, Any]:
    """One page of `GET Messages.json`: filtered, newest first, with Twilio's paging links.

    Like Twilio's, the next and previous links carry a PageToken cursor (`PA` + the last sid of
    this page, `PB` + its first), as in the spec's readFullPage1 example.
    """
    try:
        size = int(q.get("PageSize", "50"))
        page = int(q.get("Page", "0"))
    except ValueError:
        raise ValueError("PageSize and Page must be integers") from None
    if not 1 <= size <= 1000 or page < 0:
        raise ValueError("PageSize must be between 1 and 1000 and Page at least 0")
    sent_filters = [(op, _when(q[name])) for op, name in _SENT if q.get(name)]
    found = [
        m
        for m in state.store.newest_first("twilio")
        if q.get("To") in (None, m.to_number)
        and q.get("From") in (None, m.from_number)
        and all(_sent_matches(m.sent_at, op, when) for op, when in sent_filters)
    ]
    token = q.get("PageToken") or None
    start = state.store.page_start(found, token, size) if token else page * size
    if start is None:
        raise ValueError(f"Invalid PageToken {token!r}")
    chunk = found[start : start + size]
    filters = {k: v for k, v in q.items() if k not in _PAGING}

    def link(n: int, cursor: str | None = None) -> str:
        params: dict[str, Any] = {**filters, "PageSize": size, "Page": n}
        if cursor is not None:
            params["PageToken"] = cursor
        return f"{path}?{urlencode(params)}"

    more = start + len(chunk) < len(found)
    first_at = page * size
    return {
        "end": first_at + max(len(chunk) - 1, 0),
        "first_page_uri": link(0),
        "next_page_uri": link(page + 1, f"PA{chunk[-1].sid}") if more and chunk else None,
        "page": page,
        "page_size": size,
        "previous_page_uri": (
            link(page - 1, f"PB{chunk[0].sid}" if chunk else None) if page > 0 else None
        ),
        "messages": [message_json(m) for m in chunk],
        "start": first_at,
        "uri": link(page, token),
    }


def _when(raw: str) -> date | datetime:
    """A DateSent value: a GMT day (`YYYY-MM-DD`) or a time (ISO 8601, as the SDK sends, or
    RFC 2822, as Twilio writes its dates)."""
    text = raw.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            value = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            raise ValueError(f"Invalid DateSent value {raw!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _sent_matches(sent_at: datetime | None, op: str, when: date | datetime) -> bool:
    """Twilio filters on date_sent, which stays null until the carrier takes the message.

    A day compares by day ("on and before", "on and after"); a time compares by the instant.
    """
    if sent_at is None:
        return False
    if not isinstance(when, datetime):
        day = sent_at.astimezone(UTC).date()
        return day == when if op == "=" else day <= when if op == "<" else day >= when
    if op == "=":
        return sent_at.astimezone(UTC).date() == when.astimezone(UTC).date()
    return sent_at <= when if op == "<" else sent_at >= when
