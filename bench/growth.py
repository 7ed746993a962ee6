"""Growth: does the claim stay flat as history piles up? With 0, 1 M (and, with --growth-big,
5 M) finished messages already in the database (delivered, three events each, written by
generate_series SQL into the day partitions of sms_message_events), measure the dispatcher's real
claim statement (outbox_claim_due, 100 rows, each claim rolled back so every claim sees the same
queue) and the no-op drain rate, and show the sizes of the hot outbox next to the history. The
history is seeded once and grown (1 M, then 4 M more), never re-inserted.
`claim_growth_ratio = claim_p50_at_1M / claim_p50_at_0`.

Retention, in the same run (beside the 1 M history, all younger than the cutoff): one day of a
1 M/day history (--growth-retain messages, three events each) that ended 31 days ago is retained
away with --older-than 30d twice, once by deleting rows (messages_prune batches, their events
deleted with them: what prune did before 0010) and once by tooling.retention.prune (the day's
partition dropped, then the messages deleted). Each is timed, with the WAL it wrote and the
VACUUM that reclaims its dead rows.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bench import dispatch, seed
from bench.stack import SENDER, Stack
from bench.stats import latency_ms, ratio, spread
from dispatcher.outbox import claim_params
from shared.queries import q
from tooling import retention

CHUNK = 250_000  # history rows per statement (each its own transaction)
CLAIM_LIMIT = 100


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


RETAIN_DAYS_AGO = 31  # the retained day ended this many days ago (UTC); the cutoff is 30 days
# The day partitions a history needs (0010): from `seconds` before now to today, UTC days.
MAKE_DAYS = """
SELECT sms_message_events_make_partitions(
    ((now() - make_interval(secs => %(seconds)s::float8) - interval '1 hour')
     AT TIME ZONE 'UTC')::date,
    (now() AT TIME ZONE 'UTC')::date)
"""
# One UTC day (RETAIN_DAYS_AGO days ago) of a finished history, %(first)s..%(last)s of
# %(total)s messages spread over the day, shaped as bench_history_insert's (three events each).
RETAIN_INSERT = """
WITH thread AS (
    SELECT id, row_number() OVER (ORDER BY to_number) - 1 AS k
    FROM sms_conversations
    WHERE from_number = %(from_number)s
),
message AS (
    INSERT INTO sms_messages (conversation_id, from_number, to_number, body, provider,
                              provider_sid, delivery_status, segments, encoding, attempts,
                              request_id, created_at, updated_at, submitted_at, final_at)
    SELECT t.id, %(from_number)s, '+1415200' || lpad((g %% %(recipients)s)::text, 4, '0'),
           'retained message ' || g, 'twilio', 'RET' || g, 'delivered', 1, 'GSM-7', 1,
           'retained', x.at, x.at + interval '5 s', x.at, x.at + interval '5 s'
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
    CROSS JOIN LATERAL (
        SELECT (((now() AT TIME ZONE 'UTC')::date - %(days_ago)s)::timestamp AT TIME ZONE 'UTC')
               + make_interval(secs => g * 86000.0 / %(total)s) AS at
    ) AS x
    JOIN thread t ON t.k = g %% %(recipients)s
    RETURNING id, provider_sid, created_at
)
INSERT INTO sms_message_events (message_id, event_type, attempt, from_status, to_status,
                                provider, provider_sid, occurred_at)
SELECT m.id, e.event_type, e.attempt, e.from_status, e.to_status, 'twilio', m.provider_sid,
       m.created_at
FROM message m
CROSS JOIN (VALUES ('attempt_started', 1, NULL::text, NULL::text),
                   ('transition', NULL, 'pending', 'queued'),
                   ('transition', NULL, 'queued', 'delivered'))
           AS e(event_type, attempt, from_status, to_status)
