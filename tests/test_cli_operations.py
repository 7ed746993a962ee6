"""smsctl's operator commands against the real database: output, --json and exit codes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest

from tooling.cli import main

TO = "+14155552671"
SENDER = "+15005550006"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    for name in ("SMS_PROVIDER", "SIGNALWIRE_PHONE_NUMBER", "ALLOWED_COUNTRIES", "DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("TWILIO_PHONE_NUMBER", SENDER)


def _send(capsys: pytest.CaptureFixture[str], to: str = TO) -> str:
    assert main(["send", "--to", to, "--body", "hello"]) == 0
    return capsys.readouterr().out.strip()


def _fail(db: psycopg.Connection[Any], message_id: str, *, ago: str = "0", sid: Any = None) -> None:
    db.execute("DELETE FROM sms_outbox WHERE message_id = %s", (message_id,))
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'failed',"
        " final_at = now() - %s::interval, provider_sid = %s,"
        " error_code = '21610', error_category = 'permanent', error_message = 'opted out'"
        " WHERE id = %s",
        (f"{ago} seconds" if ago.isdigit() else ago, sid, message_id),
    )


def test_show_prints_the_message_and_its_timeline(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """`show ID` prints the message and every event; --json has the same facts."""
    message_id = _send(capsys)
    _fail(db, message_id)
    assert main(["show", message_id]) == 0
    out = capsys.readouterr().out
    assert "delivery_status: failed" in out and "error_code: 21610" in out
    assert "\tcreated\t" in out
    assert main(["show", message_id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["id"] == message_id and [e["event_type"] for e in data["events"]] == ["created"]


def test_show_unknown_and_malformed(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown id exits 1; something that is not an id exits 2."""
    assert main(["show", str(uuid.uuid4())]) == 1
    assert main(["show", "nope"]) == 2
    assert capsys.readouterr().out == ""


