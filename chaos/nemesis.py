"""Faults that act on processes or change over time (Jepsen's nemesis): each runs beside the load
until `stop` is set, records what it did in `Context.actions`, and leaves everything running."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from chaos.cluster import Cluster


@dataclass
class Context:
    """What a nemesis may touch, and the record of what it did."""

    cluster: Cluster
    sim: httpx.AsyncClient
    rng: random.Random
    load_seconds: float  # planned length of the load
    lease_seconds: float  # DISPATCH_LEASE_SECONDS the dispatchers run with
    queries: dict[str, str]
    actions: Counter[str] = field(default_factory=Counter)

    async def configure(self, **faults: Any) -> None:
        (await self.sim.post("/_sim/config", json=faults)).raise_for_status()


Nemesis = Callable[[Context, asyncio.Event], Coroutine[Any, Any, None]]


async def _sleep(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` unless stopped first; whether to carry on."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return not stop.is_set()


async def kill_dispatchers(ctx: Context, stop: asyncio.Event, every: tuple[float, float]) -> None:
    """SIGKILL a random dispatcher every `every` seconds (uniform) and start it again."""
    while await _sleep(stop, ctx.rng.uniform(*every)):
        name = ctx.rng.choice(ctx.cluster.dispatcher_names())
        await asyncio.to_thread(ctx.cluster.kill, name)
        ctx.actions["dispatcher_kills"] += 1
        await asyncio.sleep(ctx.rng.uniform(0.2, 1.0))
        await asyncio.to_thread(ctx.cluster.start_dispatcher_named, name)


async def kill(ctx: Context, stop: asyncio.Event) -> None:
    await kill_dispatchers(ctx, stop, (2.0, 5.0))


async def kill_sometimes(ctx: Context, stop: asyncio.Event) -> None:
    await kill_dispatchers(ctx, stop, (4.0, 8.0))


def _busiest(ctx: Context) -> str:
    """The dispatcher holding the most leases now (a pause then strands work), else any."""
    by_pid = {ctx.cluster.pid(n): n for n in ctx.cluster.dispatcher_names()}
    with psycopg.connect(ctx.cluster.database_url, autocommit=True) as conn:
        for owner, _ in conn.execute(ctx.queries["chaos_lease_holders"]).fetchall():
            parts = str(owner).split(":")
            if len(parts) >= 2 and parts[-2].isdigit() and int(parts[-2]) in by_pid:
                return by_pid[int(parts[-2])]
    return ctx.rng.choice(ctx.cluster.dispatcher_names())


async def pause(ctx: Context, stop: asyncio.Event) -> None:
    """After a fifth of the load, SIGSTOP the busiest dispatcher past its lease, then SIGCONT."""
    if not await _sleep(stop, ctx.load_seconds / 5):
        return
    name = await asyncio.to_thread(_busiest, ctx)
    ctx.cluster.pause(name)
    ctx.actions["dispatcher_pauses"] += 1
    # Past the lease: its rows are rescued by the others while it sleeps, not before. Meanwhile
    # count the sessions that wait for a lock (its open transaction, if it was in one, holds them).
    until = asyncio.get_running_loop().time() + ctx.lease_seconds + 5.0
    while (left := until - asyncio.get_running_loop().time()) > 0:
        waiting = await asyncio.to_thread(_lock_waiters, ctx)
        ctx.actions["max_lock_waiters"] = max(ctx.actions["max_lock_waiters"], waiting)
        await asyncio.sleep(min(1.0, left))
    ctx.cluster.resume(name)


def _lock_waiters(ctx: Context) -> int:
    try:
        with psycopg.connect(ctx.cluster.database_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(ctx.queries["chaos_lock_waiters"]).fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0


async def api_kill(ctx: Context, stop: asyncio.Event) -> None:
    """SIGKILL the API at a third and at two thirds of the load, and start it again."""
    for _ in range(2):
        if not await _sleep(stop, ctx.load_seconds / 3):
            return
        await asyncio.to_thread(ctx.cluster.kill, "api")
        ctx.actions["api_kills"] += 1
        await asyncio.sleep(ctx.rng.uniform(0.5, 1.5))
        await asyncio.to_thread(ctx.cluster.start_api)


async def pg_restart(ctx: Context, stop: asyncio.Event) -> None:
    """At a third of the load, crash-stop PostgreSQL, keep it down 3-6 s, start it again."""
    if not await _sleep(stop, ctx.load_seconds / 3):
        return
    await asyncio.to_thread(ctx.cluster.stop_database)
    ctx.actions["pg_restarts"] += 1
    await asyncio.sleep(ctx.rng.uniform(3.0, 6.0))
    await asyncio.to_thread(ctx.cluster.start_database_again)


async def rate_limit_storms(ctx: Context, stop: asyncio.Event) -> None:
    """Alternate 429 storms (90 % of sends, 3-6 s) with calm spells (2-5 s)."""
    try:
        while not stop.is_set():
            await ctx.configure(rate_limit_rate=0.9)
            ctx.actions["rate_limit_storms"] += 1
            if not await _sleep(stop, ctx.rng.uniform(3.0, 6.0)):
                break
            await ctx.configure(rate_limit_rate=0.0)
            if not await _sleep(stop, ctx.rng.uniform(2.0, 5.0)):
                break
    finally:
        await ctx.configure(rate_limit_rate=0.0)
