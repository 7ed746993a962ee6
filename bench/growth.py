"""Growth: does the claim stay flat as history piles up? With 0, 1 M (and, with --growth-big,
5 M) finished messages already in the database (delivered, four events each, written by
generate_series SQL), measure the dispatcher's real claim statement (outbox_claim_due, 100 rows,
each claim rolled back so every claim sees the same queue) and the no-op drain rate, and show the
sizes of the hot outbox next to the history.
`claim_growth_ratio = claim_p50_at_1M / claim_p50_at_0`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bench import dispatch, seed
from bench.stack import SENDER, Stack
from bench.stats import latency_ms, ratio, spread
from shared.queries import q

CHUNK = 250_000  # history rows per statement (each its own transaction)
CLAIM_LIMIT = 100


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def insert_history(conn: psycopg.Connection[Any], total: int) -> float:
    """`total` finished messages and their events; the seconds it took (VACUUM ANALYZE included)."""
    t0 = time.monotonic()
    seed.clear_messages(conn)
    if total:
        params = {"from_number": SENDER, "recipients": seed.RECIPIENTS, "total": total}
        conn.execute(seed.bq("bench_history_threads"), params)
        for first in range(0, total, CHUNK):
            last = min(first + CHUNK, total) - 1
            conn.execute(seed.bq("bench_history_insert"), {**params, "first": first, "last": last})
        conn.execute("VACUUM ANALYZE")
    return time.monotonic() - t0


def sizes(conn: psycopg.Connection[Any]) -> dict[str, int]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(seed.bq("bench_table_sizes")).fetchone()
    assert row is not None
    return {k: int(v) for k, v in row.items()}


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
    params = {"now": None, "owner": "bench:growth", "limit": CLAIM_LIMIT, "lease_seconds": 60.0}
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
    stack: Stack, args: argparse.Namespace, history: int, problems: list[str]
) -> dict[str, Any]:
    """Insert `history`, then `args.runs` x (claim latencies, one no-op drain)."""
    url = stack.database_url
    label = f"{history // 1_000_000} M" if history else "0"
    with psycopg.connect(url, autocommit=True) as conn:
        say(f"  history {label}: inserting {history:,} finished messages")
        inserted = insert_history(conn, history)
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
    for history in points:
        out[f"history_{history // 1_000_000}m"] = measure(stack, args, history, problems)
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
