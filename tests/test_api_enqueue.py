"""The enqueue transaction: all rows or none, and the dispatcher wake-up after commit."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from shared.wakeup import CHANNEL, Wakeup
from tests.api_support import (  # noqa: F401 - fixtures are used by name
    TO,
    api_key_fixture,
    app_fixture,
    auth_fixture,
    client_fixture,
    live_fixture,
)


def _fail_inserts_into(db: psycopg.Connection[Any], table: str) -> None:
    db.execute(
        f"""
        CREATE FUNCTION test_fail() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'injected failure'; END $$;
        CREATE TRIGGER test_fail BEFORE INSERT ON {table}
            FOR EACH ROW EXECUTE FUNCTION test_fail();
        """
    )


def _counts(db: psycopg.Connection[Any]) -> tuple[int, ...]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM sms_conversations), (SELECT count(*) FROM sms_messages),"
        " (SELECT count(*) FROM sms_outbox), (SELECT count(*) FROM sms_message_events)"
    ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.parametrize("table", ["sms_outbox", "sms_conversations", "sms_messages"])
def test_failure_inside_the_transaction_leaves_nothing(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any], table: str
) -> None:
    """A failing insert anywhere in the enqueue: a JSON 500 and no message, outbox row,
    conversation or event left behind, with or without the others. (The enqueue writes no event
    since migration 0019.)"""
    _fail_inserts_into(db, table)
    r = client.post("/sms/send", json={"to": TO, "body": "Hi"}, headers=auth)
    assert r.status_code == 500
    assert r.json() == {"errors": [{"code": "internal", "message": "internal error"}]}
    assert "x-request-id" in r.headers
    assert _counts(db) == (0, 0, 0, 0)
    db.execute(f"DROP TRIGGER test_fail ON {table}")
    assert client.post("/sms/send", json={"to": TO, "body": "Hi"}, headers=auth).status_code == 202
    assert _counts(db) == (1, 1, 1, 0)


def test_send_wakes_the_dispatcher_after_commit(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A created message is followed by a NOTIFY on sms_outbox_wakeup, sent after its commit."""
    db.execute(f"LISTEN {CHANNEL}")
    r = client.post("/sms/send", json={"to": TO, "body": "Hi"}, headers=auth)
    assert r.status_code == 202
    notes = list(db.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in notes] == [CHANNEL]
    visible = db.execute("SELECT count(*) FROM sms_outbox").fetchone()
    assert visible == (1,)


def test_wakeups_are_coalesced(db_url: str, db: psycopg.Connection[Any]) -> None:
    """Many wake() calls within the coalescing window send one NOTIFY; a later one sends another."""
    db.execute(f"LISTEN {CHANNEL}")

    async def scenario() -> int:
        async with AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False) as pool:
            wakeup = Wakeup(pool, coalesce_seconds=0.05)
            wakeup.start()
            for _ in range(100):
                wakeup.wake()
            await asyncio.to_thread(lambda: list(db.notifies(timeout=5, stop_after=1)))
            wakeup.wake()
            await wakeup.stop()  # sends what is pending
            return wakeup.sent

    assert asyncio.run(scenario()) == 2
    assert len(list(db.notifies(timeout=0.5))) == 1
