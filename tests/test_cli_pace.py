"""smsctl and start-up registration with a sender's pace (mps, burst) against the real database."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from shared import senders
from shared.config import load_settings
from tooling.cli import main

SENDER = "+15005550006"
OTHER = "+15005550010"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    for name in (
        "SMS_PROVIDER",
        "SIGNALWIRE_PHONE_NUMBER",
        "ALLOWED_COUNTRIES",
        "DEFAULT_REGION",
        "SENDER_DEFAULT_MPS",
        "QUIET_HOURS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("TWILIO_PHONE_NUMBER", SENDER)


def _pace(db: psycopg.Connection[Any], number: str) -> tuple[Any, ...] | None:
    return db.execute(
        "SELECT mps, burst FROM sms_senders WHERE phone_number = %s", (number,)
    ).fetchone()


def _register(db_url: str, environ: dict[str, str]) -> None:
    """What the API does at start: register the configured numbers."""

    async def go() -> None:
        async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
            await senders.register(conn, load_settings({"DATABASE_URL": db_url, **environ}))

    asyncio.run(go())


def test_set_rate(capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]) -> None:
    """`senders set-rate N MPS` sets the pace with burst max(1, ceil(mps)); --burst overrides it."""
    assert main(["senders", "add", OTHER, "--provider", "twilio"]) == 0
    assert _pace(db, OTHER) == (Decimal(1), 1)
    assert main(["senders", "set-rate", OTHER, "2.5"]) == 0
    assert _pace(db, OTHER) == (Decimal("2.5"), 3)
    assert main(["senders", "set-rate", OTHER, "40", "--burst", "200"]) == 0
    assert _pace(db, OTHER) == (Decimal(40), 200)
    assert main(["senders", "set-rate", OTHER, "0.5"]) == 0
    assert _pace(db, OTHER) == (Decimal("0.5"), 1)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{OTHER} now sends at most 0.5 segment(s) per second, 1 at once" in captured.err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["0"], "MPS must be"),
        (["-1"], "MPS must be"),
        (["10000.5"], "MPS must be"),
        (["0.0001"], "MPS must be"),
        (["fast"], "MPS is not a number"),
        (["nan"], "MPS must be a finite number"),
        (["inf"], "MPS must be a finite number"),
        (["5", "--burst", "0"], "--burst must be"),
        (["5", "--burst", "100001"], "--burst must be"),
        (["5", "--burst", "many"], "--burst is not a whole number"),
    ],
)
def test_set_rate_refuses_a_bad_pace(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any], argv: list[str], words: str
) -> None:
    """A pace the schema would refuse is a usage error (2) in one line, and nothing is written."""
    assert main(["senders", "add", OTHER, "--provider", "twilio", "--mps", "3"]) == 0
    capsys.readouterr()
    assert main(["senders", "set-rate", OTHER, *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("smsctl: ") and words in err, err
    assert _pace(db, OTHER) == (Decimal(3), 3)


def test_set_rate_of_an_unknown_number(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """An unknown sender is refused (1) by name; something that is not a number is usage (2)."""
    assert main(["senders", "set-rate", "+15005550099", "5"]) == 1
    assert "no sender +15005550099" in capsys.readouterr().err
    assert main(["senders", "set-rate", "not a number", "5"]) == 2
    assert main(["senders", "set-rate", OTHER]) == 2
    assert db.execute("SELECT count(*) FROM sms_senders").fetchone() == (0,)


def test_the_schema_refuses_a_pace_of_zero(db: psycopg.Connection[Any]) -> None:
    """Behind the CLI, sms_senders' CHECK refuses mps 0 (and burst 0) from any UPDATE."""
    db.execute("INSERT INTO sms_senders (phone_number, provider) VALUES (%s, 'twilio')", (OTHER,))
    for assignment in ("mps = 0", "mps = -1", "mps = 10001", "burst = 0"):
        with pytest.raises(psycopg.errors.CheckViolation), db.transaction():
            db.execute(f"UPDATE sms_senders SET {assignment} WHERE phone_number = %s", (OTHER,))
    assert _pace(db, OTHER) == (Decimal(1), 1)


def test_set_rate_carries_what_the_sender_owes_in_segments(db: psycopg.Connection[Any]) -> None:
    """A sender 10 s in debt at 1 mps (10 segments) owes 1 s at 10 mps: a raise helps at once."""
    db.execute(
        "INSERT INTO sms_senders (phone_number, provider, pace_tat)"
        " VALUES (%s, 'twilio', now() + interval '10 seconds')",
        (OTHER,),
    )
    assert main(["senders", "set-rate", OTHER, "10"]) == 0
    row = db.execute(
        "SELECT extract(epoch FROM pace_tat - now())::float8 FROM sms_senders"
        " WHERE phone_number = %s",
        (OTHER,),
    ).fetchone()
    assert row is not None and 0.5 < row[0] <= 1.0


