"""Alert delivery to ALERT_WEBHOOK_URL: signed JSON POSTs (at least once: dedupe on alert_id)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

import httpx

from dispatcher.outbox import Outbox, Work
from shared.config import Settings
from shared.errors import SmsOutboxError
from shared.retry import RetryPolicy, next_attempt_at

log = logging.getLogger(__name__)

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


async def deliver(
    work: Work,
    *,
    outbox: Outbox,
    http: httpx.AsyncClient | None,
    settings: Settings,
    policy: RetryPolicy,
    rand: Callable[[], float],
    now: datetime | None,
) -> Literal["delivered", "failed", "rescheduled", "not_delivered"]:
    """POST one claimed alert to ALERT_WEBHOOK_URL; retried by the policy, then given up."""
    alert = await outbox.alert_body(work)
    url = settings.alert_webhook_url
    if alert is None or alert["delivery_state"] != "pending" or not url or http is None:
        state = "not_configured" if alert is not None else "failed"
        await outbox.finish_alert(work, delivery_state=state, now=now)
        return "not_delivered"
    try:
        await post_alert(
            http,
            url,
            alert["body"],
            secret=settings.alert_webhook_secret,
            within_seconds=settings.provider_timeout_seconds,
        )
    except AlertDeliveryError as e:
        nxt = next_attempt_at(work.claimed_at, work.attempt, policy, retry_after=None, rand=rand())
        log.warning(
            "alert delivery failed",
            extra={
                "action": "alert_failed",
                "alert_id": work.alert_id,
                "error": str(e),
                "attempt": work.attempt,
                "gave_up": nxt is None,
            },
        )
        if nxt is None:
            await outbox.finish_alert(work, delivery_state="failed", now=now)
            return "failed"
        await outbox.reschedule(
            work,
            delay_seconds=(nxt - work.claimed_at).total_seconds(),
            unresolved=False,
            error_code=None,
            error_category="retryable",
            error_message=str(e),
            now=now,
        )
        return "rescheduled"
    if not await outbox.finish_alert(work, delivery_state="delivered", now=now):
        return "not_delivered"  # the lease was lost meanwhile: the new holder records it
    log.info("alert delivered", extra={"action": "alert_delivered", "alert_id": work.alert_id})
    return "delivered"
