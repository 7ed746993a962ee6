"""GET /sms/messages (filters, cursor pages), POST .../cancel and .../retry, on a live server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import AsyncConnection

from shared import alerts
from shared.config import Settings
from tests.api_support import (  # noqa: F401 - fixtures are used by name
    TO,
    api_key_fixture,
    app_fixture,
    auth_fixture,
    client_fixture,
    live_fixture,
)

OTHER = "+14155552672"


def _send(client: httpx.Client, auth: dict[str, str], to: str = TO, body: str = "hi") -> str:
    r = client.post("/sms/send", json={"to": to, "body": body}, headers=auth)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _fail(db: psycopg.Connection[Any], message_id: str, sid: str | None = None) -> None:
    """Make a message finally failed, as the dispatcher would (its outbox work gone)."""
    db.execute("DELETE FROM sms_outbox WHERE message_id = %s", (message_id,))
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'failed', final_at = now(), provider_sid = %s,"
        " error_code = '21611', error_category = 'config', error_message = 'bad sender',"
        " attempts = 4 WHERE id = %s",
        (sid, message_id),
    )


def test_list_pages_newest_first_with_cursor(client: httpx.Client, auth: dict[str, str]) -> None:
    """Pages of `limit` come newest first and the cursors walk every message exactly once."""
    ids = [_send(client, auth, body=f"m{i}") for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = client.get("/sms/messages", params=params, headers=auth)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [m["id"] for m in page["messages"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids)) and pages == 3
    assert "events" not in page["messages"][0] and page["messages"][0]["status"] == "pending"


def test_list_filters(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """status, to, conversation_id and since/until each narrow the listing."""
    first = _send(client, auth)
    second = _send(client, auth, to=OTHER)
    _fail(db, first)

    def ids(**params: str) -> list[str]:
        r = client.get("/sms/messages", params=params, headers=auth)
        assert r.status_code == 200, r.text
        return [m["id"] for m in r.json()["messages"]]

    assert ids(status="failed") == [first]
    assert ids(status="pending") == [second]
    assert ids(to="(415) 555-2672") == [second]
    assert ids(**{"from": "+15005550006"}) == [second, first]
    row = db.execute("SELECT conversation_id FROM sms_messages WHERE id = %s", (first,)).fetchone()
    assert row is not None
    assert ids(conversation_id=str(row[0])) == [first]
    assert ids(since="2999-01-01T00:00:00Z") == []
    assert ids(until="2999-01-01T00:00:00+00:00") == [second, first]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "lost"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"conversation_id": "nope"}, "conversation_id"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-01-01T00:00:00"}, "until"),
        ({"to": "not a number"}, "to"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
        ({"stauts": "failed"}, "stauts"),
    ],
)
def test_list_refuses_bad_parameters(
    client: httpx.Client, auth: dict[str, str], params: dict[str, str], field: str
) -> None:
    """A bad filter, page size, cursor or unknown parameter is a 400 naming the parameter."""
    r = client.get("/sms/messages", params=params, headers=auth)
    assert r.status_code == 400
    assert [e["field"] for e in r.json()["errors"]] == [field]


def test_list_requires_a_key(client: httpx.Client) -> None:
    """Listing without a key is 401."""
    assert client.get("/sms/messages").status_code == 401


def test_cancel_pending(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Cancel moves pending -> canceled with final_at, drops its outbox row, records the event."""
    message_id = _send(client, auth)
    r = client.post(f"/sms/messages/{message_id}/cancel", headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "canceled" and body["final_at"] is not None
    assert [e["type"] for e in body["events"]] == ["created", "canceled"]
    assert body["events"][-1]["from_status"] == "pending"
    assert db.execute("SELECT count(*) FROM sms_outbox").fetchone() == (0,)
    again = client.post(f"/sms/messages/{message_id}/cancel", headers=auth)
    assert again.status_code == 409
    assert again.json()["errors"][0]["code"] == "not_pending"


def test_cancel_refused_while_a_dispatcher_holds_the_work(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A leased send may be at the provider already: cancel answers 409 send_in_progress."""
    message_id = _send(client, auth)
    db.execute(
        "UPDATE sms_outbox SET state = 'leased', lease_owner = 'd1',"
        " lease_expires_at = now() + interval '1 minute', attempts = 1 WHERE message_id = %s",
        (message_id,),
    )
    r = client.post(f"/sms/messages/{message_id}/cancel", headers=auth)
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "send_in_progress"
    row = db.execute("SELECT delivery_status FROM sms_messages WHERE id = %s", (message_id,))
    assert row.fetchone() == ("pending",)


def test_retry_failed_requeues_with_fresh_budget(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Retry moves failed -> pending, clears the error and creates due outbox work at attempt 0."""
    message_id = _send(client, auth)
    _fail(db, message_id)
    r = client.post(f"/sms/messages/{message_id}/retry", headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "pending" and body["error"] is None and body["final_at"] is None
    assert body["attempts"] == 0 and body["events"][-1]["type"] == "requeued"
    work = db.execute(
        "SELECT kind, provider, attempts, state, next_attempt_at <= now() FROM sms_outbox"
        " WHERE message_id = %s",
        (message_id,),
    ).fetchone()
    assert work == ("send_sms", "twilio", 0, "ready", True)
    again = client.post(f"/sms/messages/{message_id}/retry", headers=auth)
    assert again.status_code == 409 and again.json()["errors"][0]["code"] == "not_failed"


def test_retry_refuses_a_message_the_provider_accepted(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A failed message with a provider sid is not resent: 409 already_accepted_by_provider."""
    message_id = _send(client, auth)
    _fail(db, message_id, sid="SM" + "1" * 32)
    r = client.post(f"/sms/messages/{message_id}/retry", headers=auth)
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "already_accepted_by_provider"
    assert db.execute("SELECT count(*) FROM sms_outbox").fetchone() == (0,)


@pytest.mark.parametrize("action", ["cancel", "retry"])
@pytest.mark.parametrize("message_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_operations_on_unknown_messages_are_404(
    client: httpx.Client, auth: dict[str, str], action: str, message_id: str
) -> None:
    """Unknown or malformed ids are 404 in the error shape."""
    r = client.post(f"/sms/messages/{message_id}/{action}", headers=auth)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "not_found"


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_operations_require_a_key(client: httpx.Client, action: str) -> None:
    """Cancel and retry without a key are 401."""
    assert client.post(f"/sms/messages/{uuid.uuid4()}/{action}").status_code == 401


def test_requeued_message_that_fails_again_alerts_again(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any], settings: Settings
) -> None:
    """Each failure episode raises its own alert: retry supersedes the first one, not forbids."""

    async def final_failure(message_id: str) -> None:
        async with await AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            async with conn.transaction():
                await alerts.raise_final_failure(
                    conn,
                    uuid.UUID(message_id),
                    error_code="30001",
                    error_category="retryable",
                    error_message="queue overflow",
                    settings=settings,
                )

    message_id = _send(client, auth)
    db.execute("DELETE FROM sms_outbox WHERE message_id = %s", (message_id,))
    asyncio.run(final_failure(message_id))
    assert client.post(f"/sms/messages/{message_id}/retry", headers=auth).status_code == 200
    db.execute("DELETE FROM sms_outbox WHERE message_id = %s", (message_id,))
    asyncio.run(final_failure(message_id))
    rows = db.execute(
        "SELECT superseded_at IS NOT NULL FROM sms_alerts WHERE message_id = %s ORDER BY id",
        (message_id,),
    ).fetchall()
    assert rows == [(True,), (False,)]