"""


def insert_history(conn: psycopg.Connection[Any], have: int, total: int) -> float:
    """Grow the history from `have` to `total` finished messages (0: start from none); the
    seconds it took (VACUUM ANALYZE included)."""
    t0 = time.monotonic()
    if not have:
        seed.clear_messages(conn)
    if total > have:
        params = {"from_number": SENDER, "recipients": seed.RECIPIENTS, "total": total}
        conn.execute(MAKE_DAYS, {"seconds": total})
        conn.execute(seed.bq("bench_history_threads"), params)
        for first in range(have, total, CHUNK):
            last = min(first + CHUNK, total) - 1
            conn.execute(seed.bq("bench_history_insert"), {**params, "first": first, "last": last})
        conn.execute("VACUUM ANALYZE")
    return time.monotonic() - t0


def sizes(conn: psycopg.Connection[Any]) -> dict[str, int]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(seed.bq("bench_table_sizes")).fetchone()
    assert row is not None
    return {k: int(v or 0) for k, v in row.items()}


def wal_lsn(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def retain_once(
    conn: psycopg.Connection[Any], url: str, total: int, how: str, problems: list[str]
) -> dict[str, Any]:
    """Seed the retained day, then retain it away `how` ("delete" or "drop"): seconds, WAL and
    the VACUUM after."""
    params = {
        "from_number": SENDER,
        "recipients": seed.RECIPIENTS,
        "total": total,
        "days_ago": RETAIN_DAYS_AGO,
    }
    conn.execute(
        "SELECT sms_message_events_make_partitions(d, d)"
        " FROM (SELECT (now() AT TIME ZONE 'UTC')::date - %(days_ago)s AS d) AS t",
        params,
    )
    t0 = time.monotonic()
    for first in range(0, total, CHUNK):
        conn.execute(
            RETAIN_INSERT, {**params, "first": first, "last": min(first + CHUNK, total) - 1}
        )
    conn.execute("VACUUM ANALYZE")
    say(f"  retention ({how}): seeded {total:,} messages in {time.monotonic() - t0:.0f} s")
    older_than = timedelta(days=RETAIN_DAYS_AGO - 1)
    wal0 = wal_lsn(conn)
    t0 = time.monotonic()
    if how == "delete":
        removed = 0
        while True:
            with conn.transaction():
                cur = conn.execute(
                    q("messages_prune"),
                    {"older_than": older_than, "batch": retention.DEFAULT_BATCH},
                )
                n = len(cur.fetchall())
            removed += n
            if n < retention.DEFAULT_BATCH:
                break
        dropped, days_seconds = 0, 0.0
    else:
        pruned = asyncio.run(_prune(url, older_than))
        removed, dropped, days_seconds = pruned.messages, pruned.days_dropped, pruned.days_seconds
    seconds = time.monotonic() - t0
    wal = wal_lsn(conn) - wal0
    t0 = time.monotonic()
    conn.execute("VACUUM sms_messages, sms_message_events")
    vacuum = time.monotonic() - t0
    if removed != total:
        problems.append(f"growth retention ({how}): removed {removed} of {total} messages")
    say(
        f"  retention ({how}): {seconds:.1f} s, WAL {wal / 2**20:,.0f} MB, vacuum after"
        f" {vacuum:.1f} s, {dropped} day(s) dropped in {days_seconds:.1f} s"
    )
    return {
        "seconds": round(seconds, 1),
        "wal_mb": round(wal / 2**20, 1),
        "vacuum_seconds": round(vacuum, 1),
        "days_dropped": dropped,
        "days_seconds": round(days_seconds, 2),
        "messages_removed": removed,
    }


async def _prune(url: str, older_than: timedelta) -> retention.Pruned:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await retention.prune(conn, older_than)


def retain(stack: Stack, args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    """The time to retain one day of a 1 M/day history, DELETE vs partition drop, same run."""
    out: dict[str, Any] = {"messages_per_day": args.growth_retain, "older_than_days": 30}
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        for how in ("delete", "drop"):
            out[how] = retain_once(conn, stack.database_url, args.growth_retain, how, problems)
    out["drop_vs_delete_ratio"] = ratio(out["drop"]["seconds"], out["delete"]["seconds"])
    return out


def forget_open(conn: psycopg.Connection[Any]) -> None:
    """Remove this measurement's own messages; keep the history; vacuum the hot table."""
    conn.execute(seed.bq("bench_forget_open"))
    conn.execute("VACUUM ANALYZE sms_outbox, sms_messages, sms_message_events")


