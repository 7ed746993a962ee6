"""api.connections.on_demand: the send paths take a pooled connection only when they read."""

from __future__ import annotations

import asyncio

from api.connections import on_demand
from shared.db import open_pool


def _checkouts(db_url: str, calls: int) -> tuple[int, int, bool, bool]:
    """(checkouts of a block that asked `calls` times, pool connections free after it, whether
    every call gave the same connection, whether it was in autocommit)."""

    async def go() -> tuple[int, int, bool, bool]:
        pool = await open_pool(db_url, application_name="test-on-demand", min_size=1, max_size=1)
        try:
            before = pool.get_stats().get("requests_num", 0)
            async with on_demand(pool) as connect:
                got = [await connect() for _ in range(calls)]
                autocommit = all(conn.autocommit for conn in got)
            after = pool.get_stats().get("requests_num", 0)
            free = pool.get_stats()["pool_available"]
            same = all(conn is got[0] for conn in got)
            return after - before, free, same, autocommit
        finally:
            await pool.close()

    return asyncio.run(go())


def test_a_block_that_never_asks_takes_no_connection(db_url: str) -> None:
    assert _checkouts(db_url, 0)[0] == 0


def test_every_call_of_a_block_gives_its_one_autocommit_connection_returned_at_its_end(
    db_url: str,
) -> None:
    assert _checkouts(db_url, 3) == (1, 1, True, True)
