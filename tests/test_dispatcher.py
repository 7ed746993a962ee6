"""The dispatcher in-process: real PostgreSQL, the simulator over HTTP, the real SDKs, run_once."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY

from dispatcher.outbox import Outbox
from dispatcher.runner import gather_first
from dispatcher.service import RunStats
from shared.config import Settings
from shared.providers.base import SendRequest
from shared.providers.registry import close_providers, open_providers
from shared.retry import RetryPolicy
from tests.dispatch_support import (
    AlertReceiver,
    enqueue_messages,
    later,
    outbox_rows,
    recipients,
    running,
    statuses,
)
from tests.fixtures_sim import SIM_SIGNALWIRE_NUMBER, SIM_TWILIO_NUMBER, SimHandle

SECRET = "alert-secret"


def run(settings: Settings, *nows: datetime | None, **kw: Any) -> list[RunStats]:
    """One run_once per clock reading, on one Dispatcher."""

    async def go() -> list[RunStats]:
        async with httpx.AsyncClient() as http, running(settings, http=http, **kw) as d:
            return [await d.run_once(now) for now in nows]

    return asyncio.run(go())


@pytest.fixture
def receiver() -> Iterator[AlertReceiver]:
    r = AlertReceiver(SECRET)
    yield r
    r.close()


def with_alerts(settings: Settings, receiver: AlertReceiver) -> Settings:
    return dataclasses.replace(
        settings, alert_webhook_url=receiver.url, alert_webhook_secret=SECRET
    )


@pytest.mark.parametrize(
    ("provider", "sender"), [("twilio", SIM_TWILIO_NUMBER), ("signalwire", SIM_SIGNALWIRE_NUMBER)]
)
def test_success_on_each_provider(
    provider: str,
    sender: str,
    sim: SimHandle,
    sim_settings: Settings,
    db_url: str,
    db: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An accepted send makes the message queued with the provider's sid and leaves the outbox."""
    ids = enqueue_messages(db_url, recipients(3), from_number=sender, provider=provider)
    caplog.set_level(logging.INFO, logger="dispatcher")
    sent_before = REGISTRY.get_sample_value("sms_sent_total", {"provider": provider}) or 0.0
    (stats,) = run(sim_settings, None)
    assert REGISTRY.get_sample_value("sms_sent_total", {"provider": provider}) == sent_before + 3
    assert (stats.claimed, stats.sent) == (3, 3)
    at_sim = {m["sid"]: m for m in sim.messages()}
    for status, category, code, attempts, sid in statuses(db, ids).values():
        assert (status, category, code, attempts) == ("queued", None, None, 1)
        assert at_sim[sid]["provider"] == provider and at_sim[sid]["accepted_count"] == 1
    assert outbox_rows(db) == []
    kinds = db.execute(
        "SELECT event_type, count(*) FROM sms_message_events WHERE message_id = ANY(%s)"
        " GROUP BY 1 ORDER BY 1",
        (ids,),
    ).fetchall()
    assert kinds == [
        ("attempt_result", 3),
        ("attempt_started", 3),
        ("transition", 3),
    ]
    submitted = [r for r in caplog.records if getattr(r, "action", None) == "submitted"]
    assert sorted(r.sid for r in submitted) == sorted(at_sim)  # type: ignore[attr-defined]
    assert all("+1415" not in str(r.__dict__) for r in submitted)  # recipients are masked


def test_the_dispatcher_keeps_how_long_its_provider_calls_take(
    sim: SimHandle, sim_settings: Settings, db_url: str
) -> None:
    """A provider that answers after 150 ms makes the claim loop claim free slots at once rather
    than wait for company (dispatcher.runner.gather_first)."""
    enqueue_messages(db_url, recipients(2))
    sim.configure(latency=0.15)

    async def go() -> float | None:
        async with running(sim_settings) as d:
            assert d.mean_call_seconds is None
            assert (await d.run_once()).sent == 2
            return d.mean_call_seconds

    mean = asyncio.run(go())
    assert mean is not None and mean >= 0.15
    assert not gather_first(1, 16, mean)


