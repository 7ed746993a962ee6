"""Alert delivery to ALERT_WEBHOOK_URL: signed JSON POSTs (at least once: dedupe on alert_id)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from shared.errors import SmsOutboxError

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Signature-Timestamp"


class AlertDeliveryError(SmsOutboxError):
    """The webhook did not take the alert (network error or non-2xx answer)."""


def encode(body: Mapping[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact, key-sorted JSON."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True, default=str).encode()


def sign(raw_body: bytes, timestamp: int, secret: str) -> str:
    """`sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">`, the X-Signature header value."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw_body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(raw_body: bytes, timestamp: str, signature: str, secret: str) -> bool:
    """Whether `signature` signs `raw_body` at `timestamp` (what a receiver checks)."""
    try:
        expected = sign(raw_body, int(timestamp), secret)
    except ValueError:
        return False
    return hmac.compare_digest(expected, signature)


async def post_alert(
    client: httpx.AsyncClient,
    url: str,
    body: Mapping[str, Any],
    *,
    secret: str,
    within_seconds: float,
    timestamp: int | None = None,
) -> int:
    """POST one alert; its HTTP status on 2xx, AlertDeliveryError otherwise."""
    raw = encode(body)
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign(raw, ts, secret),
    }
    try:
        response = await client.post(url, content=raw, headers=headers, timeout=within_seconds)
    except httpx.HTTPError as e:
        raise AlertDeliveryError(f"alert webhook unreachable: {type(e).__name__}") from e
    if not 200 <= response.status_code < 300:
        raise AlertDeliveryError(f"alert webhook answered {response.status_code}")
    return response.status_code