def test_list_filters_and_json(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """`list` filters by status, number and since, newest first; --json has no bodies."""
    first = _send(capsys)
    second = _send(capsys, to="+14155552672")
    _fail(db, first)
    assert main(["list", "--json"]) == 0
    assert [m["id"] for m in json.loads(capsys.readouterr().out)] == [second, first]
    assert main(["list", "--status", "failed", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in rows] == [first] and "body" not in rows[0]
    assert main(["list", "--number", "415-555-2672"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("id\t") and len(lines) == 2 and lines[1].startswith(second)
    assert main(["list", "--since", "1h", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["list", "--since", "2999-01-01", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "--since", "last tuesday"],
        ["list", "--number", "abc"],
        ["list", "--conversation", "nope"],
        ["list", "--status", "lost"],
        ["list", "--limit", "0"],
    ],
)
def test_list_usage_errors(argv: list[str]) -> None:
    """Bad filters are usage errors (2)."""
    assert main(argv) == 2


def test_outbox_report(capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]) -> None:
    """`outbox` shows depth by state, leases per dispatcher and paused providers."""
    first = _send(capsys)
    _send(capsys, to="+14155552672")
    db.execute(
        "UPDATE sms_outbox SET state = 'leased', lease_owner = 'host-a:1:x', attempts = 1,"
        " lease_expires_at = now() - interval '5 seconds', next_attempt_at = now()"
        " WHERE message_id = %s",
        (first,),
    )
    db.execute(
        "INSERT INTO sms_provider_pauses (provider, paused_until, error_code, reason)"
        " VALUES ('twilio', now() + interval '1 minute', '20003', 'bad credentials')"
    )
    assert main(["outbox", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    depth = {(r["kind"], r["state"]): r["depth"] for r in data["depth"]}
    assert depth == {("send_sms", "leased"): 1, ("send_sms", "ready"): 1}
    assert data["leases"] == [
        {
            "lease_owner": "host-a:1:x",
            "leased": 1,
            "expired": 1,
            "first_expiry": data["leases"][0]["first_expiry"],
        }
    ]
    assert data["paused_providers"][0]["provider"] == "twilio"
    assert data["paused_providers"][0]["active"] is True
    assert main(["outbox"]) == 0
    out = capsys.readouterr().out
    assert "host-a:1:x\t1\t1\t" in out and "# paused providers" in out


def test_retry_and_its_refusals(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """`retry ID` requeues a failed message (0); again, accepted-by-provider or unknown: 1."""
    message_id = _send(capsys)
    _fail(db, message_id)
    assert main(["retry", message_id]) == 0
    row = db.execute(
        "SELECT m.delivery_status, m.attempts, o.attempts FROM sms_messages m"
        " JOIN sms_outbox o ON o.message_id = m.id WHERE m.id = %s",
        (message_id,),
    ).fetchone()
    assert row == ("pending", 0, 0)
    assert main(["retry", message_id]) == 1
    assert "not_failed" in capsys.readouterr().err
    accepted = _send(capsys, to="+14155552672")
    _fail(db, accepted, sid="SM" + "2" * 32)
    assert main(["retry", accepted]) == 1
    assert "already_accepted_by_provider" in capsys.readouterr().err
    assert main(["retry", str(uuid.uuid4())]) == 1


def test_retry_failed_since(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """`retry --failed-since 1h` requeues the recent never-accepted failures only."""
    recent = _send(capsys)
    old = _send(capsys, to="+14155552672")
    accepted = _send(capsys, to="+14155552673")
    _fail(db, recent, ago="60")
    _fail(db, old, ago="2 hours")
    _fail(db, accepted, ago="60", sid="SM" + "3" * 32)
    assert main(["retry", "--failed-since", "1h"]) == 0
    assert capsys.readouterr().out.split() == [recent]
    statuses = dict(db.execute("SELECT id::text, delivery_status FROM sms_messages").fetchall())
    assert statuses == {recent: "pending", old: "failed", accepted: "failed"}


@pytest.mark.parametrize(
    "argv",
    [
        ["retry"],
        ["retry", str(uuid.uuid4()), "--failed-since", "1h"],
        ["retry", "--failed-since", "soon"],
        ["retry", "x"],
        ["cancel", "x"],
    ],
)
def test_retry_and_cancel_usage_errors(argv: list[str]) -> None:
    """Neither or both of ID and --failed-since, a bad time or a bad id: usage error (2)."""
    assert main(argv) == 2


def test_cancel(capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]) -> None:
    """`cancel ID` cancels a pending message (0); a sent one or an unknown id is refused (1)."""
    message_id = _send(capsys)
    assert main(["cancel", message_id]) == 0
    row = db.execute(
        "SELECT delivery_status, final_at IS NOT NULL FROM sms_messages WHERE id = %s",
        (message_id,),
    ).fetchone()
    assert row == ("canceled", True)
    sent = _send(capsys, to="+14155552672")
    db.execute("DELETE FROM sms_outbox WHERE message_id = %s", (sent,))
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'sent', provider_sid = 'SMx',"
        " submitted_at = now() WHERE id = %s",
        (sent,),
    )
    assert main(["cancel", sent]) == 1
    assert "not_pending" in capsys.readouterr().err
    assert main(["cancel", str(uuid.uuid4())]) == 1


def test_senders(capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]) -> None:
    """`senders add|disable|list`: added once (again: 1), disabled once (again: 1), listed."""
    assert main(["senders", "add", "+15005550010", "--provider", "signalwire"]) == 0
    assert main(["senders", "add", "+15005550010", "--provider", "signalwire"]) == 1
    assert main(["senders", "disable", "+15005550010"]) == 0
    assert main(["senders", "disable", "+15005550010"]) == 1
    assert main(["senders", "add", "not a number", "--provider", "twilio"]) == 2
    assert main(["senders", "add", "+15005550011", "--provider", "nexmo"]) == 2
    capsys.readouterr()
    assert main(["senders", "list", "--json"]) == 0
    rows = {r["phone_number"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["+15005550010"]["enabled"] is False
    assert rows["+15005550010"]["provider"] == "signalwire"


def test_senders_set_default(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """`senders set-default N` makes N the only default; an unknown or disabled N is refused (1)
    and the default stays where it was."""
    assert main(["senders", "add", "+15005550010", "--provider", "signalwire"]) == 0
    assert main(["senders", "add", "+15005550020", "--provider", "twilio"]) == 0
    assert main(["senders", "set-default", "+15005550020"]) == 0
    assert main(["senders", "set-default", "+15005550010"]) == 0
    assert "default sender is now +15005550010" in capsys.readouterr().err

    def defaults() -> list[tuple[str, ...]]:
        return db.execute("SELECT phone_number FROM sms_senders WHERE is_default").fetchall()

    assert defaults() == [("+15005550010",)]
    assert main(["senders", "disable", "+15005550020"]) == 0
    assert main(["senders", "set-default", "+15005550020"]) == 1
    assert main(["senders", "set-default", "+15005550099"]) == 1
    assert main(["senders", "set-default", "not a number"]) == 2
    assert defaults() == [("+15005550010",)]


def test_api_keys_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    """`api-keys list --json` lists the keys without secrets."""
    assert main(["api-keys", "create", "ops"]) == 0
    key = capsys.readouterr().out.strip()
    assert main(["api-keys", "list", "--json"]) == 0
    out = capsys.readouterr().out
    assert key not in out and [k["name"] for k in json.loads(out)] == ["ops"]


def test_alerts(capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]) -> None:
    """`alerts` lists alerts newest first with their delivery state."""
    db.execute(
        "INSERT INTO sms_alerts (kind, provider, error_code, payload, delivery_state)"
        " VALUES ('provider_config', 'twilio', '20003', '{}', 'not_configured')"
    )
    assert main(["alerts", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["delivery_state"]) for r in rows] == [
        ("provider_config", "not_configured")
    ]
    assert main(["alerts"]) == 0
    assert "provider_config" in capsys.readouterr().out


def test_prune(capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]) -> None:
    """`prune` deletes old final messages with their events, never recent or unfinished ones."""
    old = _send(capsys)
    recent = _send(capsys, to="+14155552672")
    pending = _send(capsys, to="+14155552673")
    _fail(db, old, ago="40 days")
    _fail(db, recent, ago="1 day")
    db.execute(
        "UPDATE sms_messages SET created_at = now() - interval '41 days' WHERE id = %s", (pending,)
    )
    assert main(["prune", "--older-than", "30d", "--batch", "1"]) == 0
    left = {r[0] for r in db.execute("SELECT id::text FROM sms_messages").fetchall()}
    assert left == {recent, pending}
    assert db.execute(
        "SELECT count(*) FROM sms_message_events WHERE message_id::text = %s", (old,)
    ).fetchone() == (0,)
    assert main(["prune", "--older-than", "30"]) == 2
    assert main(["prune", "--older-than", "30d", "--batch", "0"]) == 2
