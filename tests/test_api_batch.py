"""POST /sms/send/batch: all-or-nothing enqueue of many messages, per-item errors, limits, auth."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import AsyncConnection

from api.app import create_app
from shared import messages
from shared.config import Settings
from shared.messages import NewMessage
from shared.validation import MAX_BATCH
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

OTHER = "+14155552672"


def batch(
    client: httpx.Client, auth: dict[str, str], payload: Any, **headers: str
) -> httpx.Response:
    return client.post("/sms/send/batch", json=payload, headers={**auth, **headers})


def counts(db: psycopg.Connection[Any]) -> tuple[int, int, int, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM sms_messages), (SELECT count(*) FROM sms_outbox),"
        " (SELECT count(*) FROM sms_message_events), (SELECT count(*) FROM sms_conversations)"
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], row[3]


def accepted_total() -> float:
    return REGISTRY.get_sample_value("sms_messages_accepted_total", {"provider": "twilio"}) or 0.0


def test_batch_writes_every_message_in_request_order(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A valid batch gets 202 with one /sms/send body per message in order, and N messages, N
    outbox rows exist and no event row (migration 0019; threads shared by equal pairs)."""
    before = accepted_total()
    payload = {
        "messages": [
            {"to": TO, "body": "first"},
            {"to": OTHER, "body": "second 😀", "from": SENDER},
            {"to": "(415) 555-2671", "body": "third"},
        ]
    }
    r = batch(client, auth, payload)
    assert r.status_code == 202, r.text
    items = r.json()["messages"]
    assert [i["to"] for i in items] == [TO, OTHER, TO]
    assert [i["encoding"] for i in items] == ["GSM-7", "UCS-2", "GSM-7"]
    assert all(i["status"] == "pending" and i["from"] == SENDER for i in items)
    assert items[0]["conversation_id"] == items[2]["conversation_id"] != items[1]["conversation_id"]
    assert counts(db) == (3, 3, 0, 2)
    stored = db.execute(
        "SELECT m.id::text, m.body FROM sms_messages m JOIN sms_outbox o ON o.message_id = m.id"
    ).fetchall()
    assert dict(stored) == {items[0]["id"]: "first", items[1]["id"]: "second 😀",
                            items[2]["id"]: "third"}  # fmt: skip
    assert accepted_total() == before + 3


def test_one_bad_item_refuses_the_batch_and_names_it(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """One invalid item makes the whole batch a 400 naming `messages[i].field`; nothing written."""
    payload = {
        "messages": [
            {"to": TO, "body": "fine"},
            {"to": "not a number", "body": "bad recipient"},
            {"to": TO, "body": "", "from": "+15005550099", "color": "red"},
            "not an object",
        ]
    }
    assert errors(batch(client, auth, payload)) == {
        ("messages[1].to", "invalid_number"),
        ("messages[2].body", "empty"),
        ("messages[2].from", "unknown_sender"),
        ("messages[2].color", "unknown_field"),
        ("messages[3]", "invalid_type"),
    }
    assert counts(db) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"messages": []}, ("messages", "empty")),
        ({"messages": [{"to": TO, "body": "x"}] * (MAX_BATCH + 1)}, ("messages", "too_many")),
        ({}, ("messages", "required")),
        ({"messages": {"to": TO, "body": "x"}}, ("messages", "invalid_type")),
        ({"messages": [{"to": TO, "body": "x"}], "mode": "fast"}, ("mode", "unknown_field")),
    ],
    ids=["empty", "too-many", "missing", "not-a-list", "unknown-field"],
)
def test_envelope_problems_are_400(
    client: httpx.Client,
    auth: dict[str, str],
    db: psycopg.Connection[Any],
    payload: dict[str, Any],
    expected: tuple[str, str],
) -> None:
    """An empty, oversized, missing or non-list `messages`, or an unknown field, is a 400."""
    assert expected in errors(batch(client, auth, payload))
    assert counts(db) == (0, 0, 0, 0)


