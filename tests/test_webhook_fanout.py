"""The webhook fan-out after commit (migration 0016, webhook_deliveries_fan_out): committed message
events become deliveries once each, none skipped when transactions commit out of id order, in
bounded batches, and never inside the SMS transaction that wrote the event."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import psycopg
from prometheus_client import REGISTRY
from psycopg import AsyncConnection

from dispatcher.webhook_http import session as webhook_session
from dispatcher.webhooks import FanOut, WebhookWorker
from shared.config import Settings
from shared.db import open_pool
from shared.messages import enqueue
from shared.providers.base import StatusUpdate
from shared.queries import q
from shared.status import apply_update
from shared.webhook_signing import new_secret
from tests.dispatch_support import ensure_sender
from tests.webhook_support import fan_out, fan_out_step

SENDER = "+15005550006"
# Never contacted: these tests stop at the deliveries and their outbox rows.
URL = "http://127.0.0.1:9/hook"


def key_with_endpoint(db: psycopg.Connection[Any], *, endpoint: bool = True) -> int:
    """An API key, with one enabled endpoint for every event type unless told otherwise."""
    row = db.execute(
        "INSERT INTO sms_api_keys (name, key_sha256) VALUES ('app', md5('a') || md5('b'))"
        " RETURNING id"
    ).fetchone()
    assert row is not None
    if endpoint:
        db.execute(
            "INSERT INTO sms_webhook_endpoints (api_key_id, url, secret) VALUES (%s, %s, %s)",
            (row[0], URL, new_secret()),
        )
    return int(row[0])


def message(db: psycopg.Connection[Any], db_url: str, key: int) -> UUID:
    """One message enqueued for `key` as POST /sms/send does (status pending)."""
    ensure_sender(db, SENDER)

    async def go() -> UUID:
        async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
            created = await enqueue(
                conn,
                api_key_id=key,
                to_number="+14155550123",
                from_number=SENDER,
                provider="twilio",
                body="hello",
                conversation_id=None,
                idempotency_key=None,
                request_hash=None,
                request_id="req-fanout",
            )
            return created.id

    return asyncio.run(go())


def record(conn: psycopg.Connection[Any], mid: UUID, before: str, after: str) -> None:
    """A status change's event, as every guarded UPDATE writes it (in `conn`'s transaction)."""
    conn.execute(
        "INSERT INTO sms_message_events (message_id, event_type, from_status, to_status)"
        " VALUES (%s, 'transition', %s, %s)",
        (mid, before, after),
    )


def made(db: psycopg.Connection[Any]) -> list[str]:
    """The deliveries' event types in the order they were made; each has its outbox row."""
    got = db.execute(
        "SELECT d.event_type, o.id IS NOT NULL FROM sms_webhook_deliveries d"
        " LEFT JOIN sms_outbox o ON o.webhook_delivery_id = d.id"
        " ORDER BY (d.payload ->> 'timestamp'), d.created_at"
    ).fetchall()
    assert all(queued for _, queued in got), "a delivery without its outbox row"
    return [str(kind) for kind, _ in got]


