"""GET /healthz (the process answers) and GET /readyz (the database answers too)."""

from __future__ import annotations

import logging

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger(__name__)
READY_TIMEOUT_SECONDS = 2.0


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    pool: AsyncConnectionPool = request.app.state.pool
    try:
        async with pool.connection(timeout=READY_TIMEOUT_SECONDS) as conn:
            await conn.execute("SELECT 1")
    except Exception as e:
        log.warning(
            "not ready: database unreachable",
            extra={"action": "readyz", "error_category": type(e).__name__},
        )
        return JSONResponse(
            {"status": "unavailable", "reason": f"database unreachable ({type(e).__name__})"},
            status_code=503,
        )
    return JSONResponse({"status": "ready"})
