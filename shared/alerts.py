"""Final-failure and operator alerts: recorded in sms_alerts, delivered as outbox work (dispatcher task)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from shared.config import Settings


async def raise_final_failure(
    conn: AsyncConnection[Any],
    message_id: UUID,
    *,
    error_code: str | None,
    error_category: str,
    error_message: str | None,
    settings: Settings,
) -> None:
    """Record the final failure of a message inside the caller's transaction (one alert per message)."""
    raise NotImplementedError  # the dispatcher work fills this in
