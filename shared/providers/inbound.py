"""What a provider posts to a number's incoming-message webhook, read into one InboundMessage.

Pure: the payloads are plain forms and JSON, so no SDK is needed to read them (the signature was
checked with the SDKs' validators before anything here runs).

- Twilio (and SignalWire's compatibility API, cXML): `application/x-www-form-urlencoded` with
  MessageSid, AccountSid, From, To, Body, NumMedia, NumSegments... (Twilio's "request to your
  incoming message Webhook URL").
- SignalWire's native messaging webhook (a number whose message handler is a SWML webhook): JSON
  `{"message": {message_id, project_id, space_id, direction: "inbound", type, from, to, body,
  media, segments, timestamp}, "params": {}}` (`inboundMessageWebhook` of SignalWire's REST
  OpenAPI), signed like its status callbacks: X-SignalWire-Signature, hex HMAC-SHA1 of URL + body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

from shared.errors import SmsOutboxError
from shared.validation import MAX_BODY_CHARS

E164: Final = re.compile(r"\+[1-9][0-9]{1,14}")
# Provider message ids are 34 characters (Twilio) or a UUID (SignalWire); more is not an id.
MAX_SID_CHARS: Final = 64


class UnreadableInbound(SmsOutboxError):
    """A signed inbound webhook we cannot store: a field missing or not a phone number."""


@dataclass(frozen=True)
class InboundMessage:
    """One message a person sent to one of our numbers."""

    provider: str
    sid: str
    from_number: str  # the person who texted (E.164)
    to_number: str  # our number that received it (E.164)
    body: str  # may be empty (media only); at most MAX_BODY_CHARS, no NUL
    raw: Mapping[str, Any] = field(default_factory=dict)  # the payload without its body


def parse(provider: str, raw_body: bytes, content_type: str) -> InboundMessage:
    """The message of a verified inbound webhook; UnreadableInbound when it cannot be stored."""
    if provider == "signalwire" and "json" in content_type.lower():
        return _signalwire_json(raw_body)
    return _form(provider, raw_body)


def _form(provider: str, raw_body: bytes) -> InboundMessage:
    form = dict(parse_qsl(raw_body.decode("utf-8", "replace"), keep_blank_values=True))
    sid = form.get("MessageSid") or form.get("SmsMessageSid") or form.get("SmsSid") or ""
    raw = {k: v for k, v in form.items() if k != "Body"}
    return _checked(provider, sid, form.get("From"), form.get("To"), form.get("Body"), raw)


def _signalwire_json(raw_body: bytes) -> InboundMessage:
    try:
        data = json.loads(raw_body or b"{}")
    except ValueError:
        raise UnreadableInbound("not JSON") from None
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, dict):
        raise UnreadableInbound("no message object")
    raw = {k: v for k, v in message.items() if k != "body"}
    return _checked(
        "signalwire",
        message.get("message_id"),
        message.get("from"),
        message.get("to"),
        message.get("body"),
        raw,
    )


def _checked(
    provider: str,
    sid: object,
    from_number: object,
    to_number: object,
    body: object,
    raw: Mapping[str, Any],
) -> InboundMessage:
    if not isinstance(sid, str) or not 0 < len(sid) <= MAX_SID_CHARS:
        raise UnreadableInbound("no message id")
    for name, number in (("from", from_number), ("to", to_number)):
        if not isinstance(number, str) or E164.fullmatch(number) is None:
            # Short codes, alphanumeric senders and channel addresses (whatsapp:+1...) are not
            # conversations of ours; the text says which field without quoting it.
            raise UnreadableInbound(f"'{name}' is not an E.164 number")
    if body is not None and not isinstance(body, str):
        raise UnreadableInbound("body is not text")
    # PostgreSQL text holds no NUL; a longer body than any SMS can carry is cut, not refused:
    # the provider would post it again and again.
    text = (body or "").replace("\x00", "")[:MAX_BODY_CHARS]
    assert isinstance(from_number, str) and isinstance(to_number, str)
    return InboundMessage(provider, sid, from_number, to_number, text, raw)
