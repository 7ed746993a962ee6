"""GET /sms/messages/{id}, /healthz, /readyz, X-Request-ID and error shapes of unknown routes."""

from __future__ import annotations

import dataclasses
import socket
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from api.app import create_app
from shared.config import Settings
from tests.api_support import (  # noqa: F401 - fixtures are used by name
    TO,
    LiveServer,
    api_key_fixture,
    app_fixture,
    auth_fixture,
    client_fixture,
    live_fixture,
)


def test_message_with_its_events(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A created message reads back with its status, error and event timeline in order."""
    created = client.post("/sms/send", json={"to": TO, "body": "Hi"}, headers=auth).json()
    db.execute(
        "INSERT INTO sms_message_events (message_id, event_type, attempt) VALUES (%s, %s, 1)",
        (created["id"], "attempt_started"),
    )
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'failed', final_at = now(),"
        " error_code = '21211', error_category = 'permanent', error_message = 'invalid To',"
        " attempts = 1 WHERE id = %s",
        (created["id"],),
    )
    r = client.get(f"/sms/messages/{created['id']}", headers=auth)
    assert r.status_code == 200
    message = r.json()
    for key in ("id", "conversation_id", "to", "from", "provider", "segments", "encoding"):
        assert message[key] == created[key]
    assert message["status"] == "failed" and message["attempts"] == 1
    assert message["error"] == {"code": "21211", "category": "permanent", "message": "invalid To"}
    assert [e["type"] for e in message["events"]] == ["created", "attempt_started"]
    assert message["body"] == "Hi" and message["request_id"]


def test_created_comes_from_the_row_once(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """The timeline's `created` is made from the message row (no event row since migration
    0019): id 0, the row's created_at and provider, status pending. A message enqueued before
    0019 keeps its own `created` row and shows it once. (An inbound message's timeline is its
    `received` alone: test_inbound.test_a_reply_is_stored_in_its_conversation_and_listed.)"""
    made = client.post("/sms/send", json={"to": TO, "body": "Hi"}, headers=auth).json()
    events = client.get(f"/sms/messages/{made['id']}", headers=auth).json()["events"]
    assert len(events) == 1
    first = events[0]
    assert (first["id"], first["type"], first["to_status"]) == (0, "created", "pending")
    assert (first["provider"], first["occurred_at"]) == (made["provider"], made["created_at"])

    older = client.post("/sms/send", json={"to": TO, "body": "Hi"}, headers=auth).json()
    db.execute(
        "INSERT INTO sms_message_events (message_id, event_type, to_status, provider)"
        " VALUES (%s, 'created', 'pending', 'twilio')",
        (older["id"],),
    )
    events = client.get(f"/sms/messages/{older['id']}", headers=auth).json()["events"]
    assert [e["type"] for e in events] == ["created"] and events[0]["id"] > 0


@pytest.mark.parametrize(
    "message_id", [str(uuid.uuid4()), "not-a-uuid", "12345", "0" * 40, "%00", "'; --"]
)
def test_unknown_or_malformed_id_is_404(
    client: httpx.Client, auth: dict[str, str], message_id: str
) -> None:
    """Unknown and malformed ids are both a JSON 404, never a 500."""
    r = client.get(f"/sms/messages/{message_id}", headers=auth)
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "not_found"


def test_unknown_route_and_method_in_error_shape(client: httpx.Client) -> None:
    """Starlette's own 404 and 405 come in the API's error shape."""
    assert client.get("/nope").json()["errors"][0]["code"] == "not_found"
    r = client.get("/sms/send")
    assert r.status_code == 405 and r.json()["errors"][0]["code"] == "method_not_allowed"


def test_healthz_and_readyz(client: httpx.Client) -> None:
    """The process is up and the database answers."""
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"}


def test_readyz_is_503_when_the_database_is_unreachable(settings: Settings) -> None:
    """With PostgreSQL unreachable the API still starts; /healthz is 200, /readyz 503 with why."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    down = dataclasses.replace(
        settings,
        database_url=f"host=127.0.0.1 port={closed_port} dbname=x user=x connect_timeout=1",
    )
    with LiveServer(create_app(down)) as live, httpx.Client(base_url=live.url) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz", timeout=10)
    assert r.status_code == 503
    (error,) = r.json()["errors"]
    assert error["code"] == "database_unavailable" and "connection refused" in error["message"]


def test_request_id_is_taken_or_made_and_echoed(client: httpx.Client) -> None:
    """A sane X-Request-ID is echoed back; an absent or insane one is replaced by a fresh one."""
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == (
        "abc-123"
    )
    made = client.get("/healthz").headers["x-request-id"]
    assert len(made) == 32
    too_long = client.get("/healthz", headers={"X-Request-ID": "x" * 201})
    assert too_long.headers["x-request-id"] not in ("x" * 201, made)
    # Errors carry it too.
    assert "x-request-id" in client.get("/nope").headers