@pytest.mark.parametrize(
    ("field", "number", "status", "category", "code", "attempts"),
    [
        ("to", "+15005550001", "failed", "permanent", "21211", 1),
        ("to", "+15005550002", "failed", "permanent", "21612", 1),
        ("to", "+15005550003", "failed", "permanent", "21408", 1),
        ("to", "+15005550004", "failed", "permanent", "21610", 1),
        ("to", "+15005550009", "failed", "permanent", "21614", 1),
        ("from", "+15005550001", "pending", "config", "21212", 0),
        ("from", "+15005550007", "pending", "config", "21606", 0),
        ("from", "+15005550008", "pending", "retryable", "21611", 1),
    ],
)
def test_each_test_number_ends_in_its_status_and_category(
    field: str,
    number: str,
    status: str,
    category: str,
    code: str,
    attempts: int,
    sim: SimHandle,
    sim_settings: Settings,
    db_url: str,
    db: psycopg.Connection[Any],
) -> None:
    """Twilio test numbers: permanent fails at once, config keeps attempts, retryable waits."""
    to, sender = (number, SIM_TWILIO_NUMBER) if field == "to" else ("+14155550100", number)
    (mid,) = enqueue_messages(db_url, [to], from_number=sender)
    run(sim_settings, None)
    (got,) = statuses(db, [mid]).values()
    assert got[0] == status and got[3] == attempts
    if status == "failed":
        assert got[1:3] == (category, code)
        assert outbox_rows(db) == []
        alerts = db.execute("SELECT kind, delivery_state, error_code FROM sms_alerts").fetchall()
        assert alerts == [("message_failed", "not_configured", code)]
    else:
        (row,) = outbox_rows(db)
        assert (row["state"], row["last_error_category"], row["last_error_code"]) == (
            "ready",
            category,
            code,
        )
        assert row["attempts"] == attempts
    assert sim.messages() == []


def test_fixed_policy_four_attempts_25s_apart_then_failed_and_one_signed_alert(
    sim: SimHandle,
    sim_settings: Settings,
    db_url: str,
    db: psycopg.Connection[Any],
    receiver: AlertReceiver,
) -> None:
    """Under 429s: attempts at t0, +25, +50, +75 s, then failed and one alert with a valid HMAC."""
    sim.configure(rate_limit_rate=1.0, retry_after=1.0)
    (mid,) = enqueue_messages(db_url, ["+14155550123"])
    t0 = later(db)
    at = [t0 + timedelta(seconds=s) for s in (0, 24.9, 25, 49.9, 50, 75, 75)]
    stats = run(with_alerts(sim_settings, receiver), *at)
    assert [s.claimed for s in stats] == [1, 0, 1, 0, 1, 1, 1]
    assert [s.rescheduled for s in stats] == [1, 0, 1, 0, 1, 0, 0]
    assert stats[5].failed == 1 and stats[6].alerts_delivered == 1
    started = db.execute(
        "SELECT occurred_at FROM sms_message_events WHERE message_id = %s"
        " AND event_type = 'attempt_started' ORDER BY id",
        (mid,),
    ).fetchall()
    assert [r[0] for r in started] == [t0 + timedelta(seconds=s) for s in (0, 25, 50, 75)]
    (got,) = statuses(db, [mid]).values()
    assert got[:4] == ("failed", "retryable", "20429", 4)  # Twilio: Too Many Requests
    assert db.execute("SELECT kind, delivery_state FROM sms_alerts").fetchall() == [
        ("message_failed", "delivered")
    ]
    assert receiver.refused == []
    (alert,) = receiver.accepted
    assert alert["message_id"] == str(mid) and alert["kind"] == "message_failed"
    assert alert["to"] == "+1******0123" and alert["from"] == SIM_TWILIO_NUMBER
    assert alert["attempts"] == 4 and alert["error"]["category"] == "retryable"
    assert {"alert_id", "conversation_id", "created_at"} <= alert.keys()
    assert outbox_rows(db) == []


