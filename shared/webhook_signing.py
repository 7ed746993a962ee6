"""Standard Webhooks signing of customer webhooks, with the `standardwebhooks` library: pure.

A delivery's `webhook-id` is `msg_` + its row id (stable across retries); its body is the stored
payload encoded the same way every time (so every retry sends the same bytes); its
`webhook-signature` holds one `v1,<base64 HMAC-SHA256>` per secret in force, space-separated: the
current secret's, and the previous one's for 24 h after a rotation.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID

from standardwebhooks import Webhook

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the spec's prefix, not a secret
# 32 random bytes (256 bits, as much as HMAC-SHA256 gives back); the spec asks for 24 at least.
SECRET_BYTES: Final = 32
# How long a rotated-out secret keeps signing beside the new one.
ROTATION_OVERLAP: Final = timedelta(hours=24)
CONTENT_TYPE: Final = "application/json"


def new_secret(token_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A fresh signing secret: `whsec_` + base64 of SECRET_BYTES random bytes."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode("ascii")


def webhook_id(delivery_id: UUID) -> str:
    """The `webhook-id` of a delivery: `msg_` + the hex of its id."""
    return "msg_" + delivery_id.hex


def encode(payload: Mapping[str, Any]) -> str:
    """The exact body sent and signed: compact, key-sorted, ASCII-only JSON (deterministic)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=True)


def secrets_in_force(
    secret: str, previous: str | None, previous_expires_at: datetime | None, now: datetime
) -> tuple[str, ...]:
    """The secrets that sign at `now`: the current one, and the previous one until it expires."""
    if previous and previous_expires_at is not None and now < previous_expires_at:
        return (secret, previous)
    return (secret,)


def signature(msg_id: str, timestamp: int, body: str, keys: Sequence[str]) -> str:
    """`webhook-signature`: `v1,<sig>` per secret, space-separated."""
    if not keys:
        raise ValueError("at least one secret signs a webhook")
    at = datetime.fromtimestamp(timestamp, UTC)
    return " ".join(Webhook(key).sign(msg_id=msg_id, timestamp=at, data=body) for key in keys)


def headers(msg_id: str, timestamp: int, body: str, keys: Sequence[str]) -> dict[str, str]:
    """Every header of one delivery attempt; `timestamp` is the attempt's time (Unix seconds)."""
    return {
        "content-type": CONTENT_TYPE,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(msg_id, timestamp, body, keys),
    }
