"""A pooled connection in autocommit mode, for request paths made of single statements.

A single statement is atomic on its own: run in autocommit it costs one round trip, where the
pool's default (an implicit or explicit BEGIN ... COMMIT) costs three. Multi-statement work on
such a connection still opens `conn.transaction()` explicitly. The mode is client-side (no round
trip) and is put back before the connection returns to the pool, so other users see no change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool


@asynccontextmanager
async def autocommit(pool: AsyncConnectionPool[Any]) -> AsyncIterator[AsyncConnection[Any]]:
    """A connection from `pool` with autocommit on for the duration of the block."""
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            yield conn
        finally:
            # A lost connection is thrown away by the pool; resetting it would only raise again.
            if not conn.broken:
                await conn.set_autocommit(False)
