"""Texting back: `POST /_sim/inbound {from, to, body, provider?}` posts the signed webhook a
provider posts when a person texts one of our numbers, and answers what it posted.

- Twilio: the incoming-message form (MessageSid, AccountSid, From, To, Body, NumMedia,
  NumSegments...; "Twilio's request to your incoming message Webhook URL"), X-Twilio-Signature.
- SignalWire, native (the default, as our status callbacks are): the messaging webhook of a
  number whose message handler is a SWML webhook, JSON `{"message": {...}, "params": {}}`
  (`inboundMessageWebhook` of its REST OpenAPI), X-SignalWire-Signature = hex HMAC-SHA1 of
  URL + body (messaging requests carry no SHA-256 header).
- SignalWire with `signalwire_callback_format=form` (compatibility API, cXML): AccountSid, Body,
  From, MessageSid, NumMedia, To, signed Twilio's way with the signing key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from twilio.request_validator import RequestValidator

from simulator import segments
from simulator.config import SimConfig
from simulator.state import SimState
from simulator.store import twilio_sid

PROVIDERS = ("twilio", "signalwire")
FIELDS = ("from", "to", "body", "provider")
# The space our SignalWire project lives in (the native payload names it; any UUID will do here).
SPACE_ID = "00000000-0000-4000-8000-00000000000a"


def twilio_params(config: SimConfig, sid: str, from_: str, to: str, body: str) -> dict[str, str]:
    """Twilio's incoming-message form (no Messaging Service, no media, no geographic fields)."""
    return {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "AccountSid": config.twilio_account_sid,
        "From": from_,
        "To": to,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": str(segments.count(body)),
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }


def cxml_params(config: SimConfig, sid: str, from_: str, to: str, body: str) -> dict[str, str]:
    """SignalWire's compatibility (cXML) incoming-message form."""
    return {
        "AccountSid": config.signalwire_project,
        "Body": body,
        "From": from_,
        "MessageSid": sid,
        "NumMedia": "0",
        "To": to,
    }


def signalwire_payload(
    config: SimConfig, sid: str, from_: str, to: str, body: str, at: datetime
) -> dict[str, Any]:
    """SignalWire's native messaging webhook body (InboundMessageWebhookPayload)."""
    return {
        "message": {
            "message_id": sid,
            "project_id": config.signalwire_project,
            "space_id": SPACE_ID,
            "direction": "inbound",
            "type": "sms",
            "from": from_,
            "to": to,
            "body": body,
            "media": [],
            "segments": segments.count(body),
            "timestamp": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "params": {},
    }


def signed_request(
    config: SimConfig, provider: str, url: str, from_: str, to: str, body: str
) -> tuple[str, bytes, dict[str, str], Any]:
    """(sid, raw body, headers, the payload as data) of one inbound webhook to `url`."""
    if provider == "twilio":
        sid = twilio_sid()
        params = twilio_params(config, sid, from_, to, body)
        signature = RequestValidator(config.twilio_auth_token).compute_signature(url, params)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        }
        return sid, urlencode(params).encode(), headers, params
    sid = str(uuid.uuid4())
    key = config.signalwire_signing_key
    if config.signalwire_callback_format == "form":
        params = cxml_params(config, sid, from_, to, body)
        signature = RequestValidator(key).compute_signature(url, params)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-SignalWire-Signature": signature,
            "X-Twilio-Signature": signature,
        }
        return sid, urlencode(params).encode(), headers, params
    payload = signalwire_payload(config, sid, from_, to, body, datetime.now(UTC))
    content = json.dumps(payload).encode()
    signed = hmac.new(key.encode(), url.encode() + content, hashlib.sha1).hexdigest()
    headers = {"Content-Type": "application/json", "X-SignalWire-Signature": signed}
    return sid, content, headers, payload


def inbound_url(config: SimConfig, provider: str, to: str) -> str | None:
    """Where a text to our number `to` goes: inbound_urls[to], else inbound_url; None if unset."""
    template = config.inbound_urls.get(to) or config.inbound_url
    return template.replace("{provider}", provider) if template else None


def provider_of(state: SimState, number: str) -> str:
    """The provider that carries our number: the one it last sent through here, else Twilio."""
    sent = [m for m in state.store.messages.values() if m.from_number == number]
    return max(sent, key=lambda m: m.seq).provider if sent else "twilio"


def _bad(text: str) -> JSONResponse:
    return JSONResponse({"error": text}, status_code=400)


async def post_inbound(request: Request, state: SimState) -> Response:
    """`POST /_sim/inbound`: post the webhook, answer what was posted and the status it got."""
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        return _bad("the body must be a JSON object")
    if not isinstance(data, dict):
        return _bad("the body must be a JSON object")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        return _bad(f"unknown field(s) {', '.join(unknown)}; expected {', '.join(FIELDS)}")
    from_, to, body = data.get("from"), data.get("to"), data.get("body", "")
    if not (isinstance(from_, str) and isinstance(to, str) and isinstance(body, str)):
        return _bad("from and to (phone numbers) and body are strings; from and to are required")
    provider = data.get("provider") or provider_of(state, to)
    if provider not in PROVIDERS:
        return _bad(f"provider must be one of {', '.join(PROVIDERS)}")
    url = inbound_url(state.config, provider, to)
    if url is None:
        return _bad("no inbound URL: set inbound_url (or inbound_urls for this number)")
    sid, content, headers, posted = signed_request(state.config, provider, url, from_, to, body)
    answer: dict[str, Any] = {
        "provider": provider,
        "url": url,
        "sid": sid,
        "content_type": headers["Content-Type"],
        "posted": posted,
    }
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            response = await client.post(url, content=content, headers=headers)
    except httpx.HTTPError as e:
        return JSONResponse({**answer, "status": None, "error": str(e)}, status_code=502)
    return JSONResponse(
        {
            **answer,
            "status": response.status_code,
            "answer_content_type": response.headers.get("content-type"),
            "answer": response.text,
        }
    )
