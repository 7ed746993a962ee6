"""Customer webhook endpoints (sms_webhook_endpoints): register, list with delivery health,
remove, rotate the secret, enable again, send a test, replay; for the API and smsctl alike.

`owner` is the key whose endpoints a caller may touch (None: every key's, an operator). Another
key's endpoint is treated as one that does not exist. The secret leaves this module only from
`create` and `rotate`, once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import class_row, dict_row

from shared.errors import SmsOutboxError
from shared.queries import q
from shared.webhook_registration import MAX_ENDPOINTS_PER_KEY, Registration
from shared.webhook_signing import ROTATION_OVERLAP, new_secret, webhook_id

log = logging.getLogger(__name__)
# Largest id a path or argument may name (bigint): anything larger is no endpoint.
MAX_ID: Final = 2**63 - 1


class NotFound(SmsOutboxError):
    """No endpoint has this id (or it is another key's)."""


class Disabled(SmsOutboxError):
    """The endpoint is disabled: nothing is sent to it until it is enabled again."""


class LimitReached(SmsOutboxError):
    """The key has MAX_ENDPOINTS_PER_KEY endpoints already."""


class KeyUnusable(SmsOutboxError):
    """The key to register an endpoint for does not exist or is revoked."""


@dataclass(frozen=True)
class Endpoint:
    """An endpoint as its owner sees it (never its secret), with its delivery health."""

    id: int
    api_key_id: int
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    created_at: datetime
    previous_secret_expires_at: datetime | None  # a rotation's overlap, while it lasts
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    failing_since: datetime | None
    pending: int
    oldest_pending_seconds: Decimal | None


@dataclass(frozen=True)
class WithSecret:
    """An endpoint just created or rotated, and its secret (shown this once)."""

    endpoint: Endpoint
    secret: str


def parse_id(text: str) -> int | None:
    """An endpoint id from a path or an argument; None when it cannot be one."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_ID:
        return None
    return int(text)


async def get(conn: AsyncConnection[Any], endpoint_id: int, *, owner: int | None) -> Endpoint:
    """One endpoint with its health; NotFound."""
    found = await list_endpoints(conn, owner=owner, endpoint_id=endpoint_id)
    if not found:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return found[0]


async def list_endpoints(
    conn: AsyncConnection[Any], *, owner: int | None, endpoint_id: int | None = None
) -> list[Endpoint]:
    """`owner`'s endpoints (every key's when None), oldest first, with their health."""
    async with conn.cursor(row_factory=class_row(Endpoint)) as cur:
        await cur.execute(q("webhook_endpoints_list"), {"owner": owner, "id": endpoint_id})
        return await cur.fetchall()


async def create(
    conn: AsyncConnection[Any], api_key_id: int, registration: Registration, *, actor: str
) -> WithSecret:
    """Register a checked endpoint for `api_key_id` with a new secret; LimitReached, KeyUnusable."""
    secret = new_secret()
    async with conn.transaction():
        cur = await conn.execute(q("webhook_endpoints_lock_key"), {"api_key_id": api_key_id})
        key = await cur.fetchone()
        if key is None or key[1] is not None:
            raise KeyUnusable(f"API key {api_key_id} does not exist or is revoked")
        cur = await conn.execute(
            q("webhook_endpoints_create"),
            {
                "api_key_id": api_key_id,
                "url": registration.url,
                "secret": secret,
                "events": list(registration.events),
                "max_per_key": MAX_ENDPOINTS_PER_KEY,
            },
        )
        row = await cur.fetchone()
        if row is None:
            raise LimitReached(
                f"an API key has at most {MAX_ENDPOINTS_PER_KEY} webhook endpoints; remove one"
            )
        endpoint = await get(conn, row[0], owner=None)
    _log("webhook endpoint added", "webhook_endpoint_added", endpoint.id, api_key_id, actor)
    return WithSecret(endpoint, secret)


async def remove(
    conn: AsyncConnection[Any], endpoint_id: int, *, owner: int | None, actor: str
) -> None:
    """Delete an endpoint with its deliveries, pending ones included; NotFound."""
    async with conn.transaction():
        cur = await conn.execute(q("webhook_endpoints_delete"), {"id": endpoint_id, "owner": owner})
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    _log("webhook endpoint removed", "webhook_endpoint_removed", endpoint_id, row[1], actor)


async def rotate(
    conn: AsyncConnection[Any], endpoint_id: int, *, owner: int | None, actor: str
) -> WithSecret:
    """A new secret; the old one keeps signing beside it for ROTATION_OVERLAP; NotFound."""
    secret = new_secret()
    async with conn.transaction():
        cur = await conn.execute(
            q("webhook_endpoints_rotate_secret"),
            {
                "id": endpoint_id,
                "owner": owner,
                "secret": secret,
                "overlap_seconds": ROTATION_OVERLAP.total_seconds(),
            },
        )
        if await cur.fetchone() is None:
            raise NotFound(f"no webhook endpoint {endpoint_id}")
        endpoint = await get(conn, endpoint_id, owner=owner)
    _log(
        "webhook secret rotated", "webhook_secret_rotated", endpoint_id, endpoint.api_key_id, actor
    )
    return WithSecret(endpoint, secret)


async def enable(
    conn: AsyncConnection[Any], endpoint_id: int, *, owner: int | None, actor: str
) -> bool:
    """Enable a disabled endpoint (healthy as new); False when it was enabled; NotFound."""
    async with conn.transaction():
        cur = await conn.execute(q("webhook_endpoints_enable"), {"id": endpoint_id, "owner": owner})
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    if row[1]:
        return False
    _log("webhook endpoint enabled", "webhook_endpoint_enabled", endpoint_id, None, actor)
    return True


async def queue_test(conn: AsyncConnection[Any], endpoint_id: int, *, owner: int | None) -> str:
    """Queue a webhook.test delivery to an enabled endpoint; its webhook-id. NotFound, Disabled."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            q("webhook_deliveries_queue_test"), {"endpoint_id": endpoint_id, "owner": owner}
        )
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    if not row["enabled"]:
        raise Disabled(f"webhook endpoint {endpoint_id} is disabled")
    delivery: UUID = row["delivery_id"]
    return webhook_id(delivery)


async def replay(
    conn: AsyncConnection[Any],
    endpoint_id: int,
    since: datetime,
    *,
    delivered: bool,
    actor: str,
) -> list[str]:
    """Send again the endpoint's failed deliveries made since `since` (and its delivered ones
    with `delivered`), each with its own webhook-id; their webhook-ids. NotFound, Disabled."""
    async with conn.transaction():
        endpoint = await get(conn, endpoint_id, owner=None)
        if not endpoint.enabled:
            raise Disabled(f"webhook endpoint {endpoint_id} is disabled")
        cur = await conn.execute(
            q("webhook_deliveries_replay"),
            {"endpoint_id": endpoint_id, "since": since, "delivered": delivered},
        )
        ids = [webhook_id(row[0]) for row in await cur.fetchall()]
    log.info(
        "webhook deliveries replayed",
        extra={
            "action": "webhook_replayed",
            "endpoint_id": endpoint_id,
            "count": len(ids),
            "actor": actor,
        },
    )
    return ids


def _log(text: str, action: str, endpoint_id: int, api_key_id: int | None, actor: str) -> None:
    # Never the URL (it may carry a customer's token in its path or query) nor the secret.
    log.info(
        text,
        extra={
            "action": action,
            "endpoint_id": endpoint_id,
            "api_key_id": api_key_id,
            "actor": actor,
        },
    )
