"""Tenancy: a sender key reads, lists, cancels and retries only its own messages (another key's
id answers exactly as an unknown one); an operator key sees and acts on every message."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest

from shared import apikeys
from tests.api_support import (  # noqa: F401 - fixtures are used by name
    TO,
    app_fixture,
    client_fixture,
    live_fixture,
)

OTHER = "+14155552672"


def _headers(
    db: psycopg.Connection[Any], name: str, role: apikeys.Role = "sender"
) -> dict[str, str]:
    _, key = apikeys.create_key_sync(db, name, role=role)
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


@pytest.fixture(name="alice")
def alice_fixture(db: psycopg.Connection[Any]) -> dict[str, str]:
    return _headers(db, "alice")


@pytest.fixture(name="bob")
def bob_fixture(db: psycopg.Connection[Any]) -> dict[str, str]:
    return _headers(db, "bob")


@pytest.fixture(name="ops")
def ops_fixture(db: psycopg.Connection[Any]) -> dict[str, str]:
    return _headers(db, "ops", role="operator")


def _send(client: httpx.Client, headers: dict[str, str], to: str = TO) -> dict[str, Any]:
    r = client.post("/sms/send", json={"to": to, "body": "hi"}, headers=headers)
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def _fail(db: psycopg.Connection[Any], message_id: str) -> None:
    """Make a message finally failed and never accepted, as the dispatcher would."""
    db.execute("DELETE FROM sms_outbox WHERE message_id = %s", (message_id,))
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'failed', final_at = now(),"
        " error_code = '30003', error_category = 'permanent', error_message = 'x', attempts = 4"
        " WHERE id = %s",
        (message_id,),
    )


def _unknown(client: httpx.Client, headers: dict[str, str], method: str, path: str) -> Any:
    """The answer to the same request for an id nobody has."""
    r = client.request(method, path.format(id=uuid.uuid4()), headers=headers)
    assert r.status_code == 404
    return r.json()


ENDPOINTS = [
    ("GET", "/sms/messages/{id}"),
    ("POST", "/sms/messages/{id}/cancel"),
    ("POST", "/sms/messages/{id}/retry"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_another_keys_message_is_not_found(
    client: httpx.Client,
    db: psycopg.Connection[Any],
    alice: dict[str, str],
    bob: dict[str, str],
    method: str,
    path: str,
) -> None:
    """Bob reading, canceling or retrying Alice's message gets the unknown id's very 404 body,
    and the message is unchanged."""
    pending = _send(client, alice)["id"]
    failed = _send(client, alice, to=OTHER)["id"]
    _fail(db, failed)
    target = failed if path.endswith("retry") else pending
    before = db.execute(
        "SELECT delivery_status, updated_at FROM sms_messages WHERE id = %s", (target,)
    ).fetchone()
    r = client.request(method, path.format(id=target), headers=bob)
    assert r.status_code == 404
    assert r.json() == _unknown(client, bob, method, path)
    after = db.execute(
        "SELECT delivery_status, updated_at FROM sms_messages WHERE id = %s", (target,)
    ).fetchone()
    assert after == before
    events = db.execute(
        "SELECT count(*) FROM sms_message_events WHERE message_id = %s"
        " AND event_type IN ('canceled', 'requeued')",
        (target,),
    ).fetchone()
    assert events == (0,)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_the_owner_reaches_its_own_message(
    client: httpx.Client,
    db: psycopg.Connection[Any],
    alice: dict[str, str],
    bob: dict[str, str],
    method: str,
    path: str,
) -> None:
    """The key that created a message reads, cancels and retries it (Bob's keys are no reason
    to refuse Alice)."""
    _send(client, bob)
    pending = _send(client, alice)["id"]
    failed = _send(client, alice, to=OTHER)["id"]
    _fail(db, failed)
    target = failed if path.endswith("retry") else pending
    r = client.request(method, path.format(id=target), headers=alice)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == target


def test_listing_shows_only_the_keys_own_messages(
    client: httpx.Client, alice: dict[str, str], bob: dict[str, str]
) -> None:
    """GET /sms/messages (plain, by conversation, by recipient) lists the caller's messages only;
    another key's conversation lists as empty, as an unknown one does."""
    mine = _send(client, alice)
    theirs = _send(client, bob)  # same pair: the same conversation
    assert mine["conversation_id"] == theirs["conversation_id"]

    def ids(headers: dict[str, str], **params: str) -> list[str]:
        r = client.get("/sms/messages", params=params, headers=headers)
        assert r.status_code == 200, r.text
        return [m["id"] for m in r.json()["messages"]]

    assert ids(alice) == [mine["id"]]
    assert ids(bob) == [theirs["id"]]
    assert ids(alice, conversation_id=mine["conversation_id"]) == [mine["id"]]
    assert ids(bob, to=TO) == [theirs["id"]]
    only_alice = _send(client, alice, to=OTHER)
    assert ids(bob, conversation_id=only_alice["conversation_id"]) == []
    assert ids(bob, conversation_id=str(uuid.uuid4())) == []


def test_listing_pages_stay_within_the_key(
    client: httpx.Client, alice: dict[str, str], bob: dict[str, str]
) -> None:
    """Cursor pages of a sender key walk its messages only, however the keys interleave."""
    mine = []
    for _ in range(3):
        mine.append(_send(client, alice)["id"])
        _send(client, bob)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/sms/messages", params=params, headers=alice).json()
        seen += [m["id"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(mine))


def test_operator_sees_and_acts_on_every_message(
    client: httpx.Client,
    db: psycopg.Connection[Any],
    alice: dict[str, str],
    bob: dict[str, str],
    ops: dict[str, str],
) -> None:
    """An operator key lists every key's messages, reads them, cancels and retries them."""
    a = _send(client, alice)["id"]
    b = _send(client, bob, to=OTHER)["id"]
    _fail(db, b)
    listed = client.get("/sms/messages", headers=ops).json()["messages"]
    assert {m["id"] for m in listed} == {a, b}
    assert client.get(f"/sms/messages/{a}", headers=ops).status_code == 200
    canceled = client.post(f"/sms/messages/{a}/cancel", headers=ops)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    retried = client.post(f"/sms/messages/{b}/retry", headers=ops)
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    actors = db.execute(
        "SELECT detail->>'by' FROM sms_message_events WHERE event_type IN ('canceled', 'requeued')"
    ).fetchall()
    assert {row[0] for row in actors} == {f"api-key:{_key_id(db, 'ops')}"}


def _key_id(db: psycopg.Connection[Any], name: str) -> int:
    row = db.execute("SELECT id FROM sms_api_keys WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def test_sender_key_cannot_see_keyless_messages(
    client: httpx.Client, db: psycopg.Connection[Any], alice: dict[str, str], ops: dict[str, str]
) -> None:
    """A message no key created (smsctl send) is an operator's to see, not a sender key's."""
    sent = _send(client, alice)
    db.execute("UPDATE sms_messages SET api_key_id = NULL WHERE id = %s", (sent["id"],))
    assert client.get(f"/sms/messages/{sent['id']}", headers=alice).status_code == 404
    assert client.get("/sms/messages", headers=alice).json()["messages"] == []
    assert client.get(f"/sms/messages/{sent['id']}", headers=ops).status_code == 200
