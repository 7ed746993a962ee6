"""Dispatch throughput: drain N pre-enqueued messages and check each was sent exactly once.

The clock starts at the commit of the seed (database clock) and stops at the last message's
`submitted_at` (database clock, set when the dispatcher records the provider's acceptance), so
neither start-up nor polling granularity is counted.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families
from psycopg import AsyncConnection
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from bench import seed
from bench.noop import NoopProvider
from bench.stack import SENDER, Stack
from dispatcher.__main__ import open_sms_pool
from dispatcher.runner import Runner
from dispatcher.service import Dispatcher
from dispatcher.wakeup import Wakeup
from shared.config import load_settings
from shared.db import conninfo_with_app

POLL = 0.05


@dataclass
class Drain:
    """One drain: its rate and whatever was wrong with it; `call_ms`, the mean provider call the
    dispatcher measured meanwhile (when its /metrics was read)."""

    rate: float
    seconds: float
    problems: list[str] = field(default_factory=list)
    call_ms: float | None = None


def sent_calls(metrics_text: str) -> tuple[float, int]:
    """(seconds, calls) of the provider calls that were accepted, summed over providers, from a
    dispatcher's /metrics (sms_send_duration_seconds{outcome="sent"}: SDK, HTTP and provider)."""
    seconds, calls = 0.0, 0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "sms_send_duration_seconds":
            continue
        for sample in family.samples:
            if sample.labels.get("outcome") != "sent":
                continue
            if sample.name.endswith("_sum"):
                seconds += sample.value
            elif sample.name.endswith("_count"):
                calls += int(sample.value)
    return seconds, calls


def _elapsed(start: datetime, state: dict[str, Any]) -> float:
    last = state["last_submitted"]
    return (last - start).total_seconds() if last is not None else float("nan")


def _check_db(state: dict[str, Any], n: int, label: str, history: int = 0) -> list[str]:
    expected = {"outbox": 0, "pending": 0, "queued": n, "messages": n + history}
    return [
        f"{label}: {key} = {state[key]}, expected {want}"
        for key, want in expected.items()
        if state[key] != want
    ]


async def _wait_drained(conn: AsyncConnection[Any], limit_seconds: float) -> bool:
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        cur = await conn.execute(seed.bq("bench_outbox_depth"))
        row = await cur.fetchone()
        if row is not None and row[0] == 0:
            return True
        await asyncio.sleep(POLL)
    return False


async def drain_noop(
    stack: Stack, n: int, tag: str, *, limit_seconds: float, history: int = 0
) -> Drain:
    """Run the dispatcher's own loop in this process against the no-op provider; `history`
    finished messages already in the database are kept (else every message is cleared first)."""
    url = stack.database_url
    settings = load_settings({**stack.env, "DATABASE_URL": url})
    pool = await open_sms_pool(settings)  # the dispatcher's own (generic plans)
    await pool.wait()
    provider = NoopProvider()
    dispatcher = Dispatcher(
        settings=settings, pool=pool, providers={"twilio": provider}, owner="bench:noop"
    )
    listen = "sms-dispatcher-listen-noop"
    runner = Runner(dispatcher, Wakeup(conninfo_with_app(url, listen)))
    task = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(30):
            await runner.wakeup.connected.wait()
        with psycopg.connect(url, autocommit=True) as conn:
            if not history:
                await asyncio.to_thread(seed.clear_messages, conn)
            start = await asyncio.to_thread(
                seed.seed_messages, conn, n, tag, sender=SENDER, burst=stack.sender_burst
            )
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            drained = await _wait_drained(conn, limit_seconds)
    finally:
        runner.stop()
        await task
        await pool.close()
    with psycopg.connect(url, autocommit=True) as conn:
        state = seed.drain_state(conn)
    problems = [] if drained else [f"noop: not drained within {limit_seconds:.0f} s"]
    problems += _check_db(state, n, "noop", history)
    twice = sum(1 for c in provider.sends.values() if c > 1)
    if len(provider.sends) != n or twice:
        problems.append(f"noop: {len(provider.sends)} messages sent, {twice} more than once")
    seconds = _elapsed(start, state)
    return Drain(n / seconds, seconds, problems)


