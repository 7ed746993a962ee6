"""GET /metrics on a live API: the counts equal what the test made happen; queue gauges are live."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

from shared import metrics
from tests.api_support import (  # noqa: F401 - fixtures are used by name
    TO,
    api_key_fixture,
    app_fixture,
    auth_fixture,
    client_fixture,
    live_fixture,
)

TOKEN = "test-auth-token"  # the conftest settings' Twilio token
FORM = "application/x-www-form-urlencoded"


def _scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def _callback(client: httpx.Client, message_id: str, status: str, *, sign: bool = True) -> int:
    query = urlencode({"message_id": message_id})
    params = {"MessageSid": "SM" + "a" * 32, "MessageStatus": status, "AccountSid": "AC" + "0" * 32}
    url = f"http://testserver/webhook/twilio/status?{query}"
    signature = RequestValidator(TOKEN).compute_signature(url, params) if sign else "bogus"
    r = client.post(
        f"/webhook/twilio/status?{query}",
        content=urlencode(params),
        headers={"Content-Type": FORM, "X-Twilio-Signature": signature},
    )
    return r.status_code


def _get(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_count_what_happened(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Accepted sends, applied callbacks by status and bad signatures are counted exactly."""
    before = _scrape(client)
    ids = [
        client.post("/sms/send", json={"to": TO, "body": f"m{i}"}, headers=auth).json()["id"]
        for i in range(3)
    ]
    replay = {**auth, "Idempotency-Key": "k1"}
    for _ in range(2):  # the replay is not a new message
        assert client.post("/sms/send", json={"to": TO, "body": "k"}, headers=replay).status_code
    assert _callback(client, ids[0], "queued") == 204
    assert _callback(client, ids[0], "delivered") == 204
    assert _callback(client, ids[0], "delivered") == 204  # duplicate: recorded once
    assert _callback(client, ids[1], "queued", sign=False) == 403
    after = _scrape(client)
    assert _get(before, after, "sms_messages_accepted_total", provider="twilio") == 4
    assert _get(before, after, "sms_callbacks_total", provider="twilio", status="queued") == 1
    assert _get(before, after, "sms_callbacks_total", provider="twilio", status="delivered") == 1
    assert _get(before, after, "sms_callback_signature_failures_total", provider="twilio") == 1
    assert _get(before, after, "sms_callback_lag_seconds_count", provider="twilio") == 2
    # Queue gauges come from the database at scrape time: 3 pending sends (the delivered one's
    # outbox row is still there, the dispatcher is not running) plus the idempotent one.
    assert after[("sms_outbox_depth", (("kind", "send_sms"), ("state", "ready")))] == 4
    assert after[("sms_outbox_due", (("kind", "send_sms"),))] == 4
    assert after[("sms_outbox_oldest_due_seconds", (("kind", "send_sms"),))] >= 0
    db.execute("DELETE FROM sms_outbox")
    emptied = _scrape(client)
    assert emptied[("sms_outbox_depth", (("kind", "send_sms"), ("state", "ready")))] == 0


def test_dispatcher_metrics_are_defined() -> None:
    """The dispatcher's metric objects exist with the labels the lead wires them with."""
    metrics.SENT.labels("twilio")
    metrics.FAILED.labels("twilio", "permanent")
    metrics.RETRIES.labels("signalwire", "retryable")
    metrics.AMBIGUOUS.labels("twilio")
    metrics.RECONCILIATIONS.labels("twilio", "adopted")
    metrics.SEND_LATENCY.labels("twilio", "sent").observe(0.1)
    text = metrics.exposition().decode()
    for name in (
        "sms_sent_total",
        "sms_failed_total",
        "sms_retries_total",
        "sms_ambiguous_attempts_total",
        "sms_reconciliations_total",
        "sms_send_duration_seconds_bucket",
    ):
        assert name in text
