"""Limits: what per-key limits cost the send path (issue 13). The enqueue figure's load (closed-loop
POST /sms/send at concurrency 16, recipients spread over bench.seed's 10,000) by the stack's key,
which has no limits, and by a key with all three set too high to refuse anything, so that each
request still does all the limits' work: now and then a per-minute and a per-day reservation
(sms_api_key_usage), and on every request the recipient locks and the count of the key's trailing
hour. The two keys take turns (which goes first alternates by run) through one API process.
`limits_ratio` (issue 13's goal: >= 0.9) is the median over runs of the limited turn's rate
divided by the unlimited turn's of the same run: the two turns of a run are seconds apart, while
this machine's rates drift by a third over a minute, which moves the plain ratio of the two
medians (`medians_ratio`, reported beside it) more than the limits do.

Unlike the enqueue figure, the turns run over a history (HISTORY delivered messages, older than
the hour, analyzed) and each turn removes only its own messages: on the emptied, freshly analyzed
tables the enqueue figure starts from, the planner takes sms_messages for empty and the count
becomes a scan of the whole table, which a database with history (or one autovacuum has analyzed
since it filled up) never does.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from typing import Any

import psycopg

from bench import growth, seed
from bench.enqueue import Load, api_headers, send_body
from bench.loadgen import closed_loop
from bench.stack import Stack
from bench.stats import latency_ms, ratio, spread
from shared import apikeys
from shared.apikeys import KeyLimits

CONCURRENCY = 16
HISTORY = 100_000  # delivered messages, 10 to each recipient
# Far above what the bench sends (a few thousand messages a turn, a handful to each recipient).
LIMITS = KeyLimits(
    rate_per_minute=10_000_000, daily_message_limit=2_000_000_000, recipient_hourly_limit=1_000_000
)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def turn(stack: Stack, key: str, *, seconds: float, tag: str) -> Load:
    """One turn of closed-loop POST /sms/send with `key`: every 202 must have left one pending
    message and its outbox row (no dispatcher runs); they are removed afterwards."""
    outcome = await closed_loop(
        stack.api_url,
        "/sms/send",
        api_headers(key),
        lambda i: send_body(tag, i),
        concurrency=CONCURRENCY,
        seconds=seconds,
    )
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        state = seed.drain_state(conn)
        growth.forget_open(conn)
    accepted = outcome.statuses.get(202, 0)
    problems = []
    other = {s: c for s, c in outcome.statuses.items() if s != 202}
    if other or outcome.errors:
        problems.append(f"{tag}: non-202 replies {other}, errors {outcome.errors[:5]}")
    if state["pending"] != accepted or state["outbox"] != accepted:
        problems.append(
            f"{tag}: {accepted} accepted but {state['pending']} pending messages and"
            f" {state['outbox']} outbox rows"
        )
    return Load(outcome.rate(), latency_ms([r.done - r.sent for r in outcome.ok]), problems)


def run(stack: Stack, args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    """args.runs turns of args.enqueue_seconds each per key."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        _, limited_key = apikeys.create_key_sync(conn, "bench-limits", limits=LIMITS)
        history_seconds = growth.insert_history(conn, 0, HISTORY)
    say(f"  {HISTORY:,} messages of history written in {history_seconds:.0f} s")
    keys = {"unlimited": stack.api_key, "limited": limited_key}
    loads: dict[str, list[Load]] = {name: [] for name in keys}
    stack.start_api()
    for r in range(args.runs):
        for name in list(keys) if r % 2 == 0 else list(reversed(keys)):
            load = asyncio.run(
                turn(stack, keys[name], seconds=args.enqueue_seconds, tag=f"limits {name} {r}")
            )
            problems += load.problems
            loads[name].append(load)
            say(f"  run {r + 1}: {name} key {load.rate:,.0f}/s p99 {load.latency['p99_ms']} ms")
    stack.stop("api")
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        seed.clear_messages(conn)
    out: dict[str, Any] = {
        "concurrency": CONCURRENCY,
        "history": HISTORY,
        "limits": dataclasses.asdict(LIMITS),
    }
    for name, runs in loads.items():
        s = spread([x.rate for x in runs])
        s["p50_ms"] = spread([x.latency["p50_ms"] for x in runs], 2)
        s["p99_ms"] = spread([x.latency["p99_ms"] for x in runs], 2)
        out[name] = s
    pairs = zip(loads["limited"], loads["unlimited"], strict=True)
    out["pair_ratios"] = spread([on.rate / off.rate for on, off in pairs if off.rate], 3)
    out["limits_ratio"] = out["pair_ratios"]["median"]
    out["medians_ratio"] = ratio(out["limited"]["median"], out["unlimited"]["median"])
    return out
