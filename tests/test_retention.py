"""Partitioned history (0010) and retention by dropping whole days (tooling/retention.py)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from shared import migrate as migrations
from shared.queries import q
from tooling import retention

SENDER = "+15005550006"
TO = "+14155550100"


def _day(db: psycopg.Connection[Any], days_ago: int) -> str:
    """The name of the day partition `days_ago` days before today (UTC), made if missing."""
    row = db.execute(
        "SELECT sms_message_events_make_partitions(d, d),"
        " 'sms_message_events_p' || to_char(d, 'YYYYMMDD')"
        " FROM (SELECT (now() AT TIME ZONE 'UTC')::date - %s AS d) AS t",
        (days_ago,),
    ).fetchone()
    assert row is not None
    return str(row[1])


def _message(db: psycopg.Connection[Any], *, days_ago: int, final: bool, to: str = TO) -> uuid.UUID:
    """A message created `days_ago` days ago (final then, or still pending) with a 'created'
    event at its creation."""
    conv = db.execute(
        "INSERT INTO sms_conversations (from_number, to_number) VALUES (%s, %s)"
        " ON CONFLICT (from_number, to_number) DO UPDATE SET last_message_at = now()"
        " RETURNING id",
        (SENDER, to),
    ).fetchone()
    assert conv is not None
    at = f"now() - interval '{days_ago} days'"
    status, final_at = ("failed", at) if final else ("pending", "NULL")
    row = db.execute(
        "INSERT INTO sms_messages (conversation_id, from_number, to_number, body, provider,"
        " segments, encoding, delivery_status, created_at, final_at)"
        f" VALUES (%s, %s, %s, 'hi', 'twilio', 1, 'GSM-7', %s, {at}, {final_at}) RETURNING id",
        (conv[0], SENDER, to, status),
    ).fetchone()
    assert row is not None
    db.execute(
        "INSERT INTO sms_message_events (message_id, event_type, to_status, occurred_at)"
        f" VALUES (%s, 'created', 'pending', {at})",
        (row[0],),
    )
    return uuid.UUID(str(row[0]))


def _partitions(db: psycopg.Connection[Any]) -> set[str]:
    rows = db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'sms_message_events'::regclass"
    ).fetchall()
    return {str(r[0]) for r in rows}


def _events(db: psycopg.Connection[Any], message_id: uuid.UUID) -> int:
    row = db.execute(
        "SELECT count(*) FROM sms_message_events WHERE message_id = %s", (message_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _prune(db_url: str, older_than: timedelta) -> retention.Pruned:
    async def run() -> retention.Pruned:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return await retention.prune(conn, older_than)

    return asyncio.run(run())


def test_prune_drops_a_day_older_than_the_cutoff(db: psycopg.Connection[Any], db_url: str) -> None:
    """A day partition wholly older than --older-than whose messages are final goes whole, and
    its messages with it."""
    old_day = _day(db, 40)
    old = _message(db, days_ago=40, final=True)
    pruned = _prune(db_url, timedelta(days=30))
    assert old_day not in _partitions(db)
    assert (pruned.messages, pruned.days_dropped, pruned.days_kept) == (1, 1, 0)
    assert db.execute("SELECT count(*) FROM sms_messages WHERE id = %s", (old,)).fetchone() == (0,)


def test_prune_keeps_the_current_day_and_makes_days_ahead(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    """Today's partition and its events stay; the next DAYS_AHEAD days exist after a prune."""
    today = _day(db, 0)
    recent = _message(db, days_ago=0, final=True)
    _prune(db_url, timedelta(hours=1))
    parts = _partitions(db)
    assert today in parts
    ahead = datetime.now(UTC).date() + timedelta(days=retention.DAYS_AHEAD)
    assert f"sms_message_events_p{ahead:%Y%m%d}" in parts
    assert _events(db, recent) == 1


def test_prune_keeps_a_day_holding_an_event_of_a_live_message(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    """A day older than the cutoff that holds an event of a message still pending is kept: that
    event survives, while the final message of the same day goes with its events."""
    old_day = _day(db, 40)
    live = _message(db, days_ago=40, final=False)
    done = _message(db, days_ago=40, final=True, to="+14155550101")
    pruned = _prune(db_url, timedelta(days=30))
    assert old_day in _partitions(db)
    assert (pruned.days_dropped, pruned.days_kept, pruned.messages) == (0, 1, 1)
    assert _events(db, live) == 1
    assert _events(db, done) == 0
    # Once the live message is final and old, the next run drops the day.
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'failed', final_at = now() - interval '35 days'"
        " WHERE id = %s",
        (live,),
    )
    assert _prune(db_url, timedelta(days=30)).days_dropped == 1
    assert old_day not in _partitions(db)


