"""Priority, send_at and validity through the API: what is stored, what the outbox row carries
for the claim, what GET and the list show, and that a refused request writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.api_support import (  # noqa: F401 - fixtures are used by name
    SENDER,
    TO,
    api_key_fixture,
    app_fixture,
    auth_fixture,
    client_fixture,
    errors,
    live_fixture,
)

OTHER = "+14155552672"
# 161 GSM-7 characters: two segments, so the outbox cost is not the column default of 1.
TWO_SEGMENTS = "x" * 161


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ahead(**delta: float) -> datetime:
    """Now plus `delta`, to the second (what a client would send)."""
    return (datetime.now(UTC) + timedelta(**delta)).replace(microsecond=0)


def counts(db: psycopg.Connection[Any]) -> tuple[int, int, int, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM sms_messages), (SELECT count(*) FROM sms_outbox),"
        " (SELECT count(*) FROM sms_message_events), (SELECT count(*) FROM sms_conversations)"
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], row[3]


def stored(db: psycopg.Connection[Any], message_id: str) -> dict[str, Any]:
    """The message's schedule and its outbox row's claim columns."""
    row = db.execute(
        "SELECT m.priority, m.send_at, m.expires_at, o.sender, o.priority, o.cost, o.expires_at,"
        " o.next_attempt_at, m.segments"
        " FROM sms_messages m JOIN sms_outbox o ON o.message_id = m.id WHERE m.id = %s",
        (message_id,),
    ).fetchone()
    assert row is not None
    keys = ("priority", "send_at", "expires_at", "sender", "outbox_priority", "cost",
            "outbox_expires_at", "next_attempt_at", "segments")  # fmt: skip
    return dict(zip(keys, row, strict=True))


def send(
    client: httpx.Client, auth: dict[str, str], payload: Any, **headers: str
) -> httpx.Response:
    return client.post("/sms/send", json=payload, headers={**auth, **headers})


def test_schedule_is_stored_with_the_claim_columns(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """priority, send_at and expires_at land on the message; the outbox row carries the sender,
    the priority number, the cost in segments, the expiry, and is due at send_at."""
    send_at, expires_at = ahead(hours=2), ahead(hours=3)
    payload = {
        "to": TO,
        "body": TWO_SEGMENTS,
        "priority": "high",
        "send_at": rfc3339(send_at),
        "expires_at": rfc3339(expires_at),
    }
    r = send(client, auth, payload)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["priority"] == "high"
    assert datetime.fromisoformat(body["send_at"]) == send_at
    assert datetime.fromisoformat(body["expires_at"]) == expires_at
    assert stored(db, body["id"]) == {
        "priority": "high",
        "send_at": send_at,
        "expires_at": expires_at,
        "sender": SENDER,
        "outbox_priority": 0,
        "cost": 2,
        "outbox_expires_at": expires_at,
        "next_attempt_at": send_at,
        "segments": 2,
    }


@pytest.mark.parametrize(("priority", "number"), [("high", 0), ("normal", 1), ("low", 2)])
def test_priority_number_of_the_outbox(
    client: httpx.Client,
    auth: dict[str, str],
    db: psycopg.Connection[Any],
    priority: str,
    number: int,
) -> None:
    """The outbox priority is 0 high, 1 normal, 2 low, as the claim orders them."""
    r = send(client, auth, {"to": TO, "body": "hi", "priority": priority})
    assert r.status_code == 202, r.text
    assert stored(db, r.json()["id"])["outbox_priority"] == number


def test_without_schedule_due_at_once_never_expires(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """No fields: normal priority, due now (the database clock), no expiry, sender filled."""
    r = send(client, auth, {"to": TO, "body": "hi"})
    assert r.status_code == 202, r.text
    row = stored(db, r.json()["id"])
    assert (row["priority"], row["send_at"], row["expires_at"]) == ("normal", None, None)
    assert (row["sender"], row["outbox_priority"], row["cost"]) == (SENDER, 1, 1)
    assert row["outbox_expires_at"] is None
    due = db.execute(
        "SELECT next_attempt_at <= now() FROM sms_outbox WHERE message_id = %s",
        (r.json()["id"],),
    ).fetchone()
    assert due == (True,)


def test_validity_counts_from_send_at(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """validity_seconds with send_at becomes expires_at = send_at + validity, on both rows."""
    send_at = ahead(days=3)
    r = send(client, auth, {"to": TO, "body": "hi", "send_at": rfc3339(send_at),
                            "validity_seconds": 900})  # fmt: skip
    assert r.status_code == 202, r.text
    expires_at = send_at + timedelta(seconds=900)
    assert datetime.fromisoformat(r.json()["expires_at"]) == expires_at
    row = stored(db, r.json()["id"])
    assert row["expires_at"] == row["outbox_expires_at"] == expires_at
    assert row["next_attempt_at"] == send_at


def test_validity_without_send_at_counts_from_now(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """validity_seconds alone counts from the time of the request."""
    before = datetime.now(UTC)
    r = send(client, auth, {"to": TO, "body": "hi", "validity_seconds": 3600})
    after = datetime.now(UTC)
    assert r.status_code == 202, r.text
    row = stored(db, r.json()["id"])
    assert row["send_at"] is None
    hour = timedelta(hours=1)
    assert before + hour <= row["expires_at"] <= after + hour
    assert row["outbox_expires_at"] == row["expires_at"]


def test_send_at_within_the_clock_skew_is_kept_and_due_at_once(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A send_at up to 60 s in the past is accepted as given, and so is already due."""
    send_at = ahead(seconds=-30)
    r = send(client, auth, {"to": TO, "body": "hi", "send_at": rfc3339(send_at)})
    assert r.status_code == 202, r.text
    row = stored(db, r.json()["id"])
    assert row["send_at"] == row["next_attempt_at"] == send_at


