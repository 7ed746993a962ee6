"""The API's JSON log lines: ids and masked numbers on message lines; never bodies or keys."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import psycopg

from tests.api_support import (  # noqa: F401 - fixtures are used by name
    SENDER,
    TO,
    LiveServer,
    api_key_fixture,
    app_fixture,
    json_logs_fixture,
    live_fixture,
)

SECRET_BODY = "Your one-time code is 918273 zebra-lantern"


def test_logs_carry_ids_and_never_bodies_keys_or_numbers(
    json_logs: io.StringIO, live: LiveServer, api_key: str, db: psycopg.Connection[Any]
) -> None:
    """A whole session (send, replay, 409, 400, read, a failing insert) logs JSON lines with
    request_id, message_id, conversation_id and the masked recipient; no body, key or number."""
    auth = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": "log-test"}
    with httpx.Client(base_url=live.url, timeout=10) as client:
        sent = client.post(
            "/sms/send",
            json={"to": TO, "body": SECRET_BODY},
            headers={**auth, "X-Request-ID": "req-log-1"},
        )
        assert sent.status_code == 202
        message = sent.json()
        assert client.post(
            "/sms/send", json={"to": TO, "body": SECRET_BODY}, headers=auth
        ).is_success
        other = {"to": TO, "body": SECRET_BODY + "!"}
        assert client.post("/sms/send", json=other, headers=auth).status_code == 409
        bad = {"to": "+19005550123", "body": SECRET_BODY, "from": "+14155550100"}
        assert (
            client.post(
                "/sms/send", json=bad, headers={"Authorization": auth["Authorization"]}
            ).status_code
            == 400
        )
        assert client.get(f"/sms/messages/{message['id']}", headers=auth).status_code == 200
        db.execute(
            "CREATE FUNCTION test_fail() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'injected'; END $$;"
            "CREATE TRIGGER test_fail BEFORE INSERT ON sms_outbox"
            " FOR EACH ROW EXECUTE FUNCTION test_fail();"
        )
        failing = {"to": "+33612345678", "body": SECRET_BODY}
        assert (
            client.post(
                "/sms/send", json=failing, headers={"Authorization": auth["Authorization"]}
            ).status_code
            == 500
        )

    text = json_logs.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines, "nothing was logged"
    for forbidden in (
        "918273",
        "zebra-lantern",
        api_key,
        "4155552671",
        "612345678",
        "5005550006",
        "4155550100",
        "9005550123",
    ):
        assert forbidden not in text, forbidden
    # One line per request: the access line says what the request did.
    assert not [line for line in lines if line.get("action") == "message_created"]
    created = [line for line in lines if line.get("outcome") == "message_created"]
    assert len(created) == 1 and created[0]["action"] == "http_request"
    assert created[0]["message_id"] == message["id"]
    assert created[0]["conversation_id"] == message["conversation_id"]
    assert created[0]["to"] == "+1******2671"
    assert created[0]["request_id"] == "req-log-1"
    replay = [line for line in lines if line.get("outcome") == "idempotent_replay"]
    assert replay and replay[0]["to"] == "+1******2671" and replay[0]["message_id"] == message["id"]
    failed = [line for line in lines if line.get("action") == "request_failed"]
    assert len(failed) == 1 and failed[0]["error_code"] == "P0001"
    requests = [line for line in lines if line.get("action") == "http_request"]
    assert len(requests) == 6 and all(line["request_id"] for line in requests)
    stored = db.execute("SELECT request_id FROM sms_messages").fetchone()
    assert stored == ("req-log-1",)
    registered = [line for line in lines if line.get("action") == "sender_registered"]
    assert [line["sender"] for line in registered] == [SENDER[:2] + "******" + SENDER[-4:]]
