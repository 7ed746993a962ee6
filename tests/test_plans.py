"""Cached plans made while the tables were small are made again once the tables have grown
(shared.plans): a plan made on an empty sms_messages scans it whole, and stays until something
invalidates it."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from shared.db import open_pool
from shared.plans import MIN_GROWTH_PAGES, Replanner, outgrown, rebase
from tests.dispatch_support import enqueue_bulk

PROBE = "SELECT body FROM sms_messages WHERE id = $1"
NO_ID = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    ("planned", "now", "expected"),
    [
        ({"t": 0}, {"t": MIN_GROWTH_PAGES}, True),  # from empty: once it has min_pages
        ({"t": 0}, {"t": MIN_GROWTH_PAGES - 1}, False),
        ({"t": 100}, {"t": 200}, True),  # doubled
        ({"t": 100}, {"t": 199}, False),
        ({"t": 5}, {"t": 10}, False),  # doubled, but by fewer than min_pages
        ({"t": 100, "u": 0}, {"t": 100, "u": 40}, True),  # any one table
        ({}, {"t": 40}, True),  # a table first seen counts from 0
        ({"t": 400}, {"t": 10}, False),  # shrinking never replans
    ],
)
def test_outgrown_is_a_doubling_by_at_least_min_pages(
    planned: dict[str, int], now: dict[str, int], expected: bool
) -> None:
    """A table at least twice its planned size, and min_pages larger, outgrows its plans."""
    assert outgrown(planned, now) is expected


def test_rebase_records_the_first_sizes_and_counts_a_shrunken_table_from_its_smaller_size() -> None:
    """The first poll replans nothing; a shrunken table is compared from its new size, so that
    growing back to where it was (plans made meanwhile on the small table) replans."""
    assert rebase(None, {"t": 50}) == (False, {"t": 50})
    assert rebase({"t": 50}, {"t": 0}) == (False, {"t": 0})
    assert rebase({"t": 0}, {"t": 50}) == (True, {"t": 50})
    assert rebase({"t": 50}, {"t": 60}) == (False, {"t": 50})


async def _explain(conn: psycopg.AsyncConnection[Any]) -> str:
    """The node type of the cached plan of PROBE (the prepared statement `probe`)."""
    cur = await conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE probe('{NO_ID}')")
    row = await cur.fetchone()
    assert row is not None
    return str(row[0][0]["Plan"]["Node Type"])


def test_a_plan_made_on_an_empty_table_is_made_again_once_the_table_has_grown(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """A generic plan of a primary-key probe, made while sms_messages was empty, is a seq scan
    and stays one as 3,000 messages arrive; the next check after a poll (one second later) finds
    the table outgrown, and the connection's next execution is an index scan. Statements psycopg
    prepared keep working."""
    db.execute("ALTER TABLE sms_messages SET (autovacuum_enabled = off)")  # no ANALYZE meanwhile
    db.execute("VACUUM ANALYZE sms_messages")  # known empty (a never-vacuumed table is guessed at)
    now = [0.0]
    replanner = Replanner(clock=lambda: now[0])

    async def go() -> tuple[str, str, str, int]:
        async with await psycopg.AsyncConnection.connect(
            db_url, options="-c plan_cache_mode=force_generic_plan", prepare_threshold=0
        ) as conn:
            await replanner(conn)  # the first poll: the sizes plans are made on
            await conn.execute(f"PREPARE probe(uuid) AS {PROBE}")
            await conn.execute("SELECT count(*) FROM sms_messages WHERE id = %s", (NO_ID,))
            planned_empty = await _explain(conn)
            await conn.commit()
            await asyncio.to_thread(enqueue_bulk, db, 3000)
            now[0] = 0.5  # within the poll interval: nothing read, nothing replanned
            await replanner(conn)
            before_poll = await _explain(conn)
            await conn.commit()
            now[0] = 1.0
            await replanner(conn)
            after_poll = await _explain(conn)
            cur = await conn.execute("SELECT count(*) FROM sms_messages WHERE id = %s", (NO_ID,))
            row = await cur.fetchone()
            assert row is not None
            await conn.commit()
            return planned_empty, before_poll, after_poll, int(row[0])

    planned_empty, before_poll, after_poll, found = asyncio.run(go())
    assert (planned_empty, before_poll) == ("Seq Scan", "Seq Scan")
    assert after_poll == "Index Scan"
    assert found == 0
    assert replanner.generation == 1


def test_a_steady_table_is_never_replanned(db_url: str, db: psycopg.Connection[Any]) -> None:
    """Polls that find the tables about as large as before start no new generation."""
    enqueue_bulk(db, 3000)
    now = [0.0]
    replanner = Replanner(clock=lambda: now[0])

    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(db_url, prepare_threshold=0) as conn:
            for step in range(3):
                now[0] = float(step)
                await replanner(conn)
                await asyncio.to_thread(enqueue_bulk, db, 10, from_number=f"+1500555000{step}")

    asyncio.run(go())
    assert replanner.generation == 0
    assert replanner.planned is not None and replanner.planned["sms_messages"] > MIN_GROWTH_PAGES


def test_every_pool_checks_its_plans_at_checkout(db_url: str, db: psycopg.Connection[Any]) -> None:
    """open_pool's connections go through the pool's Replanner when handed out: after the growth,
    each connection replans once, at its next checkout."""
    now = [0.0]
    replanner = Replanner(clock=lambda: now[0])

    async def go() -> list[int]:
        pool = await open_pool(
            db_url, application_name="t", min_size=1, max_size=1, replanner=replanner
        )
        try:
            generations = []
            for step in range(3):
                async with pool.connection() as conn:
                    await conn.execute("SELECT 1")
                generations.append(replanner.generation)
                if step == 0:
                    await asyncio.to_thread(enqueue_bulk, db, 3000)
                now[0] += 1.0
            return generations
        finally:
            await pool.close()

    assert asyncio.run(go()) == [0, 1, 1]


def test_a_function_s_plan_is_made_again_on_a_connection_that_prepares_nothing(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """Behind a pooler psycopg prepares nothing (prepare_threshold None), but the server keeps
    a PL/pgSQL function's plans: a probe planned while sms_messages was empty seq-scans it; once
    the table has grown, the next check after a poll makes the function's next call an index
    scan (scans counted in pg_stat_xact_user_tables)."""
    db.execute("ALTER TABLE sms_messages SET (autovacuum_enabled = off)")  # no ANALYZE meanwhile
    db.execute("VACUUM ANALYZE sms_messages")
    now = [0.0]
    replanner = Replanner(clock=lambda: now[0])

    async def counts(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
        cur = await conn.execute(
            "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables"
            " WHERE relname = 'sms_messages'"
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    async def scans(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
        """(seq scans, index scans) of sms_messages by one call of the probe (the view also
        counts what earlier transactions did and the statistics have not collected yet)."""
        seq, idx = await counts(conn)
        await conn.execute("SELECT pg_temp.probe(%s)", (NO_ID,))
        seq_after, idx_after = await counts(conn)
        await conn.commit()
        return seq_after - seq, idx_after - idx

    async def go() -> tuple[tuple[int, int], tuple[int, int]]:
        async with await psycopg.AsyncConnection.connect(
            db_url, options="-c plan_cache_mode=force_generic_plan", prepare_threshold=None
        ) as conn:
            await replanner(conn)  # the first poll: the sizes plans are made on
            await conn.execute(
                "CREATE FUNCTION pg_temp.probe(p uuid) RETURNS bigint LANGUAGE plpgsql AS"
                " $$ BEGIN RETURN (SELECT count(*) FROM sms_messages WHERE id = p); END $$"
            )
            await conn.commit()
            empty = await scans(conn)
            await asyncio.to_thread(enqueue_bulk, db, 3000)
            now[0] = 1.0
            await replanner(conn)
            return empty, await scans(conn)

    empty, grown = asyncio.run(go())
    assert empty == (1, 0)
    assert grown == (0, 1)
    assert replanner.generation == 1
