"""Pre-enqueued work for the drains: N messages exactly as shared.messages.enqueue writes them,
inserted with one multi-row statement so the drain's clock starts at a single commit, and the
senders they are sent from, at the pace a measurement wants."""

from __future__ import annotations

from collections.abc import Sequence
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
# A pace no drain here comes near (the CHECK's maximum): SENDER_DEFAULT_MPS of every process the
# bench starts (bench.stack), and the pace of the senders the bench registers itself, with the
# burst the API would give it (max(1, ceil(mps))).
UNPACED_MPS = 10_000.0
UNPACED_BURST = 10_000
# A body of two GSM-7 segments (161-306 characters), for runs that mix message sizes.
LONG_TAIL = " " + "x" * 170


@cache
def _queries() -> dict[str, str]:
    return parse(SQL_FILE.read_text())


def bq(name: str) -> str:
    """The SQL of one named bench query (bench/sql/bench.sql)."""
    return _queries()[name]


def recipient(i: int) -> str:
    """A valid US mobile-or-landline number that the simulator accepts (no test-number prefix)."""
    return f"+1415200{i % RECIPIENTS:04d}"


def body(tag: str, i: int, long_every: int = 0) -> str:
    """A unique body: the simulator counts duplicates by content, so each must differ. Every
    `long_every`-th (0: none) has two segments."""
    text = f"bench {tag} message {i}: your code is {i % 1_000_000:06d}"
    return text + LONG_TAIL if long_every and i % long_every == long_every - 1 else text


def set_pace(
    conn: psycopg.Connection[Any],
    numbers: Sequence[str],
    *,
    mps: float = UNPACED_MPS,
    burst: int = UNPACED_BURST,
    provider: str = "twilio",
) -> None:
    """Make `numbers` senders at this pace, with a full burst (pace clock reset)."""
    params = {"numbers": list(numbers), "mps": mps, "burst": burst, "provider": provider}
    conn.execute(bq("bench_senders_pace"), params)


def seed_messages(
    conn: psycopg.Connection[Any],
    n: int,
    tag: str,
    *,
    sender: str | Sequence[str],
    provider: str = "twilio",
    priority: str = "normal",
    long_every: int = 0,
    burst: int | None = UNPACED_BURST,
) -> datetime:
    """Insert `n` pending messages in one transaction, NOTIFY the dispatcher; the commit time.

    `sender` is one number or several (message i from sender[i % len]); with a `burst` they are
    (re)registered at UNPACED_MPS and that burst first, with None they must already be senders at
    the pace wanted. Every `long_every`-th message (0: none) has two segments.
    """
    senders = [sender] if isinstance(sender, str) else list(sender)
    bodies = [body(tag, i, long_every) for i in range(n)]
    counted = [count_segments(b) for b in bodies]
    params = {
        "from_numbers": [senders[i % len(senders)] for i in range(n)],
        "to_numbers": [recipient(i) for i in range(n)],
        "bodies": bodies,
        "segments": [c[0] for c in counted],
        "encodings": [c[1] for c in counted],
        "request_ids": [f"bench-{tag}-{i}" for i in range(n)],
        "priorities": [priority] * n,
        "provider": provider,
    }
    with conn.transaction():
        if burst is not None:
            set_pace(conn, senders, burst=burst, provider=provider)
        conn.execute(bq("bench_seed_messages"), params)
        # Statistics as a long-running queue would have them, before the commit starts the clock.
        conn.execute("ANALYZE sms_outbox, sms_messages, sms_conversations, sms_senders")
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    conn.execute(WAKEUP)
    assert row is not None
    committed: datetime = row[0]
    return committed


def clear_messages(conn: psycopg.Connection[Any], tries: int = 3) -> None:
    """Forget every message (between runs), then VACUUM ANALYZE so each run starts alike. The
    TRUNCATE locks its tables one after the other, so a late status callback of the previous run
    (through the API, which writes the message and then its event) can deadlock with it: then it
    runs again (a 258/s run of the webhooks group lost its TRUNCATE that way on 2026-12-05)."""
    for attempt in range(1, tries + 1):
        try:
            conn.execute(bq("bench_clear_messages"))
            break
        except psycopg.errors.DeadlockDetected:
            if attempt == tries:
                raise
    conn.execute("VACUUM ANALYZE")


def drain_state(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(bq("bench_drain_state")).fetchone()
    assert row is not None
    return dict(row)


def outbox_depth(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(bq("bench_outbox_depth")).fetchone()
    return int(row[0]) if row else 0
