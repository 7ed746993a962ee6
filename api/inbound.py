"""Messages people text to our numbers: POST /webhook/{twilio,signalwire}/inbound.

Signature-checked exactly as status callbacks are (api.webhooks.verified_body: 403 and nothing
written when bad), stored as an inbound message in its conversation, keywords applied
(shared.inbound), answered with the provider's empty reply: we never auto-reply.
"""

from __future__ import annotations

import json
import logging
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.middleware import request_id
from api.state import state
from api.webhooks import verified_body
from shared import inbound, metrics
from shared.providers.inbound import UnreadableInbound, parse

log = logging.getLogger(__name__)

TWILIO_INBOUND_PATH: Final = "/webhook/twilio/inbound"
SIGNALWIRE_INBOUND_PATH: Final = "/webhook/signalwire/inbound"
# TwiML (and SignalWire's cXML) that does nothing: no <Message>, so no reply is sent.
EMPTY_XML: Final = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
# SignalWire's messaging webhook expects a SWML document back; `receive` accepts the message
# without a reply (SWML messaging reference, "receive").
EMPTY_SWML: Final = json.dumps({"version": "1.0.0", "sections": {"main": [{"receive": {}}]}})


async def twilio_inbound(request: Request) -> Response:
    """POST /webhook/twilio/inbound: Twilio's signed incoming-message form."""
    return await _inbound(request, "twilio", TWILIO_INBOUND_PATH)


async def signalwire_inbound(request: Request) -> Response:
    """POST /webhook/signalwire/inbound: SignalWire's signed messaging webhook (JSON), or the
    compatibility API's form."""
    return await _inbound(request, "signalwire", SIGNALWIRE_INBOUND_PATH)


async def _inbound(request: Request, provider_name: str, path: str) -> Response:
    body = await verified_body(request, provider_name, path, "inbound message")
    if isinstance(body, Response):
        return body
    content_type = request.headers.get("content-type", "")
    try:
        message = parse(provider_name, body, content_type)
    except UnreadableInbound as e:
        # Signed by the provider, yet not storable (a short code, a missing field): the reason
        # names the field, never its value.
        log.error(
            "inbound message unreadable: %s",
            e,
            extra={"action": "inbound_unreadable", "provider": provider_name},
        )
        return Response(status_code=400)
    # A database that cannot be reached is api.middleware's 503 (the provider posts it again).
    async with state(request).pool.connection() as conn:
        received = await inbound.receive(conn, message, request_id=request_id(request))
    if received.created:
        kind = received.keyword.value if received.keyword else "reply"
        metrics.INBOUND_MESSAGES.labels(provider_name, kind).inc()
    if provider_name == "signalwire" and "json" in content_type.lower():
        return Response(EMPTY_SWML, media_type="application/json")
    return Response(EMPTY_XML, media_type="text/xml")


routes: list[BaseRoute] = [
    Route(TWILIO_INBOUND_PATH, twilio_inbound, methods=["POST"], name="twilio_inbound"),
    Route(SIGNALWIRE_INBOUND_PATH, signalwire_inbound, methods=["POST"], name="signalwire_inbound"),
]