def cursor(db: psycopg.Connection[Any]) -> tuple[int, int]:
    row = db.execute("SELECT xact::text::bigint, event_id FROM sms_webhook_fanout").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_an_event_committed_after_a_later_one_is_fanned_out_once_it_commits(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    """T1 writes an event and stays open; T2 writes a later event and commits. The fan-out then
    passes neither (it never moves beyond T1's transaction); once T1 commits, both are delivered,
    each once."""
    mid = message(db, db_url, key_with_endpoint(db))
    with psycopg.connect(db_url) as t1:
        record(t1, mid, "pending", "queued")
        row = t1.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
        assert row is not None
        t1_xact = int(row[0])
        record(db, mid, "queued", "sent")  # T2: autocommit, a later id, committed first
        assert fan_out(db) == 0
        assert made(db) == []
        assert cursor(db)[0] <= t1_xact
        (lag,) = db.execute("SELECT fanout_lag_seconds FROM sms_webhook_health").fetchone() or ()
        assert lag is not None  # the health view shows that events wait
        t1.commit()
    assert fan_out(db) == 2
    assert made(db) == ["message.queued", "message.sent"]
    assert fan_out(db) == 0
    assert made(db) == ["message.queued", "message.sent"]


def test_running_the_fan_out_again_makes_no_duplicates(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    """Every step moves the cursor past what it read: a second run, and a third after one more
    event, make only the new event's delivery."""
    mid = message(db, db_url, key_with_endpoint(db))
    record(db, mid, "pending", "queued")
    record(db, mid, "queued", "sent")
    assert fan_out(db) == 2
    assert fan_out(db) == 0
    record(db, mid, "sent", "delivered")
    assert fan_out(db) == 1
    assert fan_out(db) == 0
    assert made(db) == ["message.queued", "message.sent", "message.delivered"]


def test_a_status_change_makes_no_delivery_inside_its_own_transaction(
    db: psycopg.Connection[Any], db_url: str, settings: Settings
) -> None:
    """A status callback applied to a message whose key has an enabled endpoint writes no
    delivery and no deliver_webhook work in its transaction; the fan-out makes it afterwards."""
    mid = message(db, db_url, key_with_endpoint(db))
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'queued', provider_sid = 'SM1' WHERE id = %s",
        (mid,),
    )
    update = StatusUpdate("twilio", mid, "SM1", "delivered", "delivered", None)

    async def go() -> tuple[int, int]:
        async with await AsyncConnection.connect(db_url) as conn:
            async with conn.transaction():
                result = await apply_update(conn, update, settings=settings)
                assert result is not None
                cur = await conn.execute(
                    "SELECT (SELECT count(*) FROM sms_webhook_deliveries),"
                    " (SELECT count(*) FROM sms_outbox WHERE kind = 'deliver_webhook'),"
                    " (SELECT count(*) FROM sms_message_events"
                    "  WHERE message_id = %s AND to_status = 'delivered'"
                    "    AND event_type = 'transition')",
                    (mid,),
                )
                row = await cur.fetchone()
                assert row is not None and row[2] == 1  # the status change is recorded
                return int(row[0]), int(row[1])

    assert asyncio.run(go()) == (0, 0)
    assert fan_out(db) == 1
    assert made(db) == ["message.delivered"]


def test_a_step_reads_at_most_its_batch_and_the_next_goes_on_from_there(
    db: psycopg.Connection[Any], db_url: str, settings: Settings
) -> None:
    """Five committed events, batches of two: a step makes two deliveries and says more may
    wait; WebhookWorker.fan_out stops after its steps; the rest come with the next call, in
    order."""
    mid = message(db, db_url, key_with_endpoint(db))
    for before, after in [
        ("pending", "queued"),
        ("queued", "sent"),
        ("sent", "delivered"),
        ("delivered", "read"),
    ]:
        record(db, mid, before, after)
    db.execute(
        "INSERT INTO sms_message_events (message_id, event_type, to_status)"
        " VALUES (%s, 'received', 'received')",
        (mid,),
    )
    row = fan_out_step(db, 2)
    assert row == (True, 2, 2)
    assert made(db) == ["message.queued", "message.sent"]

    async def go() -> list[FanOut]:
        pool = await open_pool(db_url, application_name="test-fanout", max_size=2)
        try:
            async with webhook_session(4, 5.0) as http:
                worker = WebhookWorker(pool, settings, "test-host:1:aaaa", http=http)
                return [
                    await worker.fan_out(batch=2, steps=1),
                    await worker.fan_out(batch=2, steps=3),
                ]
        finally:
            await pool.close()

    first, second = asyncio.run(go())
    assert (first.steps, first.events, first.deliveries, first.more) == (1, 2, 2, True)
    assert (second.steps, second.events, second.deliveries, second.more) == (1, 1, 1, False)
    assert made(db) == [
        "message.queued",
        "message.sent",
        "message.delivered",
        "message.read",
        "message.received",
    ]


def test_without_an_enabled_endpoint_the_cursor_only_moves(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    """With no endpoint enabled anywhere, a step reads no event and moves the cursor past the
    committed ones, at most once a second (a step within the second writes nothing): an
    endpoint added later gets only what happens after the next step."""
    key = key_with_endpoint(db, endpoint=False)
    mid = message(db, db_url, key)
    record(db, mid, "pending", "queued")
    db.execute("UPDATE sms_webhook_fanout SET updated_at = now() - interval '1 minute'")
    before = cursor(db)
    row = fan_out_step(db)
    assert row == (True, 0, 0)
    moved = cursor(db)
    assert moved > before
    record(db, mid, "queued", "sent")  # the cursor moved just now: this one waits a second
    row = fan_out_step(db)
    assert row == (False, 0, 0)
    assert cursor(db) == moved
    db.execute("UPDATE sms_webhook_fanout SET updated_at = now() - interval '1 minute'")
    assert fan_out_step(db) == (True, 0, 0)
    db.execute(
        "INSERT INTO sms_webhook_endpoints (api_key_id, url, secret) VALUES (%s, %s, %s)",
        (key, URL, new_secret()),
    )
    record(db, mid, "sent", "delivered")
    assert fan_out(db) == 1
    assert made(db) == ["message.delivered"]


def test_a_step_that_finds_the_cursor_locked_leaves_it_to_the_other(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    """Two dispatchers at once: the one that finds the cursor row locked does nothing (and
    waits for nothing); the holder's events are not made twice."""
    mid = message(db, db_url, key_with_endpoint(db))
    record(db, mid, "pending", "queued")
    with psycopg.connect(db_url) as other:
        held = fan_out_step(other)
        assert held == (True, 1, 1)
        assert fan_out_step(db) == (
            False,
            0,
            0,
        )
        other.commit()
    assert fan_out(db) == 0
    assert made(db) == ["message.queued"]


def test_every_partition_stamps_its_events_with_their_transaction(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    """Events get their transaction id in every partition: a day made by PARTITION OF, a day
    moved out of the DEFAULT partition (LIKE ... INCLUDING DEFAULTS), and the DEFAULT one."""
    mid = message(db, db_url, key_with_endpoint(db))
    far = "2031-03-04 12:00+00"
    db.execute(
        "INSERT INTO sms_message_events (message_id, event_type, to_status, occurred_at)"
        " VALUES (%s, 'transition', 'sent', %s)",
        (mid, far),
    )
    db.execute("SELECT sms_message_events_make_partitions('2031-03-04', '2031-03-05')")
    for at in (far, "2031-03-05 12:00+00", "2040-01-01 00:00+00", "now"):
        db.execute(
            "INSERT INTO sms_message_events (message_id, event_type, to_status, occurred_at)"
            " VALUES (%s, 'transition', 'delivered', %s)",
            (mid, at),
        )
    rows = db.execute(
        "SELECT tableoid::regclass::text, xact IS NOT NULL FROM sms_message_events"
        " WHERE message_id = %s AND event_type = 'transition' ORDER BY id",
        (mid,),
    ).fetchall()
    assert [r[0] for r in rows] == [
        "sms_message_events_p20310304",
        "sms_message_events_p20310304",
        "sms_message_events_p20310305",
        "sms_message_events_default",
        rows[-1][0],
    ]
    assert all(stamped for _, stamped in rows)


def test_a_step_with_nothing_to_do_writes_nothing(db: psycopg.Connection[Any], db_url: str) -> None:
    """With an endpoint enabled and every committed event fanned out, a step leaves the cursor
    row alone (no lock, no commit to flush): the webhook loop runs one after every SMS batch."""
    mid = message(db, db_url, key_with_endpoint(db))
    record(db, mid, "pending", "queued")
    assert fan_out(db) == 1
    before = db.execute("SELECT xmin::text, xmax::text FROM sms_webhook_fanout").fetchone()
    row = fan_out_step(db)
    assert row == (False, 0, 0)
    assert db.execute("SELECT xmin::text, xmax::text FROM sms_webhook_fanout").fetchone() == before


def history_behind_the_cursor(db: psycopg.Connection[Any], db_url: str) -> UUID:
    """A key with an endpoint, one message, and 20,000 webhook-worthy events of it behind the
    fan-out's cursor (already fanned out, as a long history is), analyzed; the message."""
    mid = message(db, db_url, key_with_endpoint(db))
    fan_out(db)
    db.execute(
        "INSERT INTO sms_message_events (message_id, event_type, from_status, to_status, xact)"
        " SELECT %s, 'transition', 'queued', 'sent',"
        " (f.xact::text::bigint - 1)::text::xid8"
        " FROM sms_webhook_fanout f, generate_series(1, 20000)",
        (mid,),
    )
    db.execute("ANALYZE sms_message_events")
    return mid


def filtered(plan: dict[str, Any]) -> int:
    """Rows an EXPLAIN ANALYZE plan (FORMAT JSON) read and threw away, over all its nodes."""
    own = sum(
        int(plan.get(key, 0)) * int(plan.get("Actual Loops", 1))
        for key in ("Rows Removed by Filter", "Rows Removed by Join Filter")
    )
    return own + sum(filtered(child) for child in plan.get("Plans", []))


def test_a_step_reads_no_history_behind_the_cursor(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    """The fan-out reads from its cursor on, in every plan: with 20,000 webhook-worthy events
    behind the cursor, no step (generic plan, as a prepared statement gets after five runs)
    filters history row by row. Looking for "is anything waiting" with a plain EXISTS let the
    planner scan the day's partition from its start, a cost that grew with the history and ran
    after every SMS batch."""
    mid = history_behind_the_cursor(db, db_url)
    record(db, mid, "queued", "sent")
    db.execute("SET plan_cache_mode = force_generic_plan")
    sql = q("webhook_deliveries_fan_out").replace("%(limit)s", "$1")
    db.execute(f"PREPARE fan(int) AS {sql}")
    with db.transaction(force_rollback=True):
        [[plan]] = db.execute("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE fan(100)").fetchone()
    assert filtered(plan["Plan"]) < 100
    # That step was rolled back; the next makes the one event past the cursor, and no history.
    assert fan_out(db) == 1
    assert made(db) == ["message.sent"]


def test_a_catch_up_reads_no_history_before_the_endpoints_position(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    """An endpoint behind the fan-out (migration 0021) catches up from its own position: with
    20,000 events before it, its catch-up (generic plan) filters none of them row by row, and
    makes the one event past it."""
    mid = history_behind_the_cursor(db, db_url)
    db.execute(
        "UPDATE sms_webhook_endpoints SET behind_xact = f.xact, behind_event_id = f.event_id"
        " FROM sms_webhook_fanout f"
    )
    record(db, mid, "queued", "sent")
    db.execute("SET plan_cache_mode = force_generic_plan")
    sql = q("webhook_deliveries_catch_up").replace("%(limit)s", "$1")
    db.execute(f"PREPARE catch(int) AS {sql}")
    with db.transaction(force_rollback=True):
        assert db.execute(q("webhook_deliveries_mark")).fetchone() is not None
        db.execute(q("webhook_deliveries_fan_out"), {"limit": 500})  # the cursor passes it
        [[plan]] = db.execute("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE catch(100)").fetchone()
    assert filtered(plan["Plan"]) < 100
    assert fan_out(db) == 1
    assert made(db) == ["message.sent"]


def test_the_fan_out_lag_reads_no_history_behind_the_cursor(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    """sms_webhook_health's fanout_lag_seconds (read every 15 s by each dispatcher, and by every
    /metrics scrape) probes the events from the cursor on: with 20,000 behind it, the view
    filters none of them row by row, and still says how old the first waiting event is."""
    mid = history_behind_the_cursor(db, db_url)
    [[plan]] = db.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM sms_webhook_health"
    ).fetchone()
    assert filtered(plan["Plan"]) < 100
    assert db.execute("SELECT fanout_lag_seconds FROM sms_webhook_health").fetchone() == (None,)
    record(db, mid, "queued", "sent")
    (lag,) = db.execute("SELECT fanout_lag_seconds FROM sms_webhook_health").fetchone() or ()
    assert lag is not None and lag >= 0


def test_the_fan_out_lag_is_on_metrics(
    db: psycopg.Connection[Any], db_url: str, settings: Settings
) -> None:
    """The dispatcher's health refresh sets sms_webhook_fanout_lag_seconds: the age of the event
    waiting to be fanned out, then 0 once it is."""
    mid = message(db, db_url, key_with_endpoint(db))
    db.execute(
        "INSERT INTO sms_message_events (message_id, event_type, from_status, to_status,"
        " occurred_at) VALUES (%s, 'transition', 'pending', 'queued', now() - interval '5 s')",
        (mid,),
    )

    async def refresh() -> float | None:
        pool = await open_pool(db_url, application_name="test-fanout", max_size=2)
        try:
            async with webhook_session(4, 5.0) as http:
                await WebhookWorker(pool, settings, "test-host:1:aaaa", http=http).refresh_health()
        finally:
            await pool.close()
        return REGISTRY.get_sample_value("sms_webhook_fanout_lag_seconds")

    lag = asyncio.run(refresh())
    assert lag is not None and lag >= 5
    assert fan_out(db) == 1
    assert asyncio.run(refresh()) == 0
