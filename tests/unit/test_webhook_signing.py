"""shared.webhook_signing and shared.webhook_events: bodies, ids and Standard Webhooks signatures,
checked with the `standardwebhooks` library's own verifier."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from shared.webhook_events import (
    EVENT_TYPES,
    MESSAGE_DATA_FIELDS,
    envelope,
    event_for_status,
    message_data,
    rfc3339,
    unknown_events,
    wants,
)
from shared.webhook_signing import (
    encode,
    headers,
    new_secret,
    secrets_in_force,
    webhook_id,
)

AT = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
MESSAGE = {
    "id": uuid.UUID("00000000-0000-4000-8000-000000000001"),
    "conversation_id": uuid.UUID("00000000-0000-4000-8000-000000000002"),
    "to_number": "+14155550123",
    "from_number": "+15005550006",
    "error_code": "30007",
    "error_category": "delivery",
    "error_message": "filtered",
    "segments": 2,
    "attempts": 1,
    "direction": "outbound",
    "body": "never part of a webhook",
}


def test_new_secret_is_whsec_and_base64_of_32_random_bytes() -> None:
    """whsec_ + base64 of 32 bytes (the spec asks for at least 24), which the library accepts."""
    secret = new_secret(lambda n: bytes(range(n)))
    assert secret.startswith("whsec_")
    assert base64.b64decode(secret.removeprefix("whsec_")) == bytes(range(32))
    Webhook(secret)  # the library takes it as is
    assert new_secret() != new_secret()


def test_webhook_id_is_msg_and_the_hex_of_the_delivery() -> None:
    """webhook-id is stable for a delivery: msg_ + its uuid's hex."""
    assert webhook_id(MESSAGE["id"]) == "msg_00000000000040008000000000000001"  # type: ignore[arg-type]


def test_the_body_is_the_same_bytes_whatever_the_key_order() -> None:
    """Every retry sends the same bytes: compact, sorted, ASCII-only JSON."""
    one = encode({"type": "message.sent", "data": {"b": 1, "a": "é"}})
    two = encode({"data": {"a": "é", "b": 1}, "type": "message.sent"})
    assert one == two == '{"data":{"a":"\\u00e9","b":1},"type":"message.sent"}'


def test_message_events_carry_the_design_body_and_never_the_text() -> None:
    """{"type", "timestamp", "data"} with the fields of DESIGN 13 and previous_status."""
    data = message_data(MESSAGE, status="undelivered", previous_status="sent")
    body = envelope("message.undelivered", AT, data)
    assert body == {
        "type": "message.undelivered",
        "timestamp": "2026-05-01T12:00:00.123456Z",
        "data": {
            "id": "00000000-0000-4000-8000-000000000001",
            "conversation_id": "00000000-0000-4000-8000-000000000002",
            "status": "undelivered",
            "previous_status": "sent",
            "to": "+14155550123",
            "from": "+15005550006",
            "error_code": "30007",
            "error_category": "delivery",
            "error_message": "filtered",
            "segments": 2,
            "attempts": 1,
            "direction": "outbound",
        },
    }
    assert tuple(body["data"]) == MESSAGE_DATA_FIELDS
    with pytest.raises(ValueError, match="unknown webhook event type"):
        envelope("message.sending", AT, data)


def test_rfc3339_is_utc_with_microseconds() -> None:
    """Timestamps are written as the triggers write them: UTC, whatever the zone given."""
    two_hours_east = AT.astimezone(timezone(timedelta(hours=2)))
    assert rfc3339(two_hours_east) == rfc3339(AT) == "2026-05-01T12:00:00.123456Z"


def test_event_names() -> None:
    """Statuses map to message.<status> (not sending/pending); filters: empty = everything."""
    assert event_for_status("delivered") == "message.delivered"
    assert event_for_status("received") == "message.received"
    assert event_for_status("sending") is None and event_for_status("pending") is None
    assert len(EVENT_TYPES) == 11 and "recipient.opted_out" in EVENT_TYPES
    assert unknown_events(["message.sent", "message.sending", "x"]) == ["message.sending", "x"]
    assert wants([], "message.sent") and wants(["message.sent"], "message.sent")
    assert not wants(["message.failed"], "message.sent")


def test_the_signature_verifies_with_the_standardwebhooks_library() -> None:
    """A signed delivery passes Webhook(secret).verify and fails with another secret."""
    secret = new_secret()
    body = encode(envelope("message.sent", AT, {"id": "x"}))
    sent = headers("msg_1", int(time.time()), body, (secret,))
    assert sent["content-type"] == "application/json"
    assert sent["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, sent)["type"] == "message.sent"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("sent", "read"), sent)


def test_during_a_rotation_both_secrets_sign() -> None:
    """The previous secret signs beside the new one until it expires; each alone verifies."""
    old, new = new_secret(), new_secret()
    now = AT
    during = secrets_in_force(new, old, now + timedelta(hours=1), now)
    assert during == (new, old)
    assert secrets_in_force(new, old, now, now) == (new,)
    assert secrets_in_force(new, None, None, now) == (new,)
    body = '{"type":"message.sent"}'
    sent = headers("msg_2", int(time.time()), body, during)
    assert len(sent["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(body, sent)
    with pytest.raises(ValueError, match="at least one secret"):
        headers("msg_3", int(time.time()), body, ())