def _backlog(db: psycopg.Connection[Any], number: str) -> None:
    """Three due sends (1, 2 and 3 segments, the oldest 30 s late), one scheduled, one leased."""
    conversation = db.execute(
        "INSERT INTO sms_conversations (from_number, to_number) VALUES (%s, '+14155552671')"
        " RETURNING id",
        (number,),
    ).fetchone()
    assert conversation is not None
    for cost, due, state in (
        (1, "-30 seconds", "ready"),
        (2, "-10 seconds", "ready"),
        (3, "-1 second", "ready"),
        (1, "1 hour", "ready"),
        (1, "1 minute", "leased"),
    ):
        message = db.execute(
            "INSERT INTO sms_messages (conversation_id, from_number, to_number, body, provider,"
            " segments, encoding) VALUES (%s, %s, '+14155552671', 'hi', 'twilio', %s, 'GSM-7')"
            " RETURNING id",
            (conversation[0], number, cost),
        ).fetchone()
        assert message is not None
        leased = state == "leased"
        db.execute(
            "INSERT INTO sms_outbox (kind, message_id, provider, sender, cost, state,"
            " next_attempt_at, lease_owner, lease_expires_at)"
            " VALUES ('send_sms', %s, 'twilio', %s, %s, %s, now() + %s::interval, %s,"
            " CASE WHEN %s THEN now() + %s::interval END)",
            (message[0], number, cost, state, due, "host:1:x" if leased else None, leased, due),
        )


def test_list_shows_pace_and_backlog(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """`senders list` shows mps, burst, the allowance now and the backlog of each sender."""
    assert main(["senders", "add", OTHER, "--provider", "signalwire", "--mps", "2"]) == 0
    assert main(["senders", "add", SENDER, "--provider", "twilio", "--burst", "5"]) == 0
    _backlog(db, OTHER)
    capsys.readouterr()

    assert main(["senders", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split("\t")
    for column in ("mps", "burst", "allowance_now", "due", "due_segments", "scheduled",
                   "oldest_due_seconds"):  # fmt: skip
        assert column in header
    rows = {cells[0]: dict(zip(header, cells, strict=True)) for cells in map(str.split, lines[1:])}
    other = rows[OTHER]
    assert (other["mps"], other["burst"], other["allowance_now"]) == ("2", "2", "2")
    assert (other["due"], other["due_segments"], other["scheduled"], other["leased"]) == (
        ("3", "6", "1", "1")
    )
    assert float(other["oldest_due_seconds"]) >= 30 and other["drain_seconds"] == "3"
    idle = rows[SENDER]
    assert (idle["mps"], idle["burst"], idle["due"], idle["oldest_due_seconds"]) == (
        ("1", "5", "0", "-")
    )

    assert main(["senders", "list", "--json"]) == 0
    data = {r["phone_number"]: r for r in json.loads(capsys.readouterr().out)}
    assert data[OTHER]["mps"] == 2 and data[OTHER]["due_segments"] == 6
    assert data[OTHER]["provider"] == "signalwire" and data[OTHER]["enabled"] is True
    assert data[SENDER]["burst"] == 5 and data[SENDER]["oldest_due_seconds"] is None


def test_add_takes_its_pace_from_sender_default_mps(
    monkeypatch: pytest.MonkeyPatch, db: psycopg.Connection[Any]
) -> None:
    """`senders add` without --mps uses SENDER_DEFAULT_MPS, its burst max(1, ceil(mps))."""
    monkeypatch.setenv("SENDER_DEFAULT_MPS", "4.2")
    assert main(["senders", "add", OTHER, "--provider", "twilio"]) == 0
    assert _pace(db, OTHER) == (Decimal("4.2"), 5)


def test_registration_uses_sender_default_mps_and_keeps_a_set_rate(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """At API start a new number gets SENDER_DEFAULT_MPS; a known one keeps its own pace."""
    _register(db_url, {"TWILIO_PHONE_NUMBER": SENDER, "SENDER_DEFAULT_MPS": "2.5"})
    assert _pace(db, SENDER) == (Decimal("2.5"), 3)
    assert main(["senders", "set-rate", SENDER, "7", "--burst", "20"]) == 0
    _register(db_url, {"TWILIO_PHONE_NUMBER": SENDER, "SENDER_DEFAULT_MPS": "1"})
    assert _pace(db, SENDER) == (Decimal(7), 20)
    _register(
        db_url,
        {
            "TWILIO_PHONE_NUMBER": SENDER,
            "SIGNALWIRE_PHONE_NUMBER": OTHER,
            "SENDER_DEFAULT_MPS": "30",
        },
    )
    assert _pace(db, OTHER) == (Decimal(30), 30)
    assert _pace(db, SENDER) == (Decimal(7), 20)
