"""A pooled connection in autocommit mode, for request paths made of single statements.

A single statement is atomic on its own: run in autocommit it costs one round trip, where the
pool's default (an implicit or explicit BEGIN ... COMMIT) costs three. Multi-statement work on
such a connection still opens `conn.transaction()` explicitly. The mode is client-side (no round
trip) and is put back before the connection returns to the pool, so other users see no change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
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


# A connection asked for when first needed: `conn = await connect()`.
Connect = Callable[[], Awaitable[AsyncConnection[Any]]]


class _OnDemand:
    def __init__(self, pool: AsyncConnectionPool[Any], stack: AsyncExitStack) -> None:
        self._pool = pool
        self._stack = stack
        self._conn: AsyncConnection[Any] | None = None

    async def __call__(self) -> AsyncConnection[Any]:
        if self._conn is None:
            self._conn = await self._stack.enter_async_context(autocommit(self._pool))
        return self._conn


@asynccontextmanager
async def on_demand(pool: AsyncConnectionPool[Any]) -> AsyncIterator[Connect]:
    """`connect`: an autocommit connection from `pool` checked out at its first call (the same
    one at every later call) and returned at the block's end; none when nothing called it. A
    send that names no sender, conversation or Idempotency-Key, by a key without quotas, needs
    no read before its write (group commit), so no checkout."""
    async with AsyncExitStack() as stack:
        yield _OnDemand(pool, stack)
