"""shared.providers.inbound: each provider's incoming-message payload read into one shape."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from shared.providers.inbound import InboundMessage, UnreadableInbound, parse

FORM = "application/x-www-form-urlencoded"
SID = "SM" + "a" * 32
SW_ID = "c2d3e4f5-a6b7-4901-8def-234567890abc"


def twilio_form(**fields: str) -> bytes:
    base = {
        "MessageSid": SID,
        "AccountSid": "AC" + "0" * 32,
        "From": "+14155552671",
        "To": "+15005550006",
        "Body": "Thanks!",
        "NumMedia": "0",
        "NumSegments": "1",
    }
    return urlencode({**base, **fields}).encode()


def sw_json(**fields: object) -> bytes:
    message = {
        "message_id": SW_ID,
        "project_id": "00000000-0000-4000-8000-000000000000",
        "space_id": "00000000-0000-4000-8000-00000000000a",
        "direction": "inbound",
        "type": "sms",
        "from": "+14155552671",
        "to": "+15005550010",
        "body": "STOP",
        "media": [],
        "segments": 1,
        "timestamp": "2026-01-15T10:30:00Z",
        **fields,
    }
    return json.dumps({"message": message, "params": {}}).encode()


def test_twilio_form() -> None:
    """Twilio's form: sid, the person (From), our number (To), the body; raw keeps the rest."""
    got = parse("twilio", twilio_form(), FORM)
    assert got == InboundMessage("twilio", SID, "+14155552671", "+15005550006", "Thanks!", got.raw)
    assert "Body" not in got.raw and got.raw["NumSegments"] == "1"


def test_signalwire_native_json() -> None:
    """SignalWire's messaging webhook JSON: the `message` object is the message."""
    got = parse("signalwire", sw_json(), "application/json")
    assert (got.sid, got.from_number, got.to_number, got.body) == (
        SW_ID,
        "+14155552671",
        "+15005550010",
        "STOP",
    )
    assert "body" not in got.raw and got.raw["direction"] == "inbound"


def test_signalwire_compatibility_form() -> None:
    """SignalWire's cXML form reads as Twilio's does, as signalwire's."""
    got = parse("signalwire", twilio_form(MessageSid=SW_ID), FORM)
    assert (got.provider, got.sid) == ("signalwire", SW_ID)


def test_media_only_message_has_an_empty_body() -> None:
    """A null body (media only) is stored as empty text."""
    assert parse("signalwire", sw_json(body=None), "application/json").body == ""


def test_long_body_is_cut_and_nul_dropped() -> None:
    """No SMS carries more than 1,600 characters, and PostgreSQL text holds no NUL."""
    got = parse("twilio", twilio_form(Body="a\x00" + "b" * 2000), FORM)
    assert got.body == "a" + "b" * 1599


@pytest.mark.parametrize(
    "payload",
    [
        twilio_form(From="12345"),  # a short code
        twilio_form(From="whatsapp:+14155552671"),
        twilio_form(To=""),
        twilio_form(MessageSid="", SmsSid=""),
        sw_json(message_id=None),
        sw_json(to=5),
        b"not json",
        b"[]",
    ],
)
def test_unstorable_payloads_are_refused(payload: bytes) -> None:
    """No sid, or a party that is not an E.164 number: UnreadableInbound (the API answers 400)."""
    content_type = FORM if payload.startswith(b"Message") else "application/json"
    with pytest.raises(UnreadableInbound):
        parse("signalwire" if content_type != FORM else "twilio", payload, content_type)
