"""The peer: pgqueuer (latest, from the bench extra) on the same server and database.

Its drain is no-op jobs worked by one QueueManager in drain mode, with pgqueuer's default batch
size (10) unless told otherwise; its enqueue is `Queries.enqueue` of one job per call from 16
tasks, each on its own connection (one psycopg connection runs one statement at a time).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from psycopg import AsyncConnection

ENTRYPOINT = "bench_noop"
TABLES = "pgqueuer, pgqueuer_log, pgqueuer_statistics"
SEED_CHUNK = 2_000


def _queries(conn: AsyncConnection[Any]) -> Any:
    from pgqueuer import PsycopgDriver, Queries

    return Queries(PsycopgDriver(conn))


async def install(url: str) -> str:
    """Install pgqueuer's schema once; its version."""
    import pgqueuer

    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await _queries(conn).install()
    return str(pgqueuer.__version__)


def clear(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLES}")
        conn.execute("VACUUM ANALYZE pgqueuer")


async def drain(
    url: str, n: int, *, batch_size: int, limit_seconds: float
) -> tuple[float, list[str]]:
    """Enqueue `n` no-op jobs, then time one QueueManager draining them; (jobs/s, problems)."""
    from pgqueuer import QueueManager
    from pgqueuer.domain.types import QueueExecutionMode

    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        queries = _queries(conn)
        for start in range(0, n, SEED_CHUNK):
            k = min(SEED_CHUNK, n - start)
            await queries.enqueue([ENTRYPOINT] * k, [None] * k, [0] * k)
        await conn.execute("ANALYZE pgqueuer")  # as for ours: the planner knows the queue's size
    done = 0
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        qm = QueueManager(_queries(conn))

        @qm.entrypoint(ENTRYPOINT)
        async def noop(job: Any) -> None:
            nonlocal done
            done += 1

        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(limit_seconds):
                await qm.run(batch_size=batch_size, mode=QueueExecutionMode.drain)
        except TimeoutError:
            return done / limit_seconds, [
                f"pgqueuer drain did not finish {n} jobs in {limit_seconds:.0f} s"
            ]
        elapsed = time.perf_counter() - t0
    problems = []
    with psycopg.connect(url, autocommit=True) as check:
        row = check.execute("SELECT count(*) FROM pgqueuer").fetchone()
    left = int(row[0]) if row else -1
    if done != n or left != 0:
        problems.append(f"pgqueuer drain: {done} of {n} jobs ran, {left} left in its queue")
    return n / elapsed, problems


async def enqueue(url: str, *, tasks: int, seconds: float, warmup: float = 1.0) -> float:
    """Single-job enqueues from `tasks` tasks for `seconds` (after `warmup`); jobs/s."""
    conns = [await AsyncConnection.connect(url, autocommit=True) for _ in range(tasks)]
    counting = False
    count = 0
    stop = asyncio.Event()

    async def worker(conn: AsyncConnection[Any]) -> None:
        nonlocal count
        queries = _queries(conn)
        while not stop.is_set():
            await queries.enqueue(ENTRYPOINT, None)
            if counting:
                count += 1

    try:
        workers = [asyncio.create_task(worker(c)) for c in conns]
        await asyncio.sleep(warmup)
        counting = True
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        counting = False
        elapsed = time.perf_counter() - t0
        stop.set()
        await asyncio.gather(*workers)
    finally:
        for c in conns:
            await c.close()
    return count / elapsed
