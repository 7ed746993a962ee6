"""Idempotency-Key: replays, reuse with another request, per-key scope, and the concurrent race."""

from __future__ import annotations

import json
from typing import Any

import httpx
import psycopg

from shared import apikeys
from tests.api_support import (  # noqa: F401 - fixtures are used by name
    TO,
    LiveServer,
    api_key_fixture,
    app_fixture,
    auth_fixture,
    client_fixture,
    live_fixture,
    race,
)


def test_replay_returns_the_original_response(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """The same key and request again: the first 202 body, Idempotent-Replayed, no new message."""
    headers = {**auth, "Idempotency-Key": "order-1"}
    first = client.post("/sms/send", json={"to": TO, "body": "Hi"}, headers=headers)
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    # The message moves on; the replay still answers what the first request was told.
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'queued', provider_sid = 'SM1' WHERE id = %s",
        (first.json()["id"],),
    )
    # Same JSON with other key order and spacing is the same request.
    raw = json.dumps({"body": "Hi", "to": TO}, indent=2).encode()
    again = client.post("/sms/send", content=raw, headers=headers)
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    count = db.execute("SELECT count(*) FROM sms_messages").fetchone()
    assert count == (1,)


def test_same_key_with_another_request_is_409(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Reusing a key for a different request is refused with idempotency_key_reused."""
    headers = {**auth, "Idempotency-Key": "order-2"}
    assert client.post("/sms/send", json={"to": TO, "body": "A"}, headers=headers).is_success
    r = client.post("/sms/send", json={"to": TO, "body": "B"}, headers=headers)
    assert r.status_code == 409
    assert [e["code"] for e in r.json()["errors"]] == ["idempotency_key_reused"]
    assert db.execute("SELECT count(*) FROM sms_messages").fetchone() == (1,)


def test_keys_are_scoped_to_the_api_key(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Two API keys may use the same Idempotency-Key independently."""
    _, other = apikeys.create_key_sync(db, "other")
    payload = {"to": TO, "body": "Hi"}
    a = client.post("/sms/send", json=payload, headers={**auth, "Idempotency-Key": "k"})
    b = client.post(
        "/sms/send",
        json=payload,
        headers={"Authorization": f"Bearer {other}", "Idempotency-Key": "k"},
    )
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"] and "idempotent-replayed" not in b.headers


def test_invalid_request_does_not_burn_the_key(client: httpx.Client, auth: dict[str, str]) -> None:
    """A 400 stores nothing: the corrected request with the same key is created, not a 409."""
    headers = {**auth, "Idempotency-Key": "order-3"}
    assert client.post("/sms/send", json={"to": TO, "body": ""}, headers=headers).status_code == 400
    r = client.post("/sms/send", json={"to": TO, "body": "fixed"}, headers=headers)
    assert r.status_code == 202 and "idempotent-replayed" not in r.headers


def test_concurrent_requests_with_one_key_make_one_message(
    live: LiveServer, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Two same-key requests in flight together (both past the replay look-up) make one message."""
    headers = {**auth, "Idempotency-Key": "race-1"}
    responses = race(db, live.url, [("/sms/send", {"to": TO, "body": "once"}, headers)] * 2)
    assert [r.status_code for r in responses] == [202, 202], [r.text for r in responses]
    assert responses[0].json() == responses[1].json()
    assert sorted(r.headers.get("idempotent-replayed", "") for r in responses) == ["", "true"]
    assert db.execute("SELECT count(*) FROM sms_messages").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM sms_outbox").fetchone() == (1,)
