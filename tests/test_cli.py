"""smsctl: API keys and sending one message, with the documented exit codes and clean stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any
from uuid import UUID

import psycopg
import pytest

from shared import apikeys
from shared.wakeup import CHANNEL
from tooling.cli import main

TO = "+14155552671"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    for name in ("SMS_PROVIDER", "SIGNALWIRE_PHONE_NUMBER", "ALLOWED_COUNTRIES", "DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("TWILIO_PHONE_NUMBER", "+15005550006")


def test_create_prints_only_the_key(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """`api-keys create NAME` prints the key alone on stdout; it works and is stored hashed."""
    assert main(["api-keys", "create", "assistant"]) == 0
    out = capsys.readouterr().out
    key = out.strip()
    assert out == key + "\n" and len(key) >= 40
    assert apikeys.key_is_active(db, key)
    row = db.execute("SELECT name, key_sha256 FROM sms_api_keys").fetchone()
    assert row == ("assistant", apikeys.hash_key(key))


def test_list_shows_keys_but_not_their_secrets(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """`api-keys list` shows id, name and revocation, never a key or its hash."""
    key_id, key = apikeys.create_key_sync(db, "billing")
    assert main(["api-keys", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{key_id}\tbilling\t" in out and out.rstrip().endswith("-")
    assert key not in out and apikeys.hash_key(key) not in out


def test_revoke(capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]) -> None:
    """`api-keys revoke ID` revokes once (0); again or for an unknown id it refuses (1)."""
    key_id, key = apikeys.create_key_sync(db, "old")
    assert main(["api-keys", "revoke", str(key_id)]) == 0
    assert not apikeys.key_is_active(db, key)
    assert main(["api-keys", "revoke", str(key_id)]) == 1
    assert main(["api-keys", "revoke", "999999"]) == 1
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["api-keys"],
        ["api-keys", "revoke", "x"],
        ["nope"],
        ["send", "--to", TO],
        ["api-keys", "create", " "],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    """Missing or malformed arguments exit 2."""
    assert main(argv) == 2


def test_missing_database_url_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without DATABASE_URL there is nothing to operate on: a configuration error (2)."""
    monkeypatch.delenv("DATABASE_URL")
    assert main(["api-keys", "list"]) == 2


def test_send_queues_a_message_and_wakes_the_dispatcher(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """`send` enqueues through the same transaction as the API, prints the id, and NOTIFYs."""
    db.execute(f"LISTEN {CHANNEL}")
    assert main(["send", "--to", "415 555 2671", "--body", "from the shell"]) == 0
    message_id = UUID(capsys.readouterr().out.strip())
    row = db.execute(
        "SELECT m.to_number, m.from_number, m.provider, o.kind FROM sms_messages m"
        " JOIN sms_outbox o ON o.message_id = m.id WHERE m.id = %s",
        (message_id,),
    ).fetchone()
    assert row == (TO, "+15005550006", "twilio", "send_sms")
    assert [n.channel for n in db.notifies(timeout=5, stop_after=1)] == [CHANNEL]


def test_send_refuses_bad_input_and_unknown_senders(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """An invalid number or body is a usage error (2); an unknown sender is refused (1)."""
    assert main(["send", "--to", "+19005550123", "--body", "x"]) == 2
    assert main(["send", "--to", TO, "--body", "  "]) == 2
    assert main(["send", "--to", TO, "--body", "x", "--from", "+14155550100"]) == 1
    assert "number_type_not_allowed" in capsys.readouterr().err
    assert db.execute("SELECT count(*) FROM sms_messages").fetchone() == (0,)


def test_a_closed_pipe_ends_quietly(db_url: str) -> None:
    """`smsctl list | head`, the reader gone before smsctl writes: exit 0, nothing on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tooling.cli", "list"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env={**os.environ, "DATABASE_URL": db_url},
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, b"")
