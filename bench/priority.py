"""Priority: one sender at 10 segments/s with 10,000 `low` messages queued through the API, then
single `high` messages through POST /sms/send while the backlog drains at its pace; each one's
time from its 202 (as the client read it) to the simulator's record of it (`created_at`; same
machine clock). Issue 12's goal: within 1 s, however deep the low backlog."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import Any

import httpx
import psycopg

from bench import seed
from bench.enqueue import api_headers
from bench.stack import SENDER, Stack
from bench.stats import latency_ms

MPS = 10.0
BURST = 10
BATCH = 1000  # items per POST /sms/send/batch (the API's maximum)
SETTLE_SECONDS = 3.0  # the burst is spent and the backlog drains at its pace before the first high
GAP_SECONDS = 1.5  # between two high messages
DUE_LOW = """SELECT count(*) FROM sms_outbox
WHERE sender = %s AND priority = 2 AND state = 'ready' AND next_attempt_at <= now()"""
PENDING = (
    "SELECT count(*) FROM sms_messages WHERE id = ANY(%s::uuid[]) AND delivery_status = 'pending'"
)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _enqueue_low(api: httpx.Client, count: int) -> list[str]:
    """`count` low-priority messages through the batch endpoint; problems."""
    problems = []
    for first in range(0, count, BATCH):
        items = [
            {"to": seed.recipient(i), "body": seed.body("low", i), "priority": "low"}
            for i in range(first, min(first + BATCH, count))
        ]
        reply = api.post("/sms/send/batch", json={"messages": items})
        if reply.status_code != 202:
            problems.append(f"priority: batch of low messages answered {reply.status_code}")
    return problems


def run(stack: Stack, args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    """args.priority_samples high messages behind args.priority_backlog low ones."""
    headers = api_headers(stack.api_key)
    stack.start_api()
    sent: list[tuple[str, str, float, int]] = []  # (id, body, 202 wall time, low due then)
    with (
        httpx.Client(base_url=stack.sim_url, timeout=60) as sim,
        httpx.Client(base_url=stack.api_url, headers=headers, timeout=60) as api,
        psycopg.connect(stack.database_url, autocommit=True) as conn,
    ):
        sim.post("/_sim/reset").raise_for_status()
        rule = {SENDER: {"mps": MPS, "burst": BURST}}
        sim.post("/_sim/config", json={"enforce_mps": rule}).raise_for_status()
        seed.clear_messages(conn)
        seed.set_pace(conn, [SENDER], mps=MPS, burst=BURST)
        problems += _enqueue_low(api, args.priority_backlog)
        names = stack.start_dispatchers(args.pace_dispatchers)
        try:
            time.sleep(SETTLE_SECONDS)
            for k in range(args.priority_samples):
                row = conn.execute(DUE_LOW, (SENDER,)).fetchone()
                body = f"bench priority high {k}: your code is {k:06d}"
                payload = {"to": seed.recipient(k), "body": body, "priority": "high"}
                reply = api.post("/sms/send", json=payload)
                at = time.time()
                if reply.status_code != 202:
                    problems.append(f"priority: high message answered {reply.status_code}")
                    continue
                sent.append((reply.json()["id"], body, at, int(row[0]) if row else -1))
                time.sleep(GAP_SECONDS)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                row = conn.execute(PENDING, ([s[0] for s in sent],)).fetchone()
                if row is not None and row[0] == 0:
                    break
                time.sleep(0.1)
        finally:
            for name in names:
                stack.stop(name)
        messages = sim.get("/_sim/messages").json()["messages"]
        pace = sim.get("/_sim/sends", params={"from": SENDER}).json()
        seed.clear_messages(conn)
        seed.set_pace(conn, [SENDER], burst=stack.sender_burst)  # unpaced again for what is next
    stack.stop("api")
    arrived = {m["body"]: datetime.fromisoformat(m["created_at"]).timestamp() for m in messages}
    latencies = []
    for _, body, at, _ in sent:
        if body in arrived:
            latencies.append(arrived[body] - at)
        else:
            problems.append("priority: a high message never reached the simulator")
    low_sent = sum(1 for m in messages if m["body"].startswith("bench low "))
    out: dict[str, Any] = {
        "mps": MPS,
        "burst": BURST,
        "low_backlog": args.priority_backlog,
        "samples": len(latencies),
        "low_due_when_sent": [s[3] for s in sent],
        "low_sent_meanwhile": low_sent,
        "max_window_segments": pace["max_window_segments"],
        "refused_429": pace["refused"],
        **latency_ms(latencies),
        "runs_ms": [round(x * 1000, 1) for x in latencies],
    }
    say(
        f"  high behind {min(out['low_due_when_sent'], default=0):,}+ low: p50 {out['p50_ms']} ms,"
        f" max {out['max_ms']} ms; {out['refused_429']} x 429"
    )
    return out