def test_prune_keeps_a_day_of_a_final_message_with_outbox_work(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    """A final message whose alert still waits to be delivered is kept by messages_prune; its
    day of events is kept with it."""
    old_day = _day(db, 40)
    done = _message(db, days_ago=40, final=True)
    alert = db.execute(
        "INSERT INTO sms_alerts (kind, message_id, payload) VALUES ('message_failed', %s, '{}')"
        " RETURNING id",
        (done,),
    ).fetchone()
    assert alert is not None
    db.execute("INSERT INTO sms_outbox (kind, alert_id) VALUES ('deliver_alert', %s)", (alert[0],))
    pruned = _prune(db_url, timedelta(days=30))
    assert (pruned.days_dropped, pruned.days_kept, pruned.messages) == (0, 1, 0)
    assert old_day in _partitions(db) and _events(db, done) == 1


def test_drop_partition_refuses_anything_but_a_past_day(db: psycopg.Connection[Any]) -> None:
    """The retention function drops only day partitions of the history past the cutoff."""
    today = _day(db, 0)
    for name in (today, "sms_message_events_default", "sms_messages"):
        row = db.execute(
            q("events_drop_partition"), {"partition_name": name, "older_than": timedelta(days=1)}
        ).fetchone()
        assert row is not None and str(row[0]).startswith("kept:"), name
    assert {today, "sms_message_events_default"} <= _partitions(db)


@pytest.mark.parametrize(
    "offset", ["- interval '3 years'", "+ interval '2 years'", "+ interval '0'"]
)
def test_insert_at_any_time(db: psycopg.Connection[Any], offset: str) -> None:
    """An event of any time is accepted: a day without a partition lands in the DEFAULT one,
    and making that day later moves it in."""
    message = _message(db, days_ago=0, final=False)
    row = db.execute(
        "INSERT INTO sms_message_events (message_id, event_type, occurred_at)"
        f" VALUES (%s, 'sweep', now() {offset})"
        " RETURNING tableoid::regclass::text, (occurred_at AT TIME ZONE 'UTC')::date",
        (message,),
    ).fetchone()
    assert row is not None
    where, day = row
    if offset.endswith("'0'"):
        assert where.startswith("sms_message_events_p")
        return
    assert where == "sms_message_events_default"
    db.execute("SELECT sms_message_events_make_partitions(%s, %s)", (day, day))
    moved = db.execute(
        "SELECT tableoid::regclass::text FROM sms_message_events"
        " WHERE message_id = %s AND event_type = 'sweep'",
        (message,),
    ).fetchone()
    assert moved == (f"sms_message_events_p{day:%Y%m%d}",)


def test_event_of_an_unknown_message_is_refused(db: psycopg.Connection[Any]) -> None:
    """The foreign key of message_id holds on the partitioned table (trigger)."""
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.execute(
            "INSERT INTO sms_message_events (message_id, event_type) VALUES (%s, 'sweep')",
            (uuid.uuid4(),),
        )


def test_deleting_a_message_deletes_its_events(db: psycopg.Connection[Any]) -> None:
    """ON DELETE CASCADE holds on the partitioned table (trigger), in every partition."""
    message = _message(db, days_ago=0, final=True)
    _day(db, 3)
    db.execute(
        "INSERT INTO sms_message_events (message_id, event_type, occurred_at)"
        " VALUES (%s, 'sweep', now() - interval '3 days'),"
        " (%s, 'sweep', now() + interval '3 years')",
        (message, message),
    )
    assert _events(db, message) == 3
    db.execute("DELETE FROM sms_messages WHERE id = %s", (message,))
    assert _events(db, message) == 0


def test_duplicate_callback_is_recorded_once(db: psycopg.Connection[Any]) -> None:
    """events_record_callback still answers "new or duplicate" without a unique index."""
    message = _message(db, days_ago=0, final=False)
    params = {
        "message_id": message,
        "raw_status": "delivered",
        "provider": "twilio",
        "sid": "SM1",
        "error_code": None,
        "detail": None,
    }
    first = db.execute(q("events_record_callback"), params).fetchone()
    again = db.execute(q("events_record_callback"), params).fetchone()
    other = db.execute(q("events_record_callback"), {**params, "sid": "SM2"}).fetchone()
    orphan = {**params, "message_id": None}
    orphans = [db.execute(q("events_record_callback"), orphan).fetchone() for _ in range(2)]
    assert first is not None and again is None and other is not None
    assert all(o is not None for o in orphans)


def test_migration_keeps_rows_written_before_it(db: psycopg.Connection[Any], db_url: str) -> None:
    """A database with history written before 0010 is converted: every event readable, in its
    day's partition, through the views too; new ids follow the old ones."""
    db.execute("DROP DATABASE IF EXISTS sms_before_0010")
    db.execute("CREATE DATABASE sms_before_0010")
    url = make_conninfo(db_url, dbname="sms_before_0010")
    before = [m for m in migrations.available() if m.version < 10]
    with tempfile.TemporaryDirectory() as tmp:
        for m in before:
            shutil.copy(m.path, tmp)
        migrations.migrate(url, Path(tmp))
    with psycopg.connect(url, autocommit=True) as old:
        message = _message(old, days_ago=3, final=True)
        old.execute(
            "INSERT INTO sms_message_events (message_id, event_type, error_category, provider)"
            " VALUES (%s, 'attempt_result', 'sent', 'twilio')",
            (message,),
        )
        ids = [r[0] for r in old.execute("SELECT id FROM sms_message_events ORDER BY id")]
    migrations.migrate(url)
    with psycopg.connect(url, autocommit=True) as new:
        rows = new.execute(
            "SELECT id, tableoid::regclass::text FROM sms_message_events ORDER BY id"
        ).fetchall()
        assert [r[0] for r in rows] == ids
        assert all(r[1].startswith("sms_message_events_p") for r in rows)
        outcomes = new.execute("SELECT provider, sent FROM sms_provider_outcomes_1h").fetchall()
        assert outcomes == [("twilio", 1)]
        row = new.execute(
            "INSERT INTO sms_message_events (message_id, event_type) VALUES (%s, 'sweep')"
            " RETURNING id",
            (message,),
        ).fetchone()
        assert row is not None and row[0] > max(ids)
    db.execute("DROP DATABASE sms_before_0010")


def test_prune_removes_finished_webhook_deliveries_older_than_the_cutoff(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    """Delivered and failed deliveries made before the cutoff go; a newer finished one and an old
    pending one (still outbox work) stay."""
    key = db.execute(
        "INSERT INTO sms_api_keys (name, key_sha256) VALUES ('k', md5('k') || md5('k!'))"
        " RETURNING id"
    ).fetchone()
    assert key is not None
    endpoint = db.execute(
        "INSERT INTO sms_webhook_endpoints (api_key_id, url, secret) VALUES"
        " (%s, 'https://hooks.example.com/a', 'whsec_' || repeat('A', 32)) RETURNING id",
        (key[0],),
    ).fetchone()
    assert endpoint is not None

    def delivery(state: str, days_ago: int) -> str:
        row = db.execute(
            "INSERT INTO sms_webhook_deliveries (endpoint_id, event_type, payload, occurred_at,"
            " state, delivered_at, created_at) VALUES (%s, 'message.sent', '{}', now(), %s,"
            " CASE WHEN %s = 'delivered' THEN now() END, now() - make_interval(days => %s))"
            " RETURNING id",
            (endpoint[0], state, state, days_ago),
        ).fetchone()
        assert row is not None
        return str(row[0])

    gone = {delivery("delivered", 40), delivery("failed", 31)}
    kept = {delivery("delivered", 29), delivery("pending", 40)}
    pruned = _prune(db_url, timedelta(days=30))
    assert pruned.webhook_deliveries == 2
    left = {str(r[0]) for r in db.execute("SELECT id FROM sms_webhook_deliveries").fetchall()}
    assert left == kept and not left & gone


def test_a_timeline_reads_only_the_days_since_its_message_was_created(
    db: psycopg.Connection[Any],
) -> None:
    """events_timeline is bounded by the message's creation: a day partition older than the
    message is never scanned (run-time partition pruning), though it exists."""
    old_day = _day(db, 40)
    message = _message(db, days_ago=0, final=False)
    plan = "\\n".join(
        str(row[0])
        for row in db.execute(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + q("events_timeline"),
            {"message_id": message},
        ).fetchall()
    )
    scanned = [line for line in plan.splitlines() if old_day in line]
    assert all("never executed" in line for line in scanned) or not scanned, plan
    rows = db.execute(q("events_timeline"), {"message_id": message}).fetchall()
    assert [r[1] for r in rows] == ["created"]
