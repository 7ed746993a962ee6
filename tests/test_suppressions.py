"""The suppression list: GET/POST/DELETE /sms/suppressions, the enqueue-time refusal of both send
paths (422 recipient_opted_out, nothing written) and smsctl suppressions. Real PostgreSQL and the
real API under uvicorn."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import psycopg
import pytest

from shared import apikeys
from tests.api_support import (  # noqa: F401 - fixtures are used by name
    SENDER,
    TO,
    api_key_fixture,
    app_fixture,
    auth_fixture,
    client_fixture,
    errors,
    json_logs_fixture,
    live_fixture,
)
from tests.dispatch_support import wait_until
from tooling.cli import main

OTHER_SENDER = "+15005550010"
OTHER = "+14155552672"
# In a URL path the number goes URL-encoded: the test client logs its URLs, and no log line of
# the run may carry a number in the clear.
ENCODED_TO = TO.replace("+", "%2B")


def counts(db: psycopg.Connection[Any]) -> tuple[int, int, int, int]:
    """(messages, outbox rows, events, conversations): what a refused send must not add to."""
    row = db.execute(
        "SELECT (SELECT count(*) FROM sms_messages), (SELECT count(*) FROM sms_outbox),"
        " (SELECT count(*) FROM sms_message_events), (SELECT count(*) FROM sms_conversations)"
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], row[3]


def suppress(
    db: psycopg.Connection[Any], phone: str, sender: str | None, reason: str = "api"
) -> None:
    db.execute(
        "INSERT INTO sms_suppressions (phone_number, sender_number, reason) VALUES (%s, %s, %s)",
        (phone, sender, reason),
    )


def add_sender(db: psycopg.Connection[Any], number: str, provider: str = "signalwire") -> None:
    db.execute(
        "INSERT INTO sms_senders (phone_number, provider, mps, burst) VALUES (%s, %s, 1000, 1000)",
        (number, provider),
    )


def opted_out(response: httpx.Response) -> list[str]:
    """The fields a 422 names as opted out (every error must be recipient_opted_out)."""
    assert response.status_code == 422, response.text
    items = response.json()["errors"]
    assert {e["code"] for e in items} == {"recipient_opted_out"} and all(
        e["message"] for e in items
    )
    return [e["field"] for e in items]


# -- the API -----------------------------------------------------------------------------------


def test_create_list_and_delete(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """POST suppresses (201, reason api, the key recorded), again answers 200 with the same one,
    GET lists it, DELETE lifts it (204) and a second DELETE finds none (404)."""
    first = client.post("/sms/suppressions", json={"phone_number": TO}, headers=auth)
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["phone_number"], body["sender_number"], body["reason"]) == (TO, None, "api")
    assert body["source_message_id"] is None
    again = client.post(
        "/sms/suppressions", json={"phone_number": TO, "sender_number": None}, headers=auth
    )
    assert again.status_code == 200 and again.json() == body
    key = db.execute("SELECT id FROM sms_api_keys").fetchone()
    assert key is not None
    assert db.execute("SELECT api_key_id, reason FROM sms_suppressions").fetchall() == [
        (key[0], "api")
    ]

    listed = client.get("/sms/suppressions", headers=auth).json()
    assert listed == {"suppressions": [body], "next_cursor": None}
    assert client.delete(f"/sms/suppressions/{ENCODED_TO}", headers=auth).status_code == 204
    gone = client.delete(f"/sms/suppressions/{ENCODED_TO}", headers=auth)
    assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == "not_found"
    assert client.get("/sms/suppressions", headers=auth).json()["suppressions"] == []


@pytest.mark.parametrize("reason", ["stop_keyword", "provider_opt_out"])
def test_only_an_operator_key_lifts_an_opt_out_the_recipient_made(
    reason: str, client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A sender key's DELETE of a STOP (or a provider's opt-out refusal) is 403 and lifts
    nothing; an operator key's lifts it."""
    suppress(db, TO, None, reason)
    refused = client.delete(f"/sms/suppressions/{ENCODED_TO}", headers=auth)
    assert refused.status_code == 403, refused.text
    assert refused.json()["errors"][0]["code"] == "recipient_opt_out"
    assert db.execute("SELECT count(*) FROM sms_suppressions").fetchone() == (1,)
    _, key = apikeys.create_key_sync(db, "ops", role="operator")
    ops = {"Authorization": f"Bearer {key}"}
    assert client.delete(f"/sms/suppressions/{ENCODED_TO}", headers=ops).status_code == 204
    assert db.execute("SELECT count(*) FROM sms_suppressions").fetchone() == (0,)


