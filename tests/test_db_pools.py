"""The dispatcher's pools plan each statement once per connection (shared.db, generic_plans): a
statement is prepared on its first execution and always runs its generic plan, where a default
pool leaves it unprepared for psycopg's first executions and lets PostgreSQL plan custom ones."""

from __future__ import annotations

import asyncio
from typing import Any

from psycopg_pool import AsyncConnectionPool

from dispatcher.__main__ import open_sms_pool, open_webhook_pool
from shared.config import Settings
from shared.db import open_pool

STATEMENT = "SELECT count(*) FROM sms_outbox WHERE next_attempt_at <= %s"


async def _plans(pool: AsyncConnectionPool, runs: int) -> list[tuple[Any, ...]]:
    """Run STATEMENT `runs` times on one connection of `pool`; that connection's prepared
    statements for it: (generic plans, custom plans) each."""
    async with pool.connection() as conn:
        for _ in range(runs):
            await conn.execute(STATEMENT, ("2026-01-01T00:00:00Z",))
        cur = await conn.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE 'SELECT count(*) FROM sms_outbox%%'"
        )
        return await cur.fetchall()


def test_a_generic_plan_pool_prepares_at_once_and_never_plans_a_custom_one(db_url: str) -> None:
    async def go() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        generic = await open_pool(db_url, application_name="t", min_size=1, generic_plans=True)
        default = await open_pool(db_url, application_name="t", min_size=1)
        try:
            return await _plans(generic, 3), await _plans(default, 3)
        finally:
            await generic.close()
            await default.close()

    generic, default = asyncio.run(go())
    assert generic == [(3, 0)]
    assert default == []  # psycopg prepares after its fifth execution


def test_both_of_the_dispatchers_pools_use_generic_plans(settings: Settings) -> None:
    async def go() -> list[tuple[str, int | None]]:
        pool = await open_sms_pool(settings)
        webhook_pool = await open_webhook_pool(settings)
        try:
            found = []
            for p in (pool, webhook_pool):
                await p.wait()
                async with p.connection() as conn:
                    cur = await conn.execute("SHOW plan_cache_mode")
                    row = await cur.fetchone()
                    assert row is not None
                    found.append((row[0], conn.prepare_threshold))
            return found
        finally:
            await webhook_pool.close()
            await pool.close()

    assert asyncio.run(go()) == [("force_generic_plan", 0)] * 2
