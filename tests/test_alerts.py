"""Final-failure alerts (shared/alerts.py) and alert signing, against the real database."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import AsyncConnection

from dispatcher import alert_webhook
from shared.alerts import masked_recipient, raise_final_failure
from shared.config import Settings
from tests.dispatch_support import enqueue_messages, outbox_rows


def fail(settings: Settings, message_id: UUID, times: int = 1) -> None:
    async def go() -> None:
        async with await AsyncConnection.connect(settings.database_url) as conn:
            for _ in range(times):
                async with conn.transaction():
                    await raise_final_failure(
                        conn,
                        message_id,
                        error_code="21610",
                        error_category="permanent",
                        error_message="recipient has opted out",
                        settings=settings,
                    )

    asyncio.run(go())


def alerts(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT kind, message_id, delivery_state, error_code, payload FROM sms_alerts"
    ).fetchall()


def test_final_failure_fails_the_message_and_raises_one_alert(
    settings: Settings, db_url: str, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A pending message becomes failed with code/category/reason; one alert, logged at ERROR."""
    (mid,) = enqueue_messages(db_url, ["+14155550123"])
    caplog.set_level(logging.INFO, logger="shared.alerts")
    fail(settings, mid, times=2)
    row = db.execute(
        "SELECT delivery_status, error_code, error_category, error_message, final_at IS NOT NULL"
        " FROM sms_messages WHERE id = %s",
        (mid,),
    ).fetchone()
    assert row == ("failed", "21610", "permanent", "recipient has opted out", True)
    ((kind, alert_mid, state, code, payload),) = alerts(db)
    assert (kind, alert_mid, state, code) == ("message_failed", mid, "not_configured", "21610")
    assert payload["to"] == "+1******0123" and payload["from"] == "+15005550006"
    assert "body" not in payload
    events = db.execute(
        "SELECT event_type, from_status, to_status FROM sms_message_events"
        " WHERE message_id = %s AND event_type IN ('transition', 'alert') ORDER BY id",
        (mid,),
    ).fetchall()
    assert events == [("transition", "pending", "failed"), ("alert", None, None)]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    record: Any = errors[0]
    assert (record.message_id, record.request_id, record.provider) == (str(mid), "req-0", "twilio")
    assert record.attempts == 0 and record.error_code == "21610"
    assert record.conversation_id == str(payload["conversation_id"])
    assert "+14155550123" not in str(record.__dict__)


def test_final_failure_with_a_webhook_queues_its_delivery(
    settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """With ALERT_WEBHOOK_URL set, the alert is pending and a deliver_alert row is due."""
    (mid,) = enqueue_messages(db_url, ["+14155550123"])
    db.execute("DELETE FROM sms_outbox")
    fail(dataclasses.replace(settings, alert_webhook_url="http://127.0.0.1:9/alerts"), mid)
    ((_, _, state, _, _),) = alerts(db)
    assert state == "pending"
    (row,) = outbox_rows(db)
    assert (row["kind"], row["state"], row["message_id"]) == ("deliver_alert", "ready", None)


@pytest.mark.parametrize(
    ("status", "alerted"), [("undelivered", True), ("delivered", False), ("canceled", False)]
)
def test_final_failure_respects_the_status_a_callback_already_set(
    status: str, alerted: bool, settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """An undelivered message keeps its status and is alerted; delivered/canceled are left alone."""
    (mid,) = enqueue_messages(db_url, ["+14155550123"])
    sid = None if status == "canceled" else "SMx"
    db.execute(
        "UPDATE sms_messages SET delivery_status = %s, provider_sid = %s, final_at = now()"
        " WHERE id = %s",
        (status, sid, mid),
    )
    fail(settings, mid)
    (row,) = db.execute("SELECT delivery_status FROM sms_messages WHERE id = %s", (mid,))
    assert row == (status,)
    assert len(alerts(db)) == (1 if alerted else 0)


def test_masked_recipient_keeps_country_code_and_last_four() -> None:
    """Alert payloads carry the recipient as country code + last 4 digits, whatever the logs do."""
    assert masked_recipient("+14155550123") == "+1******0123"
    assert masked_recipient("+447911123456") == "+44******3456"
    assert masked_recipient("nonsense") == "***"


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    """X-Signature is sha256=<hex HMAC-SHA256 of "{timestamp}.{body}"> with the shared secret."""
    raw = alert_webhook.encode({"b": 1, "a": "x"})
    assert raw == b'{"a":"x","b":1}'
    expected = hmac.new(b"s3cret", b'1700000000.{"a":"x","b":1}', hashlib.sha256).hexdigest()
    assert alert_webhook.sign(raw, 1700000000, "s3cret") == "sha256=" + expected
    assert alert_webhook.verify(raw, "1700000000", "sha256=" + expected, "s3cret")
    assert not alert_webhook.verify(raw, "1700000001", "sha256=" + expected, "s3cret")
    assert not alert_webhook.verify(raw, "x", "sha256=" + expected, "s3cret")
