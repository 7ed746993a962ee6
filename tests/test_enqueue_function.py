"""sms_messages_enqueue (migration 0014): the enqueue statement kept as a PL/pgSQL function, so a
connection that prepares nothing (behind a transaction-pooling PgBouncer) still plans it once per
server connection, not once per request."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from bench.pgbouncer import INSTALL_HINT, PgBouncer, which
from shared import db as shared_db
from shared import messages

SENDER = "+15005550006"

# The enqueue statement's kept plans in this session: PostgreSQL names each plan kept in the plan
# cache after the statement it was made for, shown up to its first 1,024 bytes
# (pg_backend_memory_contexts, PostgreSQL 14+). The statement is the one that starts so.
_KEPT_ENQUEUE_PLANS = (
    "SELECT count(*) FROM pg_backend_memory_contexts"
    " WHERE name = 'CachedPlan' AND ident LIKE 'WITH args AS MATERIALIZED (%%'"
)


async def _send(conn: psycopg.AsyncConnection[Any], n: int) -> None:
    """`n` single sends as POST /sms/send makes them (no key, no limit), each to a new recipient."""
    for i in range(n):
        await messages.enqueue(
            conn, api_key_id=None, to_number=f"+1415555{i:04d}", from_number=SENDER,
            provider="twilio", body="hi", conversation_id=None, idempotency_key=None,
            request_hash=None, request_id="t",
        )  # fmt: skip


async def _one(conn: psycopg.AsyncConnection[Any], query: str) -> Any:
    cur = await conn.execute(query)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


def test_through_pgbouncer_one_server_connection_plans_the_enqueue_for_every_client(
    db_url: str,
) -> None:
    """Through PgBouncer (transaction pooling, one server connection), two clients that prepare
    nothing take turns enqueueing; the server connection keeps one plan of the enqueue statement
    for both, and nothing is prepared."""
    if which() is None:
        pytest.skip(INSTALL_HINT)
    user = str(psycopg.conninfo.conninfo_to_dict(db_url).get("user") or "postgres")

    async def run(url: str) -> tuple[int, int, set[int]]:
        first = await shared_db.connect(url, autocommit=True)
        second = await shared_db.connect(url, autocommit=True)
        try:
            assert first.prepare_threshold is None and second.prepare_threshold is None
            await _send(first, 4)
            await _send(second, 4)
            pids = {await _one(c, "SELECT pg_backend_pid()") for c in (first, second)}
            kept = await _one(second, _KEPT_ENQUEUE_PLANS)
            prepared = await _one(second, "SELECT count(*) FROM pg_prepared_statements")
        finally:
            await first.close()
            await second.close()
        return kept, prepared, pids

    with PgBouncer(db_url, [user], pool_size=1) as bouncer:
        kept, prepared, pids = asyncio.run(run(bouncer.url()))
    assert len(pids) == 1  # both clients' transactions ran on the one server connection
    assert kept == 1
    assert prepared == 0


def test_an_unprepared_session_runs_the_enqueue_on_its_one_generic_plan(db_url: str) -> None:
    """On a connection that prepares nothing, from the sixth single send on the enqueue runs the
    generic plan kept in the session ($n parameters, not the values planned anew): the `args`
    fence makes every plan the same, so the custom plans tried first never look cheaper."""
    plans: list[str] = []

    async def run() -> None:
        conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
        try:
            conn.prepare_threshold = None  # as shared.db does behind a pooler
            conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
            # auto_explain sends the plan of each statement, the function's too, as a NOTICE.
            for setting in (
                "LOAD 'auto_explain'",
                "SET auto_explain.log_min_duration = 0",
                "SET auto_explain.log_nested_statements = on",
                "SET auto_explain.log_verbose = on",
                "SET auto_explain.log_level = notice",
            ):
                await conn.execute(setting)
            await _send(conn, 8)
        finally:
            await conn.close()

    asyncio.run(run())
    enqueues = [p for p in plans if "CTE args" in p and "INSERT INTO sms_outbox" in p]
    assert len(enqueues) == 8
    # The args CTE's one row: the bound values in a custom plan, $1, $2, ... in the generic one.
    generic = ["Output: $1, $2, $3" in p for p in enqueues]
    assert generic[5:] == [True, True, True]