def drain_simulator(
    stack: Stack,
    n: int,
    tag: str,
    *,
    latency: float,
    timeout: float,
    metrics_url: str | None = None,
) -> Drain:
    """Drain through the dispatcher subprocess and the simulator at `latency` seconds per call;
    with the dispatcher's `metrics_url`, also its mean provider call during this drain."""
    label = f"simulator {latency * 1000:.0f} ms"
    before = sent_calls(httpx.get(metrics_url, timeout=10).text) if metrics_url else None
    with httpx.Client(base_url=stack.sim_url, timeout=60) as sim:
        sim.post("/_sim/reset").raise_for_status()
        sim.post("/_sim/config", json={"latency": latency}).raise_for_status()
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            seed.clear_messages(conn)
            start = seed.seed_messages(conn, n, tag, sender=SENDER, burst=stack.sender_burst)
            drained = _poll_drained(conn, timeout)
            state = seed.drain_state(conn)
        report = sim.get("/_sim/messages").json()
    problems = [] if drained else [f"{label}: not drained within {timeout:.0f} s"]
    problems += _check_db(state, n, label)
    problems += check_simulator(report, {seed.body(tag, i) for i in range(n)}, label)
    seconds = _elapsed(start, state)
    call_ms = None
    if metrics_url and before is not None:
        after = sent_calls(httpx.get(metrics_url, timeout=10).text)
        calls = after[1] - before[1]
        call_ms = round((after[0] - before[0]) / calls * 1000, 1) if calls else None
    return Drain(n / seconds, seconds, problems, call_ms)


def _poll_drained(conn: psycopg.Connection[Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if seed.outbox_depth(conn) == 0:
            return True
        time.sleep(POLL)
    return False


def check_simulator(report: dict[str, Any], bodies: set[str], label: str) -> list[str]:
    """Every expected body received exactly once (one request, one accepted message), no other."""
    messages = report["messages"]
    got = [m["body"] for m in messages]
    problems = []
    if len(got) != len(bodies) or set(got) != bodies:
        missing = len(bodies - set(got))
        problems.append(f"{label}: simulator has {len(got)} messages, {missing} expected missing")
    dup = sum(1 for m in messages if m["accepted_count"] != 1 or m["request_count"] != 1)
    if dup or report["requests"] != len(bodies):
        problems.append(
            f"{label}: {report['requests']} send requests for {len(bodies)} messages,"
            f" {dup} sent more than once"
        )
    return problems


def sdk_loop(stack: Stack, n: int, tag: str, *, latency: float, concurrency: int) -> Drain:
    """The 200 ms drain's peer without a database: the Twilio SDK alone (create_async, as the
    dispatcher calls it) sending `n` messages from `concurrency` tasks to the simulator at
    `latency` seconds per call: what that many calls in flight make on this machine once each
    call's client and simulator work is paid, with no claim, no attempt row and no outcome to
    record."""
    with httpx.Client(base_url=stack.sim_url, timeout=60) as sim:
        sim.post("/_sim/reset").raise_for_status()
        sim.post("/_sim/config", json={"latency": latency}).raise_for_status()
        seconds = asyncio.run(_sdk_sends(stack.env, n, tag, concurrency))
        report = sim.get("/_sim/messages").json()
        sim.post("/_sim/reset").raise_for_status()
    label = f"SDK alone, simulator {latency * 1000:.0f} ms"
    problems = check_simulator(report, {seed.body(tag, i) for i in range(n)}, label)
    return Drain(n / seconds, seconds, problems)


async def _sdk_sends(env: dict[str, str], n: int, tag: str, concurrency: int) -> float:
    """Seconds the SDK took to send the `n` messages from `concurrency` tasks."""
    http = AsyncTwilioHttpClient()
    client = Client(
        env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"], http_client=http, environment={}
    )
    client.api.base_url = env["TWILIO_API_BASE_URL"]
    messages = client.api.v2010.accounts(env["TWILIO_ACCOUNT_SID"]).messages
    numbers = iter(range(n))

    async def sender() -> None:
        for i in numbers:  # shared: each number is taken by one task
            await messages.create_async(to=seed.recipient(i), from_=SENDER, body=seed.body(tag, i))

    start = time.monotonic()
    try:
        await asyncio.gather(*(sender() for _ in range(concurrency)))
    finally:
        if http.session is not None:
            await http.session.close()
    return time.monotonic() - start
