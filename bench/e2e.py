"""End-to-end latency: from the API's 202 (as the client reads it) to the simulator's record of
the send request (its `created_at`, same machine clock), at a fixed arrival rate."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import httpx
import psycopg

from bench import seed
from bench.dispatch import check_simulator
from bench.enqueue import api_headers, send_body
from bench.loadgen import open_loop
from bench.stack import Stack


def run(
    stack: Stack, *, rate: float, seconds: float, tag: str, drain_timeout: float
) -> tuple[list[float], float, list[str]]:
    """(latencies in seconds, achieved request rate, problems) of one open-loop run."""
    with httpx.Client(base_url=stack.sim_url, timeout=60) as sim:
        sim.post("/_sim/reset").raise_for_status()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        seed.clear_messages(conn)
    outcome = asyncio.run(
        open_loop(
            stack.api_url,
            "/sms/send",
            api_headers(stack.api_key),
            lambda i: send_body(tag, i),
            rate=rate,
            seconds=seconds,
        )
    )
    problems = []
    other = {s: c for s, c in outcome.statuses.items() if s != 202}
    if other or outcome.errors:
        problems.append(f"e2e: non-202 replies {other}, errors {outcome.errors[:5]}")
    deadline = time.monotonic() + drain_timeout
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        while seed.outbox_depth(conn) and time.monotonic() < deadline:
            time.sleep(0.05)
        state = seed.drain_state(conn)
    with httpx.Client(base_url=stack.sim_url, timeout=60) as sim:
        report: dict[str, Any] = sim.get("/_sim/messages").json()
    accepted = outcome.ok
    if state["outbox"] or state["pending"]:
        problems.append(f"e2e: {state['outbox']} outbox rows, {state['pending']} pending left")
    bodies = {seed.body(tag, r.index): r.wall for r in accepted}
    problems += check_simulator(report, set(bodies), "e2e")
    latencies = [
        datetime.fromisoformat(m["created_at"]).timestamp() - bodies[m["body"]]
        for m in report["messages"]
        if m["body"] in bodies
    ]
    return latencies, len(outcome.replies) / outcome.seconds if outcome.seconds else 0.0, problems