def _bad_payloads() -> list[tuple[dict[str, Any], tuple[str, str]]]:
    return [
        ({"priority": "urgent"}, ("priority", "invalid_priority")),
        ({"priority": 1}, ("priority", "invalid_type")),
        ({"send_at": "tomorrow"}, ("send_at", "invalid_timestamp")),
        ({"send_at": "2026-11-28T21:00:00"}, ("send_at", "invalid_timestamp")),
        ({"send_at": rfc3339(ahead(minutes=-5))}, ("send_at", "in_past")),
        ({"send_at": rfc3339(ahead(days=36))}, ("send_at", "too_far_ahead")),
        ({"expires_at": rfc3339(ahead(minutes=-1))}, ("expires_at", "in_past")),
        (
            {"send_at": rfc3339(ahead(hours=2)), "expires_at": rfc3339(ahead(hours=1))},
            ("expires_at", "before_send_at"),
        ),
        ({"expires_at": rfc3339(ahead(days=4))}, ("expires_at", "too_far_ahead")),
        ({"validity_seconds": 0}, ("validity_seconds", "out_of_range")),
        ({"validity_seconds": 259201}, ("validity_seconds", "out_of_range")),
        ({"validity_seconds": "60"}, ("validity_seconds", "invalid_type")),
        (
            {"expires_at": rfc3339(ahead(hours=1)), "validity_seconds": 60},
            ("validity_seconds", "conflicting_fields"),
        ),
    ]


@pytest.mark.parametrize(("extra", "expected"), _bad_payloads())
def test_bad_schedule_is_400_naming_the_field_and_writes_nothing(
    client: httpx.Client,
    auth: dict[str, str],
    db: psycopg.Connection[Any],
    extra: dict[str, Any],
    expected: tuple[str, str],
) -> None:
    """Each bad schedule field is a 400 with exactly its (field, code); no row is written."""
    before = counts(db)
    r = send(client, auth, {"to": TO, "body": "hi", **extra})
    assert errors(r) == {expected}
    assert counts(db) == before


