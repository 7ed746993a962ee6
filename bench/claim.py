"""Claim cost: what pacing adds to one claim. 1,000 senders with 100 due sends each (100,000
rows, one commit), every sender with ample allowance (mps 10000, burst 10000: pacing never holds a
row back). Timed, alternately on the same rows: the dispatcher's real claim (outbox_claim_due,
which locks and advances the senders it takes from) and "no pacing", the claim as it was before
issue 12 (bench_claim_unpaced: the first 100 due rows by next_attempt_at, FOR UPDATE SKIP LOCKED,
leased in the same statement, no sender read or written) with the index on next_attempt_at it
scanned, created here for it. Each claim takes 100 rows and commits (autocommit: statement, fetch
and commit are timed). `claim_pace_ratio = paced_p50 / unpaced_p50`. One EXPLAIN ANALYZE of each
(rolled back) says where the time goes. Then the paced claims again with 10,000 more senders
registered that have nothing queued: `claim_idle_ratio = idle_p50 / paced_p50` (goal <= 1.2: a
claim visits only senders with work in the outbox).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import psycopg

from bench import seed
from bench.stack import Stack
from bench.stats import latency_ms, ratio
from dispatcher.outbox import claim_params
from shared.queries import q

LIMIT = 100
WARMUP = 5  # claims of each kind before the timed ones (caches, plans)
TOP_NODES = 6  # plan nodes reported, by time spent in the node itself
IDLE_SENDERS = 10_000  # registered numbers with nothing queued, for claim_idle_ratio


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def numbers(count: int) -> list[str]:
    return [f"+1332555{k:04d}" for k in range(count)]


def _params(owner: str, after: str = "") -> dict[str, Any]:
    return claim_params(owner, LIMIT, 60.0, after=after)


class Walk:
    """Where the next paced claim starts, as the dispatcher keeps it (Outbox.walk_from)."""

    after = ""


def _claim(
    conn: psycopg.Connection[Any], query: str, owner: str, walk: Walk | None = None
) -> tuple[float, int]:
    """One committed claim: (seconds, rows). With `walk`, the claim starts where the last one
    stopped and moves it on (the paced claim's round robin over senders)."""
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(query, _params(owner, walk.after if walk else ""))
        rows = cur.fetchall()
        names = [c.name for c in cur.description or []]
        if walk is not None and rows and "walk_end" in names:
            walk.after = rows[0][names.index("walk_end")]
    return time.perf_counter() - t0, len(rows)


def _loops(plan: dict[str, Any]) -> int:
    return int(plan.get("Actual Loops", 1) or 1)


def _nodes(
    plan: dict[str, Any],
    out: list[dict[str, Any]],
    ctes: list[dict[str, Any]],
    within: str = "main",
) -> float:
    """Walk a JSON plan: each node with the time spent in it alone (its total minus its
    children's, over all loops) and the CTE it belongs to, and each CTE with the time at which
    it was done; the node's total. A CTE Scan's time includes the CTE it runs, so CTE Scans are
    left out of `out`."""
    total = float(plan.get("Actual Total Time", 0.0)) * _loops(plan)
    name = str(plan.get("Subplan Name", ""))
    if name.startswith("CTE "):
        within = name[4:]
        ctes.append({"cte": within, "done_at_ms": round(total, 3), "rows": plan["Actual Rows"]})
    children = sum(_nodes(child, out, ctes, within) for child in plan.get("Plans", []))
    if plan["Node Type"] != "CTE Scan":
        what = plan["Node Type"]
        if "Join Type" in plan and plan["Join Type"] != "Inner":
            what += f" ({plan['Join Type']})"
        for key in ("Relation Name", "Index Name"):
            if key in plan:
                what += f" {plan[key]}"
        out.append(
            {
                "node": what,
                "cte": within,
                "self_ms": round(max(total - children, 0.0), 3),
                "rows": int(plan.get("Actual Rows", 0) * _loops(plan)),
                "loops": _loops(plan),
            }
        )
    return total


def explain(conn: psycopg.Connection[Any], query: str, owner: str) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of one claim, rolled back: total, when each CTE was done, the
    costliest nodes by their own time, and the plan as text."""
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, _params(owner))
        row = cur.fetchone()
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + query, _params(owner))
        text = [str(r[0]) for r in cur.fetchall()]
    assert row is not None
    doc = row[0] if isinstance(row[0], list) else json.loads(row[0])
    top = doc[0]
    nodes: list[dict[str, Any]] = []
    ctes: list[dict[str, Any]] = []
    _nodes(top["Plan"], nodes, ctes)
    nodes.sort(key=lambda n: n["self_ms"], reverse=True)
    return {
        "execution_ms": round(float(top["Execution Time"]), 3),
        "planning_ms": round(float(top["Planning Time"]), 3),
        "ctes": ctes,
        "top_nodes": nodes[:TOP_NODES],
        "plan": text,
    }


def run(stack: Stack, args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    """args.claim_runs claims of each kind, alternating, on args.claim_rows due rows."""
    senders = numbers(args.claim_senders)
    rows = args.claim_rows
    paced_q, unpaced_q = q("outbox_claim_due"), seed.bq("bench_claim_unpaced")
    paced: list[float] = []
    unpaced: list[float] = []
    idle_paced: list[float] = []
    walk = Walk()
    short = 0
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        seed.clear_messages(conn)
        say(f"  seeding {rows:,} due sends over {len(senders):,} senders")
        seed.seed_messages(conn, rows, "claim", sender=senders, burst=stack.sender_burst)
        conn.execute(seed.bq("bench_unpaced_index"))
        conn.execute("VACUUM ANALYZE sms_outbox, sms_senders, sms_messages")
        try:
            for i in range(WARMUP + args.claim_runs):
                for query, owner, times, w in (
                    (paced_q, "bench:paced", paced, walk),
                    (unpaced_q, "bench:unpaced", unpaced, None),
                ):
                    seconds, got = _claim(conn, query, owner, w)
                    short += got != LIMIT
                    if i >= WARMUP:
                        times.append(seconds)
            # The same paced claims with IDLE_SENDERS more numbers registered that have nothing
            # queued (a ghost number per user): the walk must not visit them.
            conn.execute(seed.bq("bench_idle_senders"), {"count": IDLE_SENDERS})
            conn.execute("VACUUM ANALYZE sms_senders")
            for i in range(WARMUP + args.claim_runs):
                seconds, got = _claim(conn, paced_q, "bench:paced", walk)
                short += got != LIMIT
                if i >= WARMUP:
                    idle_paced.append(seconds)
            plans = {
                "paced": explain(conn, paced_q, "bench:explain"),
                "unpaced": explain(conn, unpaced_q, "bench:explain"),
            }
            state = conn.execute(seed.bq("bench_claim_state")).fetchone()
        finally:
            conn.execute(seed.bq("bench_unpaced_index_drop"))
            seed.clear_messages(conn)
            # Its 1,000 senders go too: the claim's walk visits every sender whose pace allows a
            # send, due work or not, so idle ones left here slowed every later group's drains.
            conn.execute("DELETE FROM sms_senders WHERE phone_number = ANY(%s)", (senders,))
            conn.execute(seed.bq("bench_idle_senders_drop"))
    if short:
        problems.append(f"claim cost: {short} claims got fewer than {LIMIT} rows")
    p, u, idle = latency_ms(paced), latency_ms(unpaced), latency_ms(idle_paced)
    out: dict[str, Any] = {
        "senders": len(senders),
        "due_rows": rows,
        "claim_limit": LIMIT,
        "claims_each": args.claim_runs,
        "sender_mps": seed.UNPACED_MPS,
        "sender_burst": stack.sender_burst,
        "paced_ms": p,
        "unpaced_ms": u,
        "claim_pace_ratio": ratio(p["p50_ms"], u["p50_ms"]),
        "idle_senders": IDLE_SENDERS,
        "idle_paced_ms": idle,
        "claim_idle_ratio": ratio(idle["p50_ms"], p["p50_ms"]),
        "leased_after": int(state[0]) if state else None,
        "due_after": int(state[1]) if state else None,
        "explain": plans,
        "no_pacing": (
            "the pre-pacing claim (commit d902328's outbox_claim_due, bench_claim_unpaced in"
            " bench/sql/bench.sql) with an index on sms_outbox (next_attempt_at) created for it:"
            " the first 100 due rows in next_attempt_at order, FOR UPDATE SKIP LOCKED, leased in"
            " the same statement; no sender row read, locked or updated"
        ),
    }
    say(
        f"  claim of {LIMIT}: paced p50 {p['p50_ms']} ms, unpaced p50 {u['p50_ms']} ms,"
        f" ratio {out['claim_pace_ratio']}; with {IDLE_SENDERS:,} idle senders more:"
        f" p50 {idle['p50_ms']} ms, ratio {out['claim_idle_ratio']}"
    )
    return out
