"""The bench's seeding statements leave what the service itself writes (bench/sql/bench.sql,
bench/growth.py), so a change of the enqueue's writes cannot leave them behind unnoticed."""

from __future__ import annotations

from typing import Any

import psycopg

from bench import growth, seed
from bench.stack import SENDER


def _counts(db: psycopg.Connection[Any]) -> tuple[int, int, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM sms_messages), (SELECT count(*) FROM sms_outbox),"
        " (SELECT count(*) FROM sms_message_events)"
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_seeded_messages_are_pending_with_their_outbox_rows_and_no_event(
    db: psycopg.Connection[Any],
) -> None:
    """bench_seed_messages: N pending messages, each with one due send_sms outbox row, and no
    event row (the enqueue writes none since migration 0019)."""
    seed.seed_messages(db, 5, "seedcheck", sender=SENDER)
    assert _counts(db) == (5, 5, 0)
    kinds = db.execute(
        "SELECT DISTINCT m.delivery_status, o.kind, o.sender FROM sms_messages m"
        " JOIN sms_outbox o ON o.message_id = m.id"
    ).fetchall()
    assert kinds == [("pending", "send_sms", SENDER)]


def test_history_and_retained_day_are_finished_messages_with_three_events(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    """The growth history (bench_history_insert) and the retained day (RETAIN_INSERT): finished
    messages, no outbox row, an attempt and two transitions each."""
    growth.insert_history(db, 0, 20)
    assert _counts(db) == (20, 0, 60)
    problems: list[str] = []
    done = growth.retain_once(db, db_url, 10, "drop", problems)
    assert problems == [] and done["messages_removed"] == 10
    types = db.execute(
        "SELECT event_type, count(*) FROM sms_message_events GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert types == [("attempt_started", 20), ("transition", 40)]