def test_exactly_the_maximum_is_accepted(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A batch of exactly 1,000 messages is accepted whole."""
    payload = {"messages": [{"to": TO, "body": f"m{i}"} for i in range(MAX_BATCH)]}
    r = batch(client, auth, payload)
    assert r.status_code == 202, r.text
    assert len(r.json()["messages"]) == MAX_BATCH
    assert counts(db) == (MAX_BATCH, MAX_BATCH, 0, 1)


def test_unauthenticated_is_401(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    """No or a wrong bearer key gets 401 and writes nothing."""
    payload = {"messages": [{"to": TO, "body": "hi"}]}
    for headers in ({}, {"Authorization": "Bearer nope"}):
        r = client.post("/sms/send/batch", json=payload, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert counts(db) == (0, 0, 0, 0)


def test_idempotency_key_is_refused(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A batch with an Idempotency-Key is refused (no replay protection is promised)."""
    payload = {"messages": [{"to": TO, "body": "hi"}]}
    r = batch(client, auth, payload, **{"Idempotency-Key": "k1"})
    assert errors(r) == {("Idempotency-Key", "idempotency_key_not_supported")}
    assert counts(db) == (0, 0, 0, 0)


def test_body_limits_follow_the_batch_setting(
    settings: Settings, api_key: str, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """The batch's own MAX_BATCH_REQUEST_BYTES applies (above /sms/send's limit), then 413; a
    non-JSON body is 415."""
    big = {"messages": [{"to": TO, "body": "x" * 1500} for _ in range(60)]}  # ~ 95 KB
    assert len(json.dumps(big)) > settings.max_request_bytes
    small = dataclasses.replace(settings, max_batch_request_bytes=50_000)
    with LiveServer(create_app(settings)) as live, httpx.Client(base_url=live.url) as client:
        assert batch(client, auth, big).status_code == 202
        r = client.post("/sms/send/batch", content=b"to=1", headers={**auth,
                        "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert r.status_code == 415
    with LiveServer(create_app(small)) as live, httpx.Client(base_url=live.url) as client:
        r = batch(client, auth, big)
        assert r.status_code == 413 and r.json()["errors"][0]["code"] == "too_large"
    assert counts(db)[0] == 60


def test_conversations_are_checked_per_item(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A named conversation must exist and be the item's pair; a matching one is used."""
    first = batch(client, auth, {"messages": [{"to": TO, "body": "open"}]}).json()["messages"][0]
    known = first["conversation_id"]
    payload = {
        "messages": [
            {"to": TO, "body": "same thread", "conversation_id": known},
            {"to": OTHER, "body": "wrong thread", "conversation_id": known},
            {"to": TO, "body": "no thread", "conversation_id": str(uuid.uuid4())},
        ]
    }
    assert errors(batch(client, auth, payload)) == {
        ("messages[1].conversation_id", "conversation_mismatch"),
        ("messages[2].conversation_id", "unknown_conversation"),
    }
    r = batch(client, auth, {"messages": payload["messages"][:1]})
    assert r.status_code == 202 and r.json()["messages"][0]["conversation_id"] == known
    assert counts(db)[:2] == (2, 2)


def test_failure_inside_the_transaction_writes_nothing(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """An error raised by the database after the threads and messages were inserted (here by a
    test trigger on the outbox) rolls the whole batch back: no thread, message or outbox row."""
    db.execute(
        """
        CREATE FUNCTION test_refuse_event() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF (SELECT body FROM sms_messages WHERE id = NEW.message_id) = 'poison' THEN
                RAISE EXCEPTION 'refused by test';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_refuse_event BEFORE INSERT ON sms_outbox
            FOR EACH ROW EXECUTE FUNCTION test_refuse_event();
        """
    )
    payload = {"messages": [{"to": TO, "body": "fine"}, {"to": OTHER, "body": "poison"}]}
    r = batch(client, auth, payload)
    assert r.status_code == 500 and r.json()["errors"][0]["code"] == "internal"
    assert counts(db) == (0, 0, 0, 0)


def test_enqueue_many_conversation_mismatch_rolls_back(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """A conversation found to be another pair's inside the transaction raises with the item's
    index and leaves nothing written."""
    row = db.execute(
        "INSERT INTO sms_conversations (from_number, to_number) VALUES (%s, %s) RETURNING id",
        (SENDER, OTHER),
    ).fetchone()
    assert row is not None
    items = [
        NewMessage(TO, SENDER, "twilio", "ok"),
        NewMessage(TO, SENDER, "twilio", "wrong thread", conversation_id=row[0]),
    ]

    async def run() -> int:
        async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
            try:
                await messages.enqueue_many(conn, items, api_key_id=None, request_id="t")
            except messages.BatchConversationMismatch as e:
                return e.index
        return -1

    assert asyncio.run(run()) == 1
    assert counts(db) == (0, 0, 0, 1)
