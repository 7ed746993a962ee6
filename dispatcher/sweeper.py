"""Status sweeper: ask the provider about accepted messages whose final callback never came."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from shared.config import Settings
from shared.providers.base import Provider, ProviderError, StatusUpdate
from shared.queries import q
from shared.status import apply_update

log = logging.getLogger(__name__)

# Provider lookups at once: enough to drain a backlog, few enough not to look like a burst.
FETCH_CONCURRENCY: Final = 8


async def sweep_once(
    pool: AsyncConnectionPool,
    providers: Mapping[str, Provider],
    settings: Settings,
    *,
    now: datetime | None = None,
    limit: int = 100,
) -> int:
    """Check up to `limit` stale messages with their provider; the number claimed for checking.

    Claims in a short committed transaction (SKIP LOCKED, bumping status_checked_at), so several
    dispatchers never ask about the same message at once; fetches with no transaction open; applies
    each answer through shared.status.apply_update(source="sweep"). A result equal to `limit`
    means there may be more to sweep now. `now` is for tests (default: the database clock).
    """
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            q("status_sweep_claim"),
            {
                "now": now,
                "after": settings.status_sweep_after_seconds,
                "max_age": settings.status_sweep_max_age_seconds,
                "limit": limit,
            },
        )
        claimed = await cur.fetchall()
    if not claimed:
        return 0
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def check(row: dict[str, Any]) -> None:
        async with gate:
            await _check(pool, providers, settings, row)

    await asyncio.gather(*(check(row) for row in claimed))
    return len(claimed)


async def _check(
    pool: AsyncConnectionPool,
    providers: Mapping[str, Provider],
    settings: Settings,
    row: dict[str, Any],
) -> None:
    ids = {"message_id": str(row["id"]), "provider": row["provider"]}
    provider = providers.get(row["provider"])
    if provider is None:
        log.warning(
            "status sweep: provider not configured", extra={"action": "sweep_skipped", **ids}
        )
        return
    try:
        async with asyncio.timeout(settings.provider_timeout_seconds):
            remote = await provider.fetch(row["provider_sid"])
    except (ProviderError, TimeoutError) as e:
        # Asked again after STATUS_SWEEP_AFTER_SECONDS; nothing else to do about it now.
        log.warning(
            "status sweep: provider lookup failed: %s",
            e,
            extra={
                "action": "sweep_failed",
                "error_category": getattr(getattr(e, "category", None), "value", "ambiguous"),
                "error_code": getattr(e, "code", None),
                **ids,
            },
        )
        return
    update = StatusUpdate(
        provider=row["provider"],
        message_id=row["id"],
        sid=remote.sid,
        raw_status=remote.raw_status,
        status=remote.status,
        error_code=remote.error_code,
        raw={"sid": remote.sid, "status": remote.raw_status, "error_code": remote.error_code},
    )
    async with pool.connection() as conn:
        result = await apply_update(conn, update, settings=settings, source="sweep")
    log.info(
        "status sweep: %s at the provider, %s here",
        remote.raw_status,
        result.current,
        extra={"action": "sweep_checked", "error_code": remote.error_code, **ids},
    )
