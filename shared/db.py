"""Connections: one async pool per process, built by the composition roots."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool


def conninfo_with_app(conninfo: str, application_name: str) -> str:
    """Add application_name so pg_stat_activity shows which process holds a connection."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(conninfo, application_name=application_name)


async def open_pool(
    conninfo: str,
    *,
    application_name: str,
    min_size: int = 2,
    max_size: int = 10,
    wait: bool = True,
) -> AsyncConnectionPool:
    """An opened async pool whose connections never sit idle in a transaction past 30 s.

    wait=False returns at once and connects in the background (the API starts while the database
    is down and answers 503 on /readyz until it is back).
    """
    pool = AsyncConnectionPool(
        conninfo_with_app(conninfo, application_name),
        min_size=min_size,
        max_size=max_size,
        open=False,
        # A session of ours left idle in a transaction would hold back vacuum of the outbox.
        kwargs={"options": "-c idle_in_transaction_session_timeout=30000"},
    )
    await pool.open(wait=wait, timeout=30)
    return pool