def test_alert_delivery_is_retried_until_the_webhook_takes_it(
    sim: SimHandle,
    sim_settings: Settings,
    db_url: str,
    db: psycopg.Connection[Any],
    receiver: AlertReceiver,
) -> None:
    """A webhook answering 500 gets the alert again on the retry policy, signed each time."""
    receiver.fail_first = 1
    enqueue_messages(db_url, ["+15005550001"])
    t0 = later(db)
    stats = run(with_alerts(sim_settings, receiver), t0, t0, t0 + timedelta(seconds=25))
    assert [s.failed for s in stats] == [1, 0, 0]
    assert stats[1].alerts_rescheduled == 1 and stats[2].alerts_delivered == 1
    assert receiver.refused == ["told to fail"] and len(receiver.accepted) == 1
    assert receiver.accepted[0]["error"] == {
        "code": "21211",
        "category": "permanent",
        "message": "invalid 'To' number",
    }


@pytest.mark.parametrize("retry_after", [0.5, 100.0])
def test_exponential_delays_stay_in_bounds_and_honour_retry_after(
    retry_after: float,
    sim: SimHandle,
    sim_settings: Settings,
    db_url: str,
    db: psycopg.Connection[Any],
) -> None:
    """Exponential backoff waits within [0, min(cap, base*2^(n-1))], or Retry-After when longer."""
    settings = dataclasses.replace(
        sim_settings,
        retry_policy="exponential",
        retry_base_seconds=4.0,
        retry_factor=2.0,
        retry_cap_seconds=10.0,
        retry_max_attempts=4,
    )
    policy = RetryPolicy.from_settings(settings)
    sim.configure(rate_limit_rate=1.0, retry_after=retry_after)
    (mid,) = enqueue_messages(db_url, ["+14155550123"])
    clock = later(db)
    rands = iter([0.99, 0.5, 0.01])
    delays = []
    for attempt in (1, 2, 3):
        run(settings, clock, rand=lambda: next(rands))
        (row,) = outbox_rows(db)
        assert row["attempts"] == attempt
        delays.append((row["next_attempt_at"] - clock).total_seconds())
        clock = row["next_attempt_at"]
    ceilings = [min(policy.cap_seconds, 4.0 * 2 ** (n - 1)) for n in (1, 2, 3)]
    for delay, ceiling, rand in zip(delays, ceilings, (0.99, 0.5, 0.01), strict=True):
        assert delay == pytest.approx(max(rand * ceiling, retry_after), abs=1e-3)
        assert 0 <= delay <= max(ceiling, retry_after)
    run(settings, clock)
    assert statuses(db, [mid])[mid][:2] == ("failed", "retryable")


def test_bad_credentials_keep_messages_pending_and_alert_the_operator_once(
    sim: SimHandle,
    sim_settings: Settings,
    db_url: str,
    db: psycopg.Connection[Any],
) -> None:
    """A 401 pauses the provider: messages stay pending with 0 attempts, one operator alert."""
    settings = dataclasses.replace(sim_settings, twilio_auth_token="wrong-token")
    ids = enqueue_messages(db_url, recipients(5))
    t0 = later(db)
    stats = run(settings, t0, t0 + timedelta(seconds=10), t0 + timedelta(seconds=31))
    assert [(s.claimed, s.config) for s in stats] == [(5, 5), (0, 0), (5, 5)]
    for status, _, _, attempts, sid in statuses(db, ids).values():
        assert (status, attempts, sid) == ("pending", 0, None)
    assert {(r["state"], r["attempts"]) for r in outbox_rows(db)} == {("ready", 0)}
    alerts = db.execute("SELECT kind, provider, error_category FROM sms_alerts").fetchall()
    assert alerts == [("provider_config", "twilio", "config")]
    pause = db.execute("SELECT failures, paused_until FROM sms_provider_pauses").fetchone()
    assert pause == (2, t0 + timedelta(seconds=31 + 60))  # doubled after the first pause ran out
    assert sim.messages() == []
    # Fixed credentials: the next claim after the pause sends everything and ends the pause.
    run(sim_settings, t0 + timedelta(seconds=92))
    assert {s[0] for s in statuses(db, ids).values()} == {"queued"}
    assert db.execute("SELECT count(*) FROM sms_provider_pauses").fetchone() == (0,)