def test_per_sender_and_every_sender_are_apart(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A suppression for one sender and the every-sender one are two; DELETE lifts only the one
    its sender_number names (URL-encoded or not), and the filter finds one recipient's."""
    for sender in (SENDER, None):
        payload = {"phone_number": TO, "sender_number": sender}
        assert client.post("/sms/suppressions", json=payload, headers=auth).status_code == 201
    client.post("/sms/suppressions", json={"phone_number": OTHER}, headers=auth)
    mine = client.get("/sms/suppressions", params={"phone_number": TO}, headers=auth).json()
    assert [s["sender_number"] for s in mine["suppressions"]] == [None, SENDER]  # newest first
    lifted = client.delete(
        "/sms/suppressions/%2B14155552671", params={"sender_number": SENDER}, headers=auth
    )
    assert lifted.status_code == 204
    rows = db.execute("SELECT phone_number, sender_number FROM sms_suppressions ORDER BY id")
    assert rows.fetchall() == [(TO, None), (OTHER, None)]


def test_the_request_log_masks_the_number_in_the_path(
    client: httpx.Client, auth: dict[str, str], json_logs: io.StringIO
) -> None:
    """DELETE /sms/suppressions/{number} is logged with the number masked, like every number."""
    client.delete(f"/sms/suppressions/{ENCODED_TO}", headers=auth)

    def paths() -> list[str]:
        lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
        return [line["path"] for line in lines if line.get("action") == "http_request"]

    # The server writes the request's line once the answer is sent: maybe after the client read it.
    wait_until(lambda: bool(paths()), seconds=10, what="the request log line")
    assert paths() == ["/sms/suppressions/+1******2671"]


def test_national_numbers_are_stored_as_e164(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Numbers are read as the send path reads them (DEFAULT_REGION) and kept in E.164."""
    r = client.post(
        "/sms/suppressions",
        json={"phone_number": "(415) 555-2671", "sender_number": "+1 500 555 0006"},
        headers=auth,
    )
    assert r.status_code == 201 and (r.json()["phone_number"], r.json()["sender_number"]) == (
        TO,
        SENDER,
    )


def test_validation_names_every_field(client: httpx.Client, auth: dict[str, str]) -> None:
    """Every problem at once, each naming its field; 415 without JSON; 401 without a key."""
    assert errors(client.post("/sms/suppressions", json={}, headers=auth)) == {
        ("phone_number", "required")
    }
    bad = {"phone_number": "not a number", "sender_number": 5, "reason": "x"}
    assert errors(client.post("/sms/suppressions", json=bad, headers=auth)) == {
        ("phone_number", "invalid_number"),
        ("sender_number", "invalid_type"),
        ("reason", "unknown_field"),
    }
    query = {"phone_number": "12", "limit": "0", "cursor": "nope", "to": TO}
    assert errors(client.get("/sms/suppressions", params=query, headers=auth)) == {
        ("phone_number", "invalid_number"),
        ("limit", "invalid_limit"),
        ("cursor", "invalid_cursor"),
        ("to", "unknown_parameter"),
    }
    assert errors(
        client.delete("/sms/suppressions/abc", params={"sender_number": "x"}, headers=auth)
    ) == {
        ("phone_number", "invalid_number"),
        ("sender_number", "invalid_number"),
    }
    text = client.post(
        "/sms/suppressions", content="x", headers={**auth, "Content-Type": "text/plain"}
    )
    assert text.status_code == 415
    for response in (
        client.get("/sms/suppressions"),
        client.post("/sms/suppressions", json={"phone_number": TO}),
        client.delete(f"/sms/suppressions/{ENCODED_TO}"),
    ):
        assert response.status_code == 401


def test_a_recipient_outside_allowed_countries_can_still_be_suppressed(
    client: httpx.Client, auth: dict[str, str]
) -> None:
    """Suppressing is never refused for what only limits sending (countries, number types)."""
    landline_gb = "+442071838750"
    r = client.post("/sms/suppressions", json={"phone_number": landline_gb}, headers=auth)
    assert r.status_code == 201


def test_pages_follow_the_cursor(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """limit and next_cursor walk the list newest first without repeats or gaps."""
    numbers = [f"+1415555267{i}" for i in range(5)]
    for number in numbers:
        suppress(db, number, None)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = client.get("/sms/suppressions", params=params, headers=auth).json()
        seen += [s["phone_number"] for s in page["suppressions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == numbers[::-1]


# -- refused at enqueue -----------------------------------------------------------------------


def test_send_to_a_suppressed_recipient_is_422_and_writes_nothing(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Suppressed for this sender: 422 recipient_opted_out on `to`, no message, outbox row, event
    or conversation; the same recipient from another sender is accepted."""
    add_sender(db, OTHER_SENDER)
    suppress(db, TO, SENDER)
    refused = client.post("/sms/send", json={"to": TO, "body": "hi"}, headers=auth)
    assert opted_out(refused) == ["to"]
    assert counts(db) == (0, 0, 0, 0)
    other = client.post(
        "/sms/send", json={"to": TO, "body": "hi", "from": OTHER_SENDER}, headers=auth
    )
    assert other.status_code == 202, other.text
    assert (
        client.post("/sms/send", json={"to": OTHER, "body": "hi"}, headers=auth).status_code == 202
    )


def test_every_sender_suppression_blocks_every_sender(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """sender_number NULL: refused from any sender."""
    add_sender(db, OTHER_SENDER)
    suppress(db, TO, None, reason="operator")
    for sender in (SENDER, OTHER_SENDER):
        r = client.post("/sms/send", json={"to": TO, "body": "hi", "from": sender}, headers=auth)
        assert opted_out(r) == ["to"]
    assert counts(db) == (0, 0, 0, 0)


def test_an_idempotent_replay_still_answers_the_first_message(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A replay of a request accepted before the opt-out answers its original 202 (nothing new
    is sent: the claim cancels that message if it is still queued)."""
    headers = {**auth, "Idempotency-Key": "k-1"}
    first = client.post("/sms/send", json={"to": TO, "body": "hi"}, headers=headers)
    suppress(db, TO, None)
    replay = client.post("/sms/send", json={"to": TO, "body": "hi"}, headers=headers)
    assert replay.status_code == 202 and replay.json()["id"] == first.json()["id"]
    new = client.post(
        "/sms/send", json={"to": TO, "body": "hi"}, headers={**auth, "Idempotency-Key": "k-2"}
    )
    assert opted_out(new) == ["to"]


def test_batch_with_suppressed_items_names_them_and_writes_nothing(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """One refused item refuses the batch: 422 naming messages[i].to of each refused item, and
    nothing of any item is written."""
    suppress(db, OTHER, SENDER)
    suppress(db, "+14155552673", None)
    items = [{"to": t, "body": "hi"} for t in (TO, OTHER, "+14155552674", "+14155552673")]
    r = client.post("/sms/send/batch", json={"messages": items}, headers=auth)
    assert opted_out(r) == ["messages[1].to", "messages[3].to"]
    assert counts(db) == (0, 0, 0, 0)
    ok = client.post("/sms/send/batch", json={"messages": [items[0], items[2]]}, headers=auth)
    assert ok.status_code == 202 and counts(db)[0] == 2


def test_suppressions_of_other_pairs_do_not_refuse(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Another recipient's, or this recipient's for another sender, do not stop a send."""
    suppress(db, TO, OTHER_SENDER)
    suppress(db, OTHER, None)
    assert client.post("/sms/send", json={"to": TO, "body": "hi"}, headers=auth).status_code == 202


# -- smsctl ------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    for name in ("SMS_PROVIDER", "SIGNALWIRE_PHONE_NUMBER", "ALLOWED_COUNTRIES", "DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("TWILIO_PHONE_NUMBER", SENDER)


@pytest.mark.usefixtures("cli_env")
def test_smsctl_suppressions(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """add (reason operator; again: 0, says so), list (text and JSON, * = every sender), remove
    (0, then 1 when none), and a usage error (2) for a number that is none."""
    assert main(["suppressions", "add", TO]) == 0
    assert main(["suppressions", "add", "4155552671", "--sender", SENDER]) == 0
    assert main(["suppressions", "add", TO]) == 0
    assert "already suppressed" in capsys.readouterr().err
    rows = db.execute(
        "SELECT phone_number, sender_number, reason, api_key_id FROM sms_suppressions ORDER BY id"
    ).fetchall()
    assert rows == [(TO, None, "operator", None), (TO, SENDER, "operator", None)]

    assert main(["suppressions", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("phone_number\tsender_number\treason")
    assert [line.split("\t")[:3] for line in lines[1:]] == [
        [TO, SENDER, "operator"],
        [TO, "*", "operator"],
    ]
    assert main(["suppressions", "list", "--number", OTHER, "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"

    assert main(["suppressions", "remove", TO, "--sender", SENDER]) == 0
    assert main(["suppressions", "remove", TO, "--sender", SENDER]) == 1
    assert main(["suppressions", "remove", TO]) == 0
    assert db.execute("SELECT count(*) FROM sms_suppressions").fetchone() == (0,)
    assert main(["suppressions", "add", "nonsense"]) == 2
    assert main(["suppressions", "add", TO, "--sender", "x"]) == 2


@pytest.mark.usefixtures("cli_env")
def test_smsctl_send_to_a_suppressed_recipient_is_refused(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """smsctl send takes the same enqueue: exit 1 naming the opt-out, nothing written."""
    assert main(["suppressions", "add", TO, "--sender", SENDER]) == 0
    assert main(["send", "--to", TO, "--body", "hi"]) == 1
    assert "recipient_opted_out" in capsys.readouterr().err
    assert counts(db) == (0, 0, 0, 0)
