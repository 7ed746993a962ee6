"""Pre-enqueued work for the drains: N messages exactly as shared.messages.enqueue writes them,
inserted with one multi-row statement so the drain's clock starts at a single commit."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import psycopg

from shared.queries import parse
from shared.segments import count_segments

SQL_FILE = Path(__file__).resolve().parent / "sql" / "bench.sql"
WAKEUP = "NOTIFY sms_outbox_wakeup"
RECIPIENTS = 10_000  # distinct recipients the bodies cycle over (so threads are shared)


@cache
def _queries() -> dict[str, str]:
    return parse(SQL_FILE.read_text())


def bq(name: str) -> str:
    """The SQL of one named bench query (bench/sql/bench.sql)."""
    return _queries()[name]


def recipient(i: int) -> str:
    """A valid US mobile-or-landline number that the simulator accepts (no test-number prefix)."""
    return f"+1415200{i % RECIPIENTS:04d}"


def body(tag: str, i: int) -> str:
    """A unique body: the simulator counts duplicates by content, so each must differ."""
    return f"bench {tag} message {i}: your code is {i % 1_000_000:06d}"


def seed_messages(
    conn: psycopg.Connection[Any], n: int, tag: str, *, sender: str, provider: str = "twilio"
) -> datetime:
    """Insert `n` pending messages in one transaction, NOTIFY the dispatcher; the commit time."""
    bodies = [body(tag, i) for i in range(n)]
    counted = [count_segments(b) for b in bodies]
    params = {
        "to_numbers": [recipient(i) for i in range(n)],
        "bodies": bodies,
        "segments": [c[0] for c in counted],
        "encodings": [c[1] for c in counted],
        "request_ids": [f"bench-{tag}-{i}" for i in range(n)],
        "from_number": sender,
        "provider": provider,
    }
    with conn.transaction():
        conn.execute(bq("bench_seed_messages"), params)
        # Statistics as a long-running queue would have them, before the commit starts the clock.
        conn.execute("ANALYZE sms_outbox, sms_messages, sms_conversations")
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    conn.execute(WAKEUP)
    assert row is not None
    committed: datetime = row[0]
    return committed


def clear_messages(conn: psycopg.Connection[Any]) -> None:
    """Forget every message (between runs), then VACUUM ANALYZE so each run starts alike."""
    conn.execute(bq("bench_clear_messages"))
    conn.execute("VACUUM ANALYZE")


def drain_state(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(bq("bench_drain_state")).fetchone()
    assert row is not None
    return dict(row)


def outbox_depth(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(bq("bench_outbox_depth")).fetchone()
    return int(row[0]) if row else 0