def test_canceled_message_leaves_the_outbox_unsent(
    sim: SimHandle, sim_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """Work whose message is no longer pending when claimed is dropped without a provider call."""
    (mid,) = enqueue_messages(db_url, ["+14155550123"])
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'canceled', final_at = now() WHERE id = %s",
        (mid,),
    )
    (stats,) = run(sim_settings, None)
    assert (stats.claimed, stats.dropped, stats.sent) == (1, 1, 0)
    assert outbox_rows(db) == [] and sim.messages() == []


def test_accept_then_hang_never_duplicates_and_every_message_ends(
    sim: SimHandle, sim_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """With 10% of sends accepted then left hanging, reconciliation adopts them: no resend."""
    settings = dataclasses.replace(sim_settings, provider_timeout_seconds=1.0)
    sim.configure(hang_rate=0.1, seed=7)
    ids = enqueue_messages(db_url, recipients(60))
    t0 = later(db)
    stats = run(settings, *(t0 + timedelta(seconds=30 * i) for i in range(4)))
    assert stats[0].rescheduled > 0  # some sends hung and timed out
    assert sum(s.reconciled for s in stats) == stats[0].rescheduled
    assert outbox_rows(db) == []
    at_sim = sim.messages()
    assert len(at_sim) == 60 and {m["accepted_count"] for m in at_sim} == {1}
    assert len({(m["to"], m["body"]) for m in at_sim}) == 60
    sids = {m["sid"] for m in at_sim}
    for status, _, _, _, sid in statuses(db, ids).values():
        assert status == "queued" and sid in sids


@pytest.mark.parametrize("reached_provider", [True, False])
def test_rescued_lease_is_reconciled_before_any_resend(
    reached_provider: bool,
    sim: SimHandle,
    sim_settings: Settings,
    db_url: str,
    db: psycopg.Connection[Any],
) -> None:
    """A dispatcher that died mid-attempt: its rescuer adopts the sent message or sends it once."""
    (mid,) = enqueue_messages(db_url, ["+14155550123"], body="crash")
    t0 = later(db)

    async def die_mid_attempt() -> None:
        async with running(sim_settings, owner="dead:1:x") as d:
            outbox: Outbox = d.outbox
            (work,) = await outbox.claim(1, now=t0)
            assert await outbox.start([work], now=t0) == {work.id}
            if reached_provider:
                providers = await open_providers(sim_settings)
                assert work.to_number and work.body
                await providers["twilio"].send(
                    SendRequest(mid, SIM_TWILIO_NUMBER, work.to_number, work.body, "")
                )
                await close_providers(providers)

    asyncio.run(die_mid_attempt())
    rescue = t0 + timedelta(seconds=sim_settings.dispatch_lease_seconds + 1)
    look_again = rescue + timedelta(seconds=sim_settings.reconcile_settle_seconds + 1)
    first, second = run(sim_settings, rescue, look_again)
    if reached_provider:
        assert (first.reconciled, first.sent, second.claimed) == (1, 0, 0)
    else:
        # Not found once is not enough: a second lookup, a settle window later, must miss too.
        assert (first.awaiting, first.sent, second.reconciled, second.sent) == (1, 0, 0, 1)
    (only,) = sim.messages()
    assert statuses(db, [mid])[mid][0] == "queued"
    assert statuses(db, [mid])[mid][4] == only["sid"]
    assert outbox_rows(db) == []
