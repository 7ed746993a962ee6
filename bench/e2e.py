"""End-to-end latency: from the API's 202 (as the client reads it) to the simulator's record of
the send request (its `created_at`, same machine clock), at a fixed arrival rate; and the same
split by stage (STAGES) with the database's times of each message's first attempt: when the
enqueue statement ran (sms_messages.created_at), when its row was claimed (the
'attempt_started' event's detail.claimed_at) and when the attempt started (its occurred_at)."""

from __future__ import annotations

import itertools
import time
from datetime import datetime
from typing import Any

import httpx
import psycopg

from bench import seed
from bench.dispatch import check_simulator
from bench.enqueue import send_at_rate
from bench.stack import Stack

# Stage -> seconds, per message. The last three add up to the end-to-end latency; the claim can
# come before the client has read its 202 (the wake-up is sent at the commit), so 202 -> claim may
# be negative.
STAGES = (
    "enqueue statement -> 202 read",
    "202 read -> claimed",
    "claimed -> attempt started",
    "attempt started -> request at simulator",
)


def run(
    stack: Stack,
    *,
    rate: float,
    seconds: float,
    tag: str,
    drain_timeout: float,
    stages: dict[str, list[float]] | None = None,
) -> tuple[list[float], float, list[str]]:
    """(latencies in seconds, achieved request rate, problems) of one open-loop run; with
    `stages`, each message's time in each of STAGES is appended to it."""
    with httpx.Client(base_url=stack.sim_url, timeout=60) as sim:
        sim.post("/_sim/reset").raise_for_status()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        seed.clear_messages(conn)
    outcome = send_at_rate(stack, rate=rate, seconds=seconds, tag=tag)
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
    at_sim = {
        m["body"]: datetime.fromisoformat(m["created_at"]).timestamp()
        for m in report["messages"]
        if m["body"] in bodies
    }
    latencies = [at - bodies[body] for body, at in at_sim.items()]
    if stages is not None:
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            _stages(conn, bodies, at_sim, stages)
    return latencies, len(outcome.replies) / outcome.seconds if outcome.seconds else 0.0, problems


def _stages(
    conn: psycopg.Connection[Any],
    replied: dict[str, float],
    at_sim: dict[str, float],
    out: dict[str, list[float]],
) -> None:
    """Each message's STAGES, from its first attempt's event (epoch seconds, one clock)."""
    rows = conn.execute(
        """
        SELECT m.body, extract(epoch FROM m.created_at)::float8,
               extract(epoch FROM (e.detail->>'claimed_at')::timestamptz)::float8,
               extract(epoch FROM e.occurred_at)::float8
        FROM sms_messages m
        JOIN sms_message_events e
          ON e.message_id = m.id AND e.event_type = 'attempt_started' AND e.attempt = 1
        WHERE m.body = ANY(%s) AND e.detail ? 'claimed_at'
        """,
        (list(at_sim),),
    ).fetchall()
    for body, created, claimed, started in rows:
        times = (created, replied[body], claimed, started, at_sim[body])
        for stage, (a, b) in zip(STAGES, itertools.pairwise(times), strict=True):
            out.setdefault(stage, []).append(b - a)
