"""Batch enqueue: messages/s through POST /sms/send/batch, beside the same multi-row insert made
from Python with no HTTP (shared.messages.enqueue_many: the same statement, messages_enqueue,
the same transaction, the same rows), both at the same number of concurrent clients.
`batch_ratio = api_rate / python_rate`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import psycopg
from psycopg import AsyncConnection

from bench import seed
from bench.enqueue import api_headers
from bench.loadgen import closed_loop
from bench.stack import SENDER, Stack
from bench.stats import latency_ms, ratio, spread
from shared import messages
from shared.messages import NewMessage


def batch_body(tag: str, i: int, size: int) -> bytes:
    """Request i: `size` messages, each a distinct recipient-and-body as /sms/send's bench sends."""
    first = i * size
    items = [
        {"to": seed.recipient(n), "body": seed.body(tag, n)} for n in range(first, first + size)
    ]
    return json.dumps({"messages": items}).encode()


def batch_rows(tag: str, i: int, size: int) -> list[NewMessage]:
    """The rows request i of batch_body writes (the API's defaults: sender, provider)."""
    first = i * size
    return [
        NewMessage(seed.recipient(n), SENDER, "twilio", seed.body(tag, n))
        for n in range(first, first + size)
    ]


def _check(url: str, expected: int, label: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        state = seed.drain_state(conn)
    if state["messages"] == state["outbox"] == expected:
        return []
    return [
        f"{label}: {expected} messages accepted but {state['messages']} messages and"
        f" {state['outbox']} outbox rows"
    ]


async def api_load(
    stack: Stack, *, clients: int, size: int, seconds: float, tag: str
) -> tuple[float, dict[str, float], list[str]]:
    """Closed-loop batches through the API: messages/s, per-batch latency, problems."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        seed.clear_messages(conn)
    outcome = await closed_loop(
        stack.api_url,
        "/sms/send/batch",
        api_headers(stack.api_key),
        lambda i: batch_body(tag, i, size),
        concurrency=clients,
        seconds=seconds,
    )
    problems = []
    other = {s: c for s, c in outcome.statuses.items() if s != 202}
    if other or outcome.errors:
        problems.append(f"batch api: non-202 replies {other}, errors {outcome.errors[:5]}")
    problems += _check(stack.database_url, outcome.statuses.get(202, 0) * size, "batch api")
    rate = len(outcome.ok) * size / outcome.seconds if outcome.seconds else 0.0
    return rate, latency_ms([r.done - r.sent for r in outcome.ok]), problems


async def python_load(
    url: str, *, clients: int, size: int, seconds: float, tag: str, warmup: float = 1.0
) -> tuple[float, list[str]]:
    """The same rows by enqueue_many on `clients` connections, back to back: messages/s."""
    with psycopg.connect(url, autocommit=True) as conn:
        seed.clear_messages(conn)
    counter = iter(range(10**9))
    start_at = time.perf_counter() + warmup
    end_at = start_at + seconds
    counted = 0
    written = 0

    async def client() -> None:
        nonlocal counted, written
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            while time.perf_counter() < end_at:
                rows = batch_rows(tag, next(counter), size)
                await messages.enqueue_many(conn, rows, api_key_id=None, request_id="bench")
                written += size
                if start_at <= time.perf_counter() <= end_at:
                    counted += size

    await asyncio.gather(*(client() for _ in range(clients)))
    return counted / seconds, _check(url, written, "batch python")


def run(stack: Stack, args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    """`args.runs` runs of each side; the API is started and stopped here."""
    size, clients, secs = args.batch_messages, args.batch_clients, args.enqueue_seconds
    stack.start_api()
    api_rates: list[float] = []
    p50: list[float] = []
    p99: list[float] = []
    py_rates: list[float] = []
    try:
        for r in range(args.runs):
            rate, lat, found = asyncio.run(
                api_load(stack, clients=clients, size=size, seconds=secs, tag=f"batch{r}")
            )
            problems += found
            api_rates.append(rate)
            p50.append(lat["p50_ms"])
            p99.append(lat["p99_ms"])
            py, found = asyncio.run(
                python_load(
                    stack.database_url, clients=clients, size=size, seconds=secs, tag=f"py{r}"
                )
            )
            problems += found
            py_rates.append(py)
            print(
                f"  run {r + 1}: API batch {rate:,.0f} msg/s (p50 {lat['p50_ms']} ms per batch),"
                f" Python multi-row {py:,.0f} msg/s",
                file=sys.stderr,
                flush=True,
            )
    finally:
        stack.stop("api")
    out: dict[str, Any] = {
        "batch_size": size,
        "clients": clients,
        "api": spread(api_rates),
        "api_batch_p50_ms": spread(p50, 2),
        "api_batch_p99_ms": spread(p99, 2),
        "python_multirow": spread(py_rates),
    }
    out["batch_ratio"] = ratio(out["api"]["median"], out["python_multirow"]["median"])
    return out
