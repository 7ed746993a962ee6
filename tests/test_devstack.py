"""`make run` (tooling.devstack): a second stack refuses to start and leaves the first one alone."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tooling import devstack


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str) -> None:
    # A checkout of its own (devstack works relative to it) whose stack uses this test's
    # database, and real credentials set so that no simulator (port) is involved.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.delenv("SIGNALWIRE_PROJECT_ID", raising=False)


def _untouched(db: psycopg.Connection[Any]) -> bool:
    row = db.execute("SELECT count(*) FROM sms_api_keys").fetchone()
    return row == (0,) and not devstack.DEV_KEY_FILE.exists()


def test_second_make_run_says_so_and_leaves_the_first_alone(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """While a make run holds the lock, another exits 1 with one line and touches nothing."""
    first, _ = devstack.hold_lock(devstack.LOCK_FILE)
    assert first is not None
    with first:
        assert devstack.main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another make run is already up" in err
    assert _untouched(db)


def test_a_taken_api_port_is_named_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    db: psycopg.Connection[Any],
) -> None:
    """With API_PORT taken, make run exits 1 naming it, touches nothing and lets go of its lock."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("API_PORT", str(taken.getsockname()[1]))
        assert devstack.main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(API_PORT) is already in use" in err
    assert _untouched(db)
    again, _ = devstack.hold_lock(devstack.LOCK_FILE)
    assert again is not None
    again.close()
