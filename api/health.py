"""GET /healthz (the process answers) and GET /readyz (the database answers too)."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import JSONResponse

from shared.db import explain, unavailable

READY_TIMEOUT_SECONDS = 2.0


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """200 when a pooled connection answers; else the 503 `database_unavailable` of every
    endpoint (api.middleware), whose message says why."""
    pool: AsyncConnectionPool = request.app.state.pool
    try:
        async with pool.connection(timeout=READY_TIMEOUT_SECONDS) as conn:
            await conn.execute("SELECT 1")
    except Exception as e:
        down = unavailable(e)
        if down is None:
            raise
        # A pool timeout alone does not say why: a direct connection attempt does.
        raise await explain(down, pool, READY_TIMEOUT_SECONDS) from e
    return JSONResponse({"status": "ready"})
