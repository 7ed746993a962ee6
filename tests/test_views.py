"""The DBA views of migration 0003: what each one shows, and that each carries a comment."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

VIEWS = ("sms_queue_health", "sms_failed_messages", "sms_stuck_work", "sms_provider_outcomes_1h")


def _message(db: psycopg.Connection[Any], to: str, **columns: Any) -> str:
    conversation = db.execute(
        "INSERT INTO sms_conversations (from_number, to_number) VALUES ('+15005550006', %s)"
        " ON CONFLICT (from_number, to_number) DO UPDATE SET last_message_at = now()"
        " RETURNING id",
        (to,),
    ).fetchone()
    assert conversation is not None
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    row = db.execute(
        "INSERT INTO sms_messages (conversation_id, from_number, to_number, body, provider,"
        f" segments, encoding{', ' if columns else ''}{names}) VALUES (%s, '+15005550006', %s,"
        f" 'hi', 'twilio', 1, 'GSM-7'{', ' if columns else ''}{marks}) RETURNING id",
        (conversation[0], to, *columns.values()),
    ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize("view", VIEWS)
def test_every_view_has_a_comment(db: psycopg.Connection[Any], view: str) -> None:
    """A DBA reading \\dv+ learns what each view is for."""
    row = db.execute("SELECT obj_description(%s::regclass, 'pg_class')", (view,)).fetchone()
    assert row is not None and row[0] and len(row[0]) > 40


def test_queue_health(db: psycopg.Connection[Any]) -> None:
    """Depth, due count, oldest due age and expired leases per kind and state."""
    ready = _message(db, "+14155552671")
    leased = _message(db, "+14155552672")
    db.execute(
        "INSERT INTO sms_outbox (kind, message_id, provider, sender, next_attempt_at)"
        " SELECT 'send_sms', id, provider, from_number, now() - interval '30 seconds'"
        " FROM sms_messages WHERE id = %s",
        (ready,),
    )
    db.execute(
        "INSERT INTO sms_outbox (kind, message_id, provider, sender, state, lease_owner,"
        " lease_expires_at, next_attempt_at) SELECT 'send_sms', id, provider, from_number,"
        " 'leased', 'd1', now() - interval '1 second', now() - interval '1 second'"
        " FROM sms_messages WHERE id = %s",
        (leased,),
    )
    rows = db.execute(
        "SELECT state, depth, due, oldest_due_seconds >= 30, expired_leases"
        " FROM sms_queue_health ORDER BY state"
    ).fetchall()
    assert rows == [("leased", 1, 1, False, 1), ("ready", 1, 1, True, 0)]


def test_failed_messages(db: psycopg.Connection[Any]) -> None:
    """Failed and undelivered messages show with their error; a sid makes them not requeueable."""
    failed = _message(
        db, "+14155552671", delivery_status="failed", final_at="now", error_code="21610"
    )
    undelivered = _message(
        db,
        "+14155552672",
        delivery_status="undelivered",
        final_at="now",
        provider_sid="SM1",
        error_code="30005",
    )
    _message(db, "+14155552673")
    rows = db.execute(
        "SELECT id::text, error_code, requeueable FROM sms_failed_messages ORDER BY error_code"
    ).fetchall()
    assert rows == [(failed, "21610", True), (undelivered, "30005", False)]


def test_stuck_work(db: psycopg.Connection[Any]) -> None:
    """Expired leases, accepted messages with no final status, and old pending messages show."""
    leased = _message(db, "+14155552671")
    db.execute(
        "INSERT INTO sms_outbox (kind, message_id, provider, sender, state, lease_owner,"
        " lease_expires_at, next_attempt_at) SELECT 'send_sms', id, provider, from_number,"
        " 'leased', 'd1', now() - interval '2 minutes', now() - interval '2 minutes'"
        " FROM sms_messages WHERE id = %s",
        (leased,),
    )
    silent = _message(
        db,
        "+14155552672",
        delivery_status="sent",
        provider_sid="SM2",
        submitted_at="2000-01-01T00:00:00Z",
    )
    old_pending = _message(db, "+14155552673", created_at="2000-01-01T00:00:00Z")
    _message(db, "+14155552674")  # fresh pending: not stuck
    rows = db.execute(
        "SELECT reason, message_id::text FROM sms_stuck_work ORDER BY reason"
    ).fetchall()
    assert rows == [
        ("lease_expired", leased),
        ("no_final_status", silent),
        ("pending_too_long", old_pending),
    ]


def test_provider_outcomes_1h(db: psycopg.Connection[Any]) -> None:
    """Attempt outcomes of the last hour are counted per provider; older ones are not."""
    message_id = _message(db, "+14155552671")
    for category, when in (
        ("sent", "now()"),
        ("retryable", "now()"),
        ("ambiguous", "now()"),
        ("sent", "now() - interval '2 hours'"),
    ):
        db.execute(
            "INSERT INTO sms_message_events (message_id, event_type, provider, error_category,"
            f" occurred_at) VALUES (%s, 'attempt_result', 'twilio', %s, {when})",
            (message_id, category),
        )
    db.execute(
        "INSERT INTO sms_message_events (message_id, event_type, provider, error_category)"
        " VALUES (%s, 'reconciled', 'twilio', 'sent')",
        (message_id,),
    )
    row = db.execute(
        "SELECT provider, attempts, sent, reconciled, retryable, ambiguous, permanent,"
        " success_ratio::float FROM sms_provider_outcomes_1h"
    ).fetchone()
    assert row == ("twilio", 4, 1, 1, 1, 1, 0, 0.5)
