"""Cached plans made while our tables were small, made again once the tables have grown.

A prepared statement (and a PL/pgSQL function's statements) keeps the plan PostgreSQL made for it
until something invalidates it: DDL, or an ANALYZE of a table it reads. The planner sizes a table
from its file at planning time, so a plan made on an empty or tiny table (a new deployment, a
database after TRUNCATE) scans it whole: a seq scan of one page is cheaper than an index probe.
When a burst then fills the table, those plans stay until autovacuum's next ANALYZE, up to a
minute (autovacuum_naptime) later: a claim of 64 rows read the 20,000 rows of the outbox and
joined the messages row by row (842 ms), and a 20,000-message burst drained at 500-660/s.

`Replanner` is a pool `check`. Once a second per pool it reads the size of the growing tables
(GROWING, one catalog query). When one has at least doubled (`outgrown`) since the sizes the
plans in use were made on, it starts a new generation: each connection at its next checkout runs
DISCARD PLANS (one round trip), and its next execution of each statement is planned again on the
tables as they now are. Prepared statements stay prepared (psycopg's cache is untouched). A table
that shrank counts from its smaller size (`rebase`), as a connection may plan anew on it. The
doubling rule makes the replans logarithmic in a table's growth, and a steady state makes none.

Behind a transaction pooler psycopg prepares nothing, yet every server connection keeps the plans
of the PL/pgSQL functions it ran (the enqueue, sms_messages_enqueue_rows) and of the foreign-key
checks their inserts made. Until 2026-12-06 the Replanner skipped such connections, and an API
behind PgBouncer kept enqueueing with plans made on the emptied tables: each group seq-scanned
sms_messages and sms_conversations (53 M rows read in one 6 s run), 1,284/s where the same
statements made 1,880/s once replanned (direct connections unprepared, as behind a pooler). There
each DISCARD PLANS reaches the server connection the pooler lends for it; one that none reaches
keeps its plans until autovacuum's next ANALYZE of the table.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from weakref import WeakKeyDictionary

import psycopg

from shared.queries import q

logger = logging.getLogger(__name__)

# The tables that grow with traffic and that the hot statements read by key.
GROWING: Final = (
    "sms_outbox",
    "sms_messages",
    "sms_message_events",
    "sms_conversations",
    "sms_suppressions",
    "sms_webhook_deliveries",
)
POLL_SECONDS: Final = 1.0
# Growth smaller than this is never worth a replan (128 kB: a few hundred rows).
MIN_GROWTH_PAGES: Final = 16


def outgrown(
    planned: Mapping[str, int], now: Mapping[str, int], *, min_pages: int = MIN_GROWTH_PAGES
) -> bool:
    """Whether some table in `now` has at least doubled since `planned`, by `min_pages` or more."""
    for name, pages in now.items():
        before = planned.get(name, 0)
        if pages >= 2 * before and pages - before >= min_pages:
            return True
    return False


def rebase(
    planned: Mapping[str, int] | None, sizes: Mapping[str, int]
) -> tuple[bool, dict[str, int]]:
    """(replan now?, the sizes the next poll compares with) after a poll found `sizes`. The first
    poll only records them; after that, a table that shrank counts from its smaller size, since
    a connection may plan anew on the shrunken table (vacuum truncates an emptied outbox)."""
    if planned is None:
        return False, dict(sizes)
    if outgrown(planned, sizes):
        return True, dict(sizes)
    return False, {name: min(pages, sizes.get(name, pages)) for name, pages in planned.items()}


class Replanner:
    """Pool `check` (see the module's docstring); `clock` is injected for tests."""

    def __init__(
        self,
        relations: tuple[str, ...] = GROWING,
        *,
        poll_seconds: float = POLL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.relations = relations
        self.poll_seconds = poll_seconds
        self.generation = 0
        self.planned: dict[str, int] | None = None  # the sizes the current generation planned on
        self._clock = clock
        self._polled_at = -math.inf
        self._seen: WeakKeyDictionary[psycopg.AsyncConnection[Any], int] = WeakKeyDictionary()
        self._off = False

    async def __call__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # Also behind a pooler, where psycopg prepares nothing: the server connections still keep
        # their PL/pgSQL functions' plans and their foreign-key checks' (the module's docstring).
        if self._off:
            return
        now = self._clock()
        if now - self._polled_at >= self.poll_seconds:
            self._polled_at = now
            await self._poll(conn)
        seen = self._seen.setdefault(conn, self.generation)  # a new connection has no plans yet
        if seen < self.generation:
            await _autocommit(conn, "DISCARD PLANS")
            self._seen[conn] = self.generation

    async def _poll(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            cur = await _autocommit(conn, q("relations_pages"), {"names": list(self.relations)})
            sizes = {str(name): int(pages) for name, pages in await cur.fetchall()}
        except psycopg.Error as e:
            if conn.broken:
                raise  # the pool throws this connection away and hands out another
            logger.warning("table sizes unreadable, plans are not refreshed: %s", type(e).__name__)
            self._off = True
            return
        replan, self.planned = rebase(self.planned, sizes)
        if replan:
            self.generation += 1


async def _autocommit(
    conn: psycopg.AsyncConnection[Any], query: str, params: Mapping[str, Any] | None = None
) -> psycopg.AsyncCursor[Any]:
    """Run one statement outside a transaction and leave `conn` idle as it was (a ROLLBACK would
    make psycopg forget its prepared statements)."""
    was = conn.autocommit
    await conn.set_autocommit(True)
    try:
        return await conn.execute(query, params)
    finally:
        if not conn.broken:
            await conn.set_autocommit(was)