def test_get_and_list_show_the_schedule(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """GET /sms/messages/{id} and the list show priority, send_at and expires_at as the 202 did."""
    send_at = ahead(hours=5)
    created = send(
        client,
        auth,
        {"to": TO, "body": "hi", "priority": "low", "send_at": rfc3339(send_at),
         "validity_seconds": 60},
    ).json()  # fmt: skip
    got = client.get(f"/sms/messages/{created['id']}", headers=auth).json()
    listed = client.get("/sms/messages", headers=auth).json()["messages"]
    assert [m["id"] for m in listed] == [created["id"]]
    for view in (got, listed[0]):
        assert (view["priority"], view["send_at"], view["expires_at"]) == (
            created["priority"],
            created["send_at"],
            created["expires_at"],
        )
    assert got["priority"] == "low"
    assert datetime.fromisoformat(got["send_at"]) == send_at
    assert datetime.fromisoformat(got["expires_at"]) == send_at + timedelta(seconds=60)


def test_list_filters_by_priority(client: httpx.Client, auth: dict[str, str]) -> None:
    """priority= narrows the list to that priority; an unknown one is a 400."""
    ids = {
        p: send(client, auth, {"to": TO, "body": p, "priority": p}).json()["id"]
        for p in ("high", "normal", "low")
    }
    plain = send(client, auth, {"to": OTHER, "body": "default"}).json()["id"]

    def listed(**params: str) -> list[str]:
        r = client.get("/sms/messages", params=params, headers=auth)
        assert r.status_code == 200, r.text
        return [m["id"] for m in r.json()["messages"]]

    assert listed(priority="high") == [ids["high"]]
    assert listed(priority="low") == [ids["low"]]
    assert listed(priority="normal") == [plain, ids["normal"]]
    assert listed(priority="high", to=OTHER) == []
    r = client.get("/sms/messages", params={"priority": "urgent"}, headers=auth)
    assert errors(r) == {("priority", "invalid_priority")}


def test_list_filters_by_expired_status(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """status=expired is a status the list knows, and finds the expired message."""
    expired = send(client, auth, {"to": TO, "body": "late", "validity_seconds": 1}).json()["id"]
    send(client, auth, {"to": TO, "body": "on time"})
    db.execute("DELETE FROM sms_outbox WHERE message_id = %s", (expired,))
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'expired', final_at = now() WHERE id = %s",
        (expired,),
    )
    r = client.get("/sms/messages", params={"status": "expired"}, headers=auth)
    assert r.status_code == 200, r.text
    assert [(m["id"], m["status"]) for m in r.json()["messages"]] == [(expired, "expired")]


def test_batch_stores_each_item_schedule(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Each batch item's schedule is its own, in the 202 and on its rows."""
    send_at = ahead(days=1)
    items = [
        {"to": TO, "body": "otp", "priority": "high", "validity_seconds": 300},
        {"to": OTHER, "body": TWO_SEGMENTS, "priority": "low", "send_at": rfc3339(send_at)},
        {"to": TO, "body": "plain"},
    ]
    r = client.post("/sms/send/batch", json={"messages": items}, headers=auth)
    assert r.status_code == 202, r.text
    answered = r.json()["messages"]
    assert [m["priority"] for m in answered] == ["high", "low", "normal"]
    rows = [stored(db, m["id"]) for m in answered]
    assert [(row["outbox_priority"], row["cost"]) for row in rows] == [(0, 1), (2, 2), (1, 1)]
    assert rows[0]["expires_at"] is not None and rows[0]["send_at"] is None
    assert rows[1]["next_attempt_at"] == rows[1]["send_at"] == send_at
    assert rows[1]["expires_at"] is None and rows[2]["expires_at"] is None
    assert {row["sender"] for row in rows} == {SENDER}


def test_batch_item_errors_name_the_item_and_write_nothing(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A bad schedule in any item refuses the batch, naming messages[i].field; nothing written."""
    before = counts(db)
    items = [
        {"to": TO, "body": "fine", "priority": "high"},
        {"to": TO, "body": "past", "send_at": rfc3339(ahead(hours=-1))},
        {"to": TO, "body": "both", "expires_at": rfc3339(ahead(hours=1)), "validity_seconds": 9},
        {"to": TO, "body": "odd", "priority": "meh"},
    ]
    r = client.post("/sms/send/batch", json={"messages": items}, headers=auth)
    assert errors(r) == {
        ("messages[1].send_at", "in_past"),
        ("messages[2].validity_seconds", "conflicting_fields"),
        ("messages[3].priority", "invalid_priority"),
    }
    assert counts(db) == before


def test_replay_with_another_schedule_is_409(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """The same Idempotency-Key with another priority or send_at is another request: 409."""
    headers = {"Idempotency-Key": "pace-1"}
    payload = {"to": TO, "body": "hi", "priority": "low", "send_at": rfc3339(ahead(hours=1))}
    assert send(client, auth, payload, **headers).status_code == 202
    for changed in (
        {**payload, "priority": "high"},
        {**payload, "send_at": rfc3339(ahead(hours=2))},
        {k: v for k, v in payload.items() if k != "priority"},
    ):
        r = send(client, auth, changed, **headers)
        assert r.status_code == 409, r.text
        assert [e["code"] for e in r.json()["errors"]] == ["idempotency_key_reused"]
    assert counts(db)[0] == 1


def test_replay_of_a_validity_request_answers_the_first_expiry(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """validity_seconds is hashed as given: the replay is a replay, with the first expires_at."""
    headers = {"Idempotency-Key": "pace-2"}
    payload = {"to": TO, "body": "hi", "priority": "high", "validity_seconds": 120}
    first = send(client, auth, payload, **headers)
    again = send(client, auth, payload, **headers)
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json() and first.json()["expires_at"] is not None
    assert counts(db)[0] == 1


def test_retry_refills_the_claim_columns(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """An operator retry of a failed message makes an outbox row with its sender, priority,
    cost and expiry, as the enqueue did."""
    r = send(client, auth, {"to": TO, "body": TWO_SEGMENTS, "priority": "low",
                            "validity_seconds": 7200})  # fmt: skip
    message_id = r.json()["id"]
    first = stored(db, message_id)
    db.execute("DELETE FROM sms_outbox WHERE message_id = %s", (message_id,))
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'failed', final_at = now(), attempts = 4,"
        " error_code = '30001', error_category = 'retryable' WHERE id = %s",
        (message_id,),
    )
    retried = client.post(f"/sms/messages/{message_id}/retry", headers=auth)
    assert retried.status_code == 200, retried.text
    assert retried.json()["priority"] == "low"
    again = stored(db, message_id)
    assert (again["sender"], again["outbox_priority"], again["cost"]) == (SENDER, 2, 2)
    assert again["outbox_expires_at"] == first["expires_at"]


def test_retry_keeps_a_send_at_still_ahead(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A retried message whose send_at is still ahead is due then, not at once."""
    send_at = ahead(hours=6)
    r = send(client, auth, {"to": TO, "body": "hi", "send_at": rfc3339(send_at)})
    message_id = r.json()["id"]
    db.execute("DELETE FROM sms_outbox WHERE message_id = %s", (message_id,))
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'failed', final_at = now() WHERE id = %s",
        (message_id,),
    )
    assert client.post(f"/sms/messages/{message_id}/retry", headers=auth).status_code == 200
    assert stored(db, message_id)["next_attempt_at"] == send_at
