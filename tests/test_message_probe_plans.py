"""A message named by its id is found by its primary key, whatever the statistics say about its
status (sql/queries/outbox.sql and messages.sql, `IS TRUE`): statistics taken while no message
was pending made sms_messages_status_idx look cheaper than the primary key, and then every claim
and record read the whole backlog of pending messages."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from dispatcher.outbox import claim_params
from shared.queries import q
from tests.dispatch_support import enqueue_bulk

BACKLOG = 3000
LIMIT = 64


@pytest.fixture
def backlog(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """BACKLOG pending messages with their outbox rows, and statistics of sms_messages taken when
    every message was delivered (none pending in ANALYZE's sample), kept for the test."""
    db.execute("ALTER TABLE sms_messages SET (autovacuum_enabled = off)")
    enqueue_bulk(db, BACKLOG, from_number="+15005550001")
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'delivered',"
        " provider_sid = 'SM' || md5(id::text), submitted_at = now(), final_at = now()"
    )
    db.execute("DELETE FROM sms_outbox")
    db.execute("ANALYZE sms_messages")
    enqueue_bulk(db, BACKLOG)
    return db


def rows_read(plan: dict[str, Any], relation: str) -> int:
    """Rows the scans of `relation` in an EXPLAIN ANALYZE plan (FORMAT JSON) read: those they
    returned and those their own filter removed, in every loop."""
    own = 0
    if plan.get("Relation Name") == relation and plan["Node Type"] != "ModifyTable":
        per_loop = int(plan.get("Actual Rows", 0)) + int(plan.get("Rows Removed by Filter", 0))
        own = per_loop * int(plan.get("Actual Loops", 1))
    return own + sum(rows_read(child, relation) for child in plan.get("Plans", []))


def _explain(db: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The executed plan (EXPLAIN ANALYZE, FORMAT JSON) of the named query with `params`."""
    row = db.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {q(name)}", params).fetchone()
    assert row is not None
    return dict(row[0][0]["Plan"])


def test_a_claim_reads_only_the_messages_it_claims(backlog: psycopg.Connection[Any]) -> None:
    """A claim of 64 out of 3,000 pending sends (attempts started in the same statement) reads a
    few rows of sms_messages per claimed send, not the backlog."""
    plan = _explain(
        backlog, "outbox_claim_due", claim_params("owner-1", LIMIT, 30, providers={"twilio"})
    )
    started = backlog.execute(
        "SELECT count(*) FROM sms_outbox WHERE state = 'leased' AND attempt_started_at IS NOT NULL"
    ).fetchone()
    assert started == (LIMIT,)
    assert rows_read(plan, "sms_messages") <= 3 * LIMIT


def test_recording_sends_reads_only_their_messages(backlog: psycopg.Connection[Any]) -> None:
    """Recording 64 accepted sends (outbox_record_sent) reads their own messages only."""
    backlog.execute(q("outbox_claim_due"), claim_params("owner-1", LIMIT, 30, providers={"twilio"}))
    rows = backlog.execute(
        "SELECT id, attempts FROM sms_outbox WHERE state = 'leased' ORDER BY id"
    ).fetchall()
    plan = _explain(
        backlog,
        "outbox_record_sent",
        {
            "now": None,
            "owner": "owner-1",
            "ids": [r[0] for r in rows],
            "attempts": [r[1] for r in rows],
            "sids": [f"SMrecorded{r[0]:024d}" for r in rows],
            "raw_statuses": ["queued"] * len(rows),
            "reconciled": [False] * len(rows),
        },
    )
    queued = backlog.execute(
        "SELECT count(*) FROM sms_messages WHERE provider_sid LIKE 'SMrecorded%'"
    ).fetchone()
    assert queued == (LIMIT,)
    assert rows_read(plan, "sms_messages") <= 3 * LIMIT


def test_canceling_one_message_reads_one_message(backlog: psycopg.Connection[Any]) -> None:
    """messages_cancel of one pending message of the backlog reads that message alone."""
    [[message_id]] = backlog.execute(
        "SELECT id FROM sms_messages WHERE delivery_status = 'pending' LIMIT 1"
    ).fetchall()
    backlog.execute("SET plan_cache_mode = force_generic_plan")  # as a prepared statement runs
    plan = _explain(backlog, "messages_cancel", {"id": message_id, "actor": "test"})
    assert backlog.execute(
        "SELECT delivery_status FROM sms_messages WHERE id = %s", (message_id,)
    ).fetchone() == ("canceled",)
    assert rows_read(plan, "sms_messages") <= 2


def test_a_status_callback_reads_one_message(backlog: psycopg.Connection[Any]) -> None:
    """A delivery callback's transition (messages_transition, planned for its own values as the
    API's statements are) of one of 3,000 queued messages reads that message alone: statistics
    taken while none was queued once sent it through the whole queued backlog."""
    backlog.execute(
        "UPDATE sms_messages SET delivery_status = 'queued', provider_sid = 'SMq' || md5(id::text),"
        " submitted_at = now() WHERE delivery_status = 'pending'"
    )
    [[message_id]] = backlog.execute(
        "SELECT id FROM sms_messages WHERE delivery_status = 'queued' LIMIT 1"
    ).fetchall()
    plan = _explain(
        backlog,
        "messages_transition",
        {
            "message_id": message_id,
            "status": "delivered",
            "previous": "queued",
            "sources": ["queued", "sending", "sent"],
            "terminal": True,
            "failed": False,
            "error_code": None,
            "error_message": None,
            "detail": None,
        },
    )
    assert backlog.execute(
        "SELECT delivery_status FROM sms_messages WHERE id = %s", (message_id,)
    ).fetchone() == ("delivered",)
    assert rows_read(plan, "sms_messages") <= 2
