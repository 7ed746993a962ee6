"""GET /healthz (the process answers) and GET /readyz (the database answers too)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.state import state
from shared.config import Settings
from shared.db import explain, unavailable
from shared.providers.registry import SENDER_VARIABLES, without_sender

log = logging.getLogger(__name__)
READY_TIMEOUT_SECONDS = 2.0


def _no_sender(provider: str) -> str:
    return (
        f"{SENDER_VARIABLES[provider]} is not set: {provider} has credentials but no sender number"
    )


def sender_warnings(settings: Settings) -> list[str]:
    """One sentence per configured provider without its sender number, naming the variable."""
    return [_no_sender(name) for name in without_sender(settings)]


def warn_about_senders(settings: Settings) -> None:
    """At start-up, one WARNING line per configured provider without its sender number: said
    now rather than as `no_default_sender` at the first send."""
    for name in without_sender(settings):
        log.warning(
            _no_sender(name),
            extra={
                "action": "sender_number_missing",
                "provider": name,
                "variable": SENDER_VARIABLES[name],
            },
        )


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """200 when a pooled connection answers, with `warnings` when a configured provider has no
    sender number; else the 503 `database_unavailable` of every endpoint (api.middleware), whose
    message says why."""
    app = state(request)
    pool = app.pool
    try:
        async with pool.connection(timeout=READY_TIMEOUT_SECONDS) as conn:
            await conn.execute("SELECT 1")
    except Exception as e:
        down = unavailable(e)
        if down is None:
            raise
        # A pool timeout alone does not say why: a direct connection attempt does.
        raise await explain(down, pool, READY_TIMEOUT_SECONDS) from e
    body: dict[str, Any] = {"status": "ready"}
    warnings = sender_warnings(app.settings)
    if warnings:
        body["warnings"] = warnings
    return JSONResponse(body)