def claim_latencies(
    conn: psycopg.Connection[Any], *, queued: int, claims: int, tag: str, burst: int
) -> tuple[list[float], list[str]]:
    """`claims` single claims of CLAIM_LIMIT rows from a queue of `queued` due messages, each
    timed (statement and fetch) and rolled back; the seconds of each. The queue's sender is
    registered at seed.UNPACED_MPS and `burst` (the claim takes only senders' rows), so the pace
    never holds a row back."""
    seed.seed_messages(conn, queued, tag, sender=SENDER, burst=burst)
    params = claim_params("bench:growth", CLAIM_LIMIT, 60.0)
    query = q("outbox_claim_due")
    times: list[float] = []
    short = 0
    for _ in range(claims):
        with conn.transaction(force_rollback=True), conn.cursor() as cur:
            t0 = time.perf_counter()
            cur.execute(query, params)
            rows = cur.fetchall()
            times.append(time.perf_counter() - t0)
        short += len(rows) != CLAIM_LIMIT
    forget_open(conn)
    problems = [f"growth {tag}: {short} claims got fewer than {CLAIM_LIMIT} rows"] if short else []
    return times, problems


def measure(
    stack: Stack, args: argparse.Namespace, have: int, history: int, problems: list[str]
) -> dict[str, Any]:
    """Grow the history from `have` to `history`, then `args.runs` x (claim latencies, one no-op
    drain)."""
    url = stack.database_url
    label = f"{history // 1_000_000} M" if history else "0"
    with psycopg.connect(url, autocommit=True) as conn:
        say(f"  history {label}: inserting {history - have:,} finished messages")
        inserted = insert_history(conn, have, history)
        say(f"  history {label}: inserted in {inserted:.0f} s")
        p50: list[float] = []
        p99: list[float] = []
        drains: list[float] = []
        most_outbox = 0
        for r in range(args.runs):
            times, found = claim_latencies(
                conn,
                queued=args.growth_queue,
                claims=args.growth_claims,
                tag=f"g{history}c{r}",
                burst=stack.sender_burst,
            )
            problems += found
            lat = latency_ms(times)
            p50.append(lat["p50_ms"])
            p99.append(lat["p99_ms"])
            d = asyncio.run(
                dispatch.drain_noop(
                    stack,
                    args.messages,
                    f"g{history}d{r}",
                    limit_seconds=args.timeout,
                    history=history,
                )
            )
            problems += [f"growth {label}: {p}" for p in d.problems]
            drains.append(d.rate)
            most_outbox = max(most_outbox, sizes(conn)["outbox_rows"])
            forget_open(conn)
            say(
                f"  history {label} run {r + 1}: claim p50 {lat['p50_ms']} ms"
                f" p99 {lat['p99_ms']} ms (median of {len(times)}), drain {d.rate:,.0f}/s"
            )
        after = sizes(conn)
    if after["outbox_rows"] or most_outbox:
        problems.append(f"growth {label}: {most_outbox} outbox rows left after a drain")
    return {
        "history_messages": history,
        "insert_seconds": round(inserted, 1),
        "claim_p50_ms": spread(p50, 3),
        "claim_p99_ms": spread(p99, 3),
        "drain": spread(drains),
        "sizes_after": after,
    }


def run(stack: Stack, args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    """The growth figures; the 5 M point only with --growth-big (explicit null otherwise)."""
    points = [0, 1_000_000] + ([5_000_000] if args.growth_big else [])
    out: dict[str, Any] = {
        "claims_per_run": args.growth_claims,
        "claim_limit": CLAIM_LIMIT,
        "queue_depth": args.growth_queue,
        "drain_messages": args.messages,
    }
    have = 0
    for history in points:
        out[f"history_{history // 1_000_000}m"] = measure(stack, args, have, history, problems)
        have = history
        if history == 1_000_000 and args.growth_retain:
            say(f"  retention: one day of {args.growth_retain:,} messages, older than 30 days")
            out["retention"] = retain(stack, args, problems)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        seed.clear_messages(conn)  # later groups start from an empty history
    base = out["history_0m"]
    one = out["history_1m"]
    out["claim_growth_ratio"] = ratio(one["claim_p50_ms"]["median"], base["claim_p50_ms"]["median"])
    out["drain_growth_ratio"] = ratio(one["drain"]["median"], base["drain"]["median"])
    if args.growth_big:
        big = out["history_5m"]
        out["claim_growth_ratio_5m"] = ratio(
            big["claim_p50_ms"]["median"], base["claim_p50_ms"]["median"]
        )
    else:
        out["history_5m"] = None
        out["claim_growth_ratio_5m"] = None
        out["not_measured_5m"] = "5 M history only with --growth-big (it takes minutes to insert)"
    return out
