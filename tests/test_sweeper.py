"""dispatcher.sweeper.sweep_once: messages whose callbacks never came, checked at the simulator."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from dispatcher.sweeper import sweep_once
from shared.config import Settings
from shared.db import open_pool
from shared.providers.base import SendRequest
from shared.providers.registry import close_providers, open_providers
from tests.fixtures_sim import SIM_SIGNALWIRE_NUMBER, SIM_TWILIO_NUMBER, CallbackListener, SimHandle
from tests.status_support import events, insert_message, message

SENDERS = {"twilio": SIM_TWILIO_NUMBER, "signalwire": SIM_SIGNALWIRE_NUMBER}


def send_at_sim(settings: Settings, provider: str, message_id: uuid.UUID, to: str) -> str:
    """Submit a message through the real provider client, as the dispatcher does; its sid."""

    async def run() -> str:
        providers = await open_providers(settings)
        try:
            client: Any = providers[provider]  # callback_url() is each client's own
            url = client.callback_url(message_id) if provider == "twilio" else client.callback_url()
            request = SendRequest(message_id, SENDERS[provider], to, "hello", str(url))
            return (await providers[provider].send(request)).sid
        finally:
            await close_providers(providers)

    return asyncio.run(run())


def accepted(db: psycopg.Connection[Any], settings: Settings, provider: str, to: str) -> uuid.UUID:
    """A message sent to the simulator and recorded as queued with its sid (dispatcher's part)."""
    mid = insert_message(db, provider=provider, from_number=SENDERS[provider], to_number=to)
    sid = send_at_sim(settings, provider, mid, to)
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'queued', provider_sid = %s,"
        " submitted_at = now() WHERE id = %s",
        (sid, mid),
    )
    return mid


def wait_final_at_sim(sim: SimHandle, count: int) -> None:
    """Bounded wait until the simulator's own record of `count` messages is final."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = sim.messages()
        final = [r for r in rows if r["status"] in ("delivered", "undelivered", "failed")]
        if len(final) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"simulator did not finish: {sim.messages()}")


def due(db: psycopg.Connection[Any], settings: Settings) -> datetime:
    """A clock just past STATUS_SWEEP_AFTER_SECONDS from the database's now."""
    row = db.execute("SELECT now()").fetchone()
    assert row is not None
    db_now: datetime = row[0]
    return db_now + timedelta(seconds=settings.status_sweep_after_seconds + 1)


def sweep(
    settings: Settings, *, now: datetime | None, limit: int = 100, sweepers: int = 1
) -> list[int]:
    """Run `sweepers` sweep_once calls at the same time, each with its own pool (a dispatcher)."""

    async def one() -> int:
        pool = await open_pool(settings.database_url, application_name="sweeper-test", min_size=1)
        providers = await open_providers(settings)
        try:
            return await sweep_once(pool, providers, settings, now=now, limit=limit)
        finally:
            await close_providers(providers)
            await pool.close()

    async def run() -> list[int]:
        return list(await asyncio.gather(*(one() for _ in range(sweepers))))

    return asyncio.run(run())


@pytest.mark.parametrize("provider", ["twilio", "signalwire"])
def test_dropped_callbacks_are_repaired_by_the_sweeper(
    sim: SimHandle,
    sim_settings: Settings,
    callback_listener: CallbackListener,
    db: psycopg.Connection[Any],
    provider: str,
) -> None:
    """A message whose callbacks were all dropped reads delivered after one sweep past the age."""
    sim.configure(callback_drop_rate=1.0)
    mid = accepted(db, sim_settings, provider, "+14155550123")
    wait_final_at_sim(sim, 1)
    assert callback_listener.requests == []
    assert sweep(sim_settings, now=due(db, sim_settings)) == [1]
    row = message(db, mid)
    assert row["delivery_status"] == "delivered"
    assert row["final_at"] is not None
    assert [e["to_status"] for e in events(db, mid, "sweep")] == ["delivered"]
    assert [(e["from_status"], e["to_status"]) for e in events(db, mid, "transition")] == [
        ("queued", "delivered")
    ]


def test_failure_found_by_sweep_stores_error_and_alerts(
    sim: SimHandle, sim_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """A delivery failure learnt by the sweeper is stored with its code and alerts once."""
    sim.configure(callback_drop_rate=1.0)
    mid = accepted(db, sim_settings, "twilio", "+15005550013")  # the simulator fails it: 30006
    wait_final_at_sim(sim, 1)
    sweep(sim_settings, now=due(db, sim_settings))
    row = message(db, mid)
    assert (row["delivery_status"], row["error_code"], row["error_category"]) == (
        "failed",
        "30006",
        "delivery",
    )
    assert db.execute(
        "SELECT count(*) FROM sms_alerts WHERE message_id = %s", (mid,)
    ).fetchone() == (1,)


def test_young_messages_are_left_alone(
    sim: SimHandle, sim_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """A message submitted less than STATUS_SWEEP_AFTER_SECONDS ago is not asked about."""
    sim.configure(callback_drop_rate=1.0)
    mid = accepted(db, sim_settings, "twilio", "+14155550123")
    assert sweep(sim_settings, now=None) == [0]
    assert message(db, mid)["delivery_status"] == "queued"
    assert message(db, mid)["status_checked_at"] is None


def test_a_checked_message_waits_for_the_next_interval(
    sim: SimHandle, sim_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """A message just checked (still 'sent' at the provider) is not asked about again at once."""
    sim.configure(callback_drop_rate=1.0)
    mid = insert_message(db, status="sent", sid="SM" + "0" * 32)  # unknown at the simulator
    now = due(db, sim_settings)
    assert sweep(sim_settings, now=now) == [1]  # the lookup fails; logged, nothing changes
    assert message(db, mid)["delivery_status"] == "sent"
    assert sweep(sim_settings, now=now) == [0]
    later = now + timedelta(seconds=sim_settings.status_sweep_after_seconds + 1)
    assert sweep(sim_settings, now=later) == [1]


def test_messages_past_the_max_age_are_left_alone(
    sim_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Past STATUS_SWEEP_MAX_AGE_SECONDS a message never finalized is no longer asked about."""
    short = dataclasses.replace(sim_settings, status_sweep_max_age_seconds=3600)
    insert_message(db, status="sent", sid="SM" + "0" * 32, submitted_ago_seconds=7200)
    assert sweep(short, now=None) == [0]


def test_two_sweepers_never_check_the_same_message(
    sim: SimHandle, sim_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Two dispatchers sweeping at once split the stale messages, none checked twice."""
    sim.configure(callback_drop_rate=1.0)
    mids = [accepted(db, sim_settings, "twilio", f"+1415555{i:04d}") for i in range(6)]
    wait_final_at_sim(sim, len(mids))
    claimed = sweep(sim_settings, now=due(db, sim_settings), sweepers=2)
    assert sum(claimed) == len(mids)
    for mid in mids:
        assert message(db, mid)["delivery_status"] == "delivered"
        assert len(events(db, mid, "sweep")) == 1
