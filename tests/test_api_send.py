"""POST /sms/send: the 202 body, and every validation error code, all reported at once."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from api.app import create_app
from shared.config import Settings
from tests.api_support import (  # noqa: F401 - fixtures are used by name
    SENDER,
    TO,
    LiveServer,
    api_key_fixture,
    app_fixture,
    auth_fixture,
    client_fixture,
    errors,
    live_fixture,
)


def send(
    client: httpx.Client, auth: dict[str, str], payload: Any, **headers: str
) -> httpx.Response:
    return client.post("/sms/send", json=payload, headers={**auth, **headers})


def test_accepted_body_is_exactly_the_documented_one(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A valid request gets 202 with the README's 202 body, and the rows exist."""
    r = send(client, auth, {"to": "(415) 555-2671", "body": "Hello"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {
        "id", "status", "conversation_id", "to", "from", "provider", "provider_sid", "segments",
        "encoding", "created_at", "priority", "send_at", "expires_at",
    }  # fmt: skip
    assert body["status"] == "pending" and body["provider_sid"] is None
    assert (body["priority"], body["send_at"], body["expires_at"]) == ("normal", None, None)
    assert (body["to"], body["from"], body["provider"]) == (TO, SENDER, "twilio")
    assert (body["segments"], body["encoding"]) == (1, "GSM-7")
    assert r.headers["location"] == f"/sms/messages/{body['id']}"
    row = db.execute(
        "SELECT m.delivery_status, o.kind, o.provider, c.id::text"
        " FROM sms_messages m JOIN sms_outbox o ON o.message_id = m.id"
        " JOIN sms_conversations c ON c.id = m.conversation_id WHERE m.id = %s",
        (body["id"],),
    ).fetchone()
    assert row == ("pending", "send_sms", "twilio", body["conversation_id"])
    events = db.execute(
        "SELECT event_type, to_status FROM sms_message_events WHERE message_id = %s", (body["id"],)
    ).fetchall()
    # No event row (migration 0019): the message row says when it was created.
    assert events == []


def test_crlf_becomes_newline_and_ucs2_is_counted(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Windows line ends are stored as newlines; a non-GSM body is UCS-2 with its parts."""
    r = send(client, auth, {"to": TO, "body": "line one\r\nline two 😀" + "ж" * 60})
    assert r.status_code == 202, r.text
    assert (r.json()["segments"], r.json()["encoding"]) == (2, "UCS-2")
    stored = db.execute("SELECT body FROM sms_messages WHERE id = %s", (r.json()["id"],)).fetchone()
    assert stored is not None and stored[0].startswith("line one\nline two")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"body": "hi"}, ("to", "required")),
        ({"to": None, "body": "hi"}, ("to", "required")),
        ({"to": TO}, ("body", "required")),
        ({"to": 4155552671, "body": "hi"}, ("to", "invalid_type")),
        ({"to": TO, "body": ["hi"]}, ("body", "invalid_type")),
        ({"to": TO, "body": "hi", "from": 15005550006}, ("from", "invalid_type")),
        ({"to": TO, "body": "hi", "conversation_id": 7}, ("conversation_id", "invalid_type")),
        ({"to": "call me maybe", "body": "hi"}, ("to", "invalid_number")),
        ({"to": "+1415555267", "body": "hi"}, ("to", "invalid_number")),
        ({"to": "1" * 80, "body": "hi"}, ("to", "invalid_number")),
        ({"to": TO, "body": "hi", "from": "sender"}, ("from", "invalid_number")),
        ({"to": "+19005550123", "body": "hi"}, ("to", "number_type_not_allowed")),  # premium
        ({"to": "+442079460000", "body": "hi"}, ("to", "number_type_not_allowed")),  # GB landline
        ({"to": "+447640123456", "body": "hi"}, ("to", "number_type_not_allowed")),  # GB pager
        ({"to": "+447000000000", "body": "hi"}, ("to", "number_type_not_allowed")),  # GB personal
        ({"to": "+448712345678", "body": "hi"}, ("to", "number_type_not_allowed")),  # shared cost
        ({"to": TO, "body": " \n\t "}, ("body", "empty")),
        ({"to": TO, "body": "a" * 1601}, ("body", "too_long")),
        ({"to": TO, "body": "nul\x00here"}, ("body", "control_characters")),
        ({"to": TO, "body": "escape\x1b[2J"}, ("body", "control_characters")),
        ({"to": TO, "body": "lone\rreturn"}, ("body", "control_characters")),
        ({"to": TO, "body": "c1\x85"}, ("body", "control_characters")),
        ({"to": TO, "body": "hi", "conversation_id": "nope"}, ("conversation_id", "invalid_uuid")),
        ({"to": TO, "body": "hi", "media_url": "x"}, ("media_url", "unknown_field")),
    ],
)
def test_each_validation_error_code(
    client: httpx.Client, auth: dict[str, str], payload: dict[str, Any], expected: tuple[str, str]
) -> None:
    """Each invalid field gets its stable code in a 400."""
    assert expected in errors(send(client, auth, payload))


@pytest.mark.parametrize(
    "to", ["+33612345678", "+18005550199", "+15005550001", "+4915112345678", "415-555-2671"]
)
def test_sms_capable_numbers_are_accepted(
    client: httpx.Client, auth: dict[str, str], to: str
) -> None:
    """Mobiles, NANP toll-free and NANP 5XX numbers (Twilio's test numbers) are accepted."""
    assert send(client, auth, {"to": to, "body": "hi"}).status_code == 202


def test_unpaired_surrogate_is_refused(client: httpx.Client, auth: dict[str, str]) -> None:
    """A body with an unpaired UTF-16 surrogate (valid JSON, not valid text) is a 400."""
    raw = b'{"to": "' + TO.encode() + b'", "body": "bad \\ud800 text"}'
    r = client.post("/sms/send", content=raw, headers=auth)
    assert ("body", "invalid_characters") in errors(r)


def test_unknown_and_disabled_senders(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """`from` must be a registered sender, and an enabled one."""
    db.execute(
        "INSERT INTO sms_senders (phone_number, provider, enabled)"
        " VALUES ('+15005550010', 'signalwire', false)"
    )
    assert ("from", "unknown_sender") in errors(
        send(client, auth, {"to": TO, "body": "hi", "from": "+14155550100"})
    )
    assert ("from", "sender_disabled") in errors(
        send(client, auth, {"to": TO, "body": "hi", "from": "+15005550010"})
    )
    db.execute("UPDATE sms_senders SET enabled = true WHERE phone_number = '+15005550010'")
    r = send(client, auth, {"to": TO, "body": "hi", "from": "+15005550010"})
    assert r.status_code == 202 and r.json()["provider"] == "signalwire"


def test_no_default_sender(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """With no default sender, a request without `from` is refused (with `from` it works)."""
    db.execute("UPDATE sms_senders SET is_default = false")
    assert ("from", "no_default_sender") in errors(send(client, auth, {"to": TO, "body": "hi"}))
    assert send(client, auth, {"to": TO, "body": "hi", "from": SENDER}).status_code == 202


def test_conversation_must_exist_and_match_the_pair(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """conversation_id must name an existing thread of the same (from, to) pair."""
    r = send(client, auth, {"to": TO, "body": "hi", "conversation_id": str(uuid.uuid4())})
    assert ("conversation_id", "unknown_conversation") in errors(r)
    other = db.execute(
        "INSERT INTO sms_conversations (from_number, to_number) VALUES (%s, '+33612345678')"
        " RETURNING id::text",
        (SENDER,),
    ).fetchone()
    assert other is not None
    r = send(client, auth, {"to": TO, "body": "hi", "conversation_id": other[0]})
    assert ("conversation_id", "conversation_mismatch") in errors(r)
    first = send(client, auth, {"to": TO, "body": "hi"}).json()
    again = send(
        client, auth, {"to": TO, "body": "again", "conversation_id": first["conversation_id"]}
    )
    assert again.status_code == 202 and again.json()["conversation_id"] == first["conversation_id"]


def test_every_error_in_one_response(client: httpx.Client, auth: dict[str, str]) -> None:
    """Several invalid fields and a bad Idempotency-Key come back together in one 400."""
    r = send(
        client,
        auth,
        {"to": "+19005550123", "body": "", "from": "+14155550100", "conversation_id": "x", "y": 1},
        **{"Idempotency-Key": "k" * 256},
    )
    assert errors(r) == {
        ("Idempotency-Key", "invalid_idempotency_key"),
        ("to", "number_type_not_allowed"),
        ("body", "empty"),
        ("from", "unknown_sender"),
        ("conversation_id", "invalid_uuid"),
        ("y", "unknown_field"),
    }
    assert all(e["message"] for e in r.json()["errors"])


def test_allowed_countries_limit_destinations(
    settings: Settings, db: psycopg.Connection[Any], api_key: str
) -> None:
    """With ALLOWED_COUNTRIES=US,CA a French mobile is refused and a US number is not."""
    limited = dataclasses.replace(settings, allowed_countries=frozenset({"US", "CA"}))
    headers = {"Authorization": f"Bearer {api_key}"}
    with LiveServer(create_app(limited)) as live, httpx.Client(base_url=live.url) as client:
        assert ("to", "country_not_allowed") in errors(
            send(client, headers, {"to": "+33612345678", "body": "hi"})
        )
        assert send(client, headers, {"to": TO, "body": "hi"}).status_code == 202


def test_default_region_reads_national_numbers(
    settings: Settings, db: psycopg.Connection[Any], api_key: str
) -> None:
    """DEFAULT_REGION=FR reads a national French number and stores it as E.164."""
    french = dataclasses.replace(settings, default_region="FR")
    headers = {"Authorization": f"Bearer {api_key}"}
    with LiveServer(create_app(french)) as live, httpx.Client(base_url=live.url) as client:
        r = send(client, headers, {"to": "06 12 34 56 78", "body": "salut"})
    assert r.status_code == 202 and r.json()["to"] == "+33612345678"
