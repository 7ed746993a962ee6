"""Pace per sender, priority, scheduled sends, validity and quiet hours (issue 12), on the injected
clock: the claim statement on real PostgreSQL, and the dispatcher through the real SDKs and the
simulator. No sleeps: every time is a `now` passed in."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.rows import dict_row

from dispatcher.expiry import Expiry
from dispatcher.outbox import Outbox, claim_params
from shared.config import Settings
from shared.db import open_pool
from shared.queries import q
from shared.quiet import QuietHours
from tests.dispatch_support import (
    TWILIO_FROM,
    db_now,
    enqueue_bulk,
    enqueue_messages,
    ensure_sender,
    env_for,
    recipients,
    running,
    start_dispatcher,
    statuses,
    stop_all,
    wait_until,
)
from tests.fixtures_sim import SIM_TWILIO_NUMBER, CallbackListener, SimHandle

OTHER = "+15005550009"


def claim(db: psycopg.Connection[Any], now: datetime, *, limit: int = 100) -> list[dict[str, Any]]:
    """One claim statement, committed (db is autocommit)."""
    with db.cursor(row_factory=dict_row) as cur:
        cur.execute(
            q("outbox_claim_due"),
            claim_params("t", limit, 600.0, now=now),
        )
        return cur.fetchall()


def set_rate(db: psycopg.Connection[Any], number: str, mps: float, burst: int) -> None:
    ensure_sender(db, number, mps=mps)
    db.execute(
        "UPDATE sms_senders SET mps = %s, burst = %s WHERE phone_number = %s", (mps, burst, number)
    )


def at(base: datetime, seconds: float) -> datetime:
    return base + timedelta(seconds=seconds)


# -- the allowance -----------------------------------------------------------------------------


def test_a_sender_is_claimed_at_its_pace_and_burst(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """2 mps, burst 2: two at once, none more in the same instant, one per half second after."""
    set_rate(db, TWILIO_FROM, 2, 2)
    enqueue_messages(db_url, recipients(10))
    t0 = at(db_now(db), 1)
    assert len(claim(db, t0)) == 2
    assert claim(db, t0) == []
    assert claim(db, at(t0, 0.49)) == []
    assert len(claim(db, at(t0, 0.5))) == 1
    assert len(claim(db, at(t0, 1.0))) == 1
    # Idle for long: the allowance is capped at the burst, not what the idle time would pay for.
    assert len(claim(db, at(t0, 60))) == 2


def test_racing_claimers_never_exceed_the_pace_together(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """Eight threads claiming at one instant against a 3-mps, burst-3 sender take 3 between them."""
    set_rate(db, TWILIO_FROM, 3, 3)
    enqueue_messages(db_url, recipients(30))
    t0 = at(db_now(db), 1)
    got: list[int] = []
    start = threading.Barrier(8)

    def worker() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            start.wait()
            for _ in range(5):
                got.extend(r["id"] for r in claim(conn, t0))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(got) == 3 and len(set(got)) == 3


def test_a_message_costs_its_segments(db_url: str, db: psycopg.Connection[Any]) -> None:
    """Two-segment messages at 2 mps, burst 2: one per claim, the next after a whole second."""
    set_rate(db, TWILIO_FROM, 2, 2)
    enqueue_messages(db_url, recipients(4), body="x" * 200)  # 200 GSM-7 characters: 2 segments
    t0 = at(db_now(db), 1)
    assert len(claim(db, t0)) == 1
    assert claim(db, at(t0, 0.9)) == []
    assert len(claim(db, at(t0, 1.0))) == 1


def test_a_message_larger_than_the_burst_goes_once_the_sender_is_idle(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """A 3-segment message on a 1-mps, burst-1 sender is sent when the sender is idle, and the
    sender then waits the 3 s it paid for."""
    set_rate(db, TWILIO_FROM, 1, 1)
    enqueue_messages(db_url, recipients(2), body="x" * 400)  # 3 segments
    t0 = at(db_now(db), 1)
    assert len(claim(db, t0)) == 1
    assert claim(db, at(t0, 2.9)) == []
    assert len(claim(db, at(t0, 3.0))) == 1


def test_a_deep_backlog_does_not_hold_up_another_sender(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """500 messages waiting on a 1-mps sender: the other sender's work is claimed at once."""
    set_rate(db, TWILIO_FROM, 1, 1)
    enqueue_messages(db_url, recipients(500))
    set_rate(db, OTHER, 100, 100)
    enqueue_messages(db_url, recipients(5, start=1000), from_number=OTHER)
    t0 = at(db_now(db), 1)
    rows = claim(db, t0, limit=10)
    by_sender: dict[str, int] = {}
    for r in rows:
        by_sender[r["from_number"]] = by_sender.get(r["from_number"], 0) + 1
    assert by_sender == {TWILIO_FROM: 1, OTHER: 5}


def test_the_dispatcher_sleeps_until_the_next_allowance(
    settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """After a short claim the dispatcher asks how long until a sender with due work may send:
    nothing due -> None (sleep the poll interval); a 2-mps sender just spent -> half a second."""
    set_rate(db, TWILIO_FROM, 2, 1)
    t0 = at(db_now(db), 1)

    async def wait(now: datetime) -> float | None:
        pool = await open_pool(
            settings.database_url, application_name="test-pace", min_size=1, max_size=2
        )
        try:
            return await Outbox(pool, "t", settings).pace_wait(now=now)
        finally:
            await pool.close()

    assert asyncio.run(wait(t0)) is None
    enqueue_messages(db_url, recipients(3))
    assert asyncio.run(wait(t0)) == 0.0
    assert len(claim(db, t0)) == 1
    assert asyncio.run(wait(t0)) == pytest.approx(0.5)


def test_a_paused_provider_spends_no_pace(db_url: str, db: psycopg.Connection[Any]) -> None:
    """While the sender's provider is paused nothing is claimed and its pace clock stays put."""
    set_rate(db, TWILIO_FROM, 1, 1)
    enqueue_messages(db_url, recipients(3))
    t0 = at(db_now(db), 1)
    db.execute(
        "INSERT INTO sms_provider_pauses (provider, paused_until, reason) VALUES"
        " ('twilio', %s, 'test')",
        (at(t0, 10),),
    )
    assert claim(db, t0) == []
    row = db.execute(
        "SELECT pace_tat = '-infinity' FROM sms_senders WHERE phone_number = %s", (TWILIO_FROM,)
    ).fetchone()
    assert row == (True,)


# -- priority and schedule ---------------------------------------------------------------------


def test_higher_priority_goes_first_within_a_senders_pace(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """Low, then normal, then high enqueued: the claims take high, normal, low."""
    set_rate(db, TWILIO_FROM, 1, 1)
    low = enqueue_messages(db_url, recipients(3), priority="low")
    normal = enqueue_messages(db_url, recipients(1, start=10), priority="normal")
    high = enqueue_messages(db_url, recipients(1, start=20), priority="high")
    t0 = at(db_now(db), 1)
    order = [claim(db, at(t0, s))[0]["message_id"] for s in (0, 1, 2)]
    assert order == [high[0], normal[0], low[0]]


def test_a_scheduled_message_waits_for_send_at(db_url: str, db: psycopg.Connection[Any]) -> None:
    """send_at an hour ahead: not claimed before it, claimed at it; cancel works until then."""
    now = db_now(db)
    ids = enqueue_messages(db_url, recipients(2), send_at=at(now, 3600))
    assert claim(db, at(now, 3599)) == []
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'canceled', final_at = now() WHERE id = %s",
        (ids[1],),
    )
    assert {r["message_id"] for r in claim(db, at(now, 3600))} == set(ids)


# -- validity ----------------------------------------------------------------------------------


def events(db: psycopg.Connection[Any], message_id: UUID) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT event_type, from_status, to_status FROM sms_message_events"
        " WHERE message_id = %s ORDER BY id",
        (message_id,),
    ).fetchall()


def test_a_message_past_its_validity_at_claim_expires_unsent(
    sim: SimHandle, sim_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """Claimed after expires_at: expired (final), an event and the final-failure alert; the
    provider never sees it and the sender's pace gets its segment back."""
    now = db_now(db)
    (mid,) = enqueue_messages(
        db_url, recipients(1), from_number=SIM_TWILIO_NUMBER, expires_at=at(now, 60)
    )
    set_rate(db, SIM_TWILIO_NUMBER, 1, 1)

    async def go() -> None:
        async with running(sim_settings) as d:
            stats = await d.run_once(now=at(now, 61))
            assert stats.expired == 1

    asyncio.run(go())
    assert statuses(db, [mid])[mid][0] == "expired"
    assert ("transition", "pending", "expired") in events(db, mid)
    assert db.execute(
        "SELECT count(*) FROM sms_alerts WHERE message_id = %s", (mid,)
    ).fetchone() == (1,)
    assert sim.messages() == []
    refunded = db.execute(
        "SELECT pace_tat <= %s FROM sms_senders WHERE phone_number = %s",
        (at(now, 61), SIM_TWILIO_NUMBER),
    ).fetchone()
    assert refunded == (True,)


def test_the_provider_gets_the_remaining_validity(
    sim: SimHandle, sim_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """Twilio's ValidityPeriod carries what is left of the validity at the claim (capped at its
    maximum, 36000 s); a message without a validity sends none."""
    now = db_now(db)
    enqueue_messages(
        db_url, recipients(1), from_number=SIM_TWILIO_NUMBER, expires_at=at(now, 3601.5)
    )
    enqueue_messages(
        db_url, recipients(1, start=1), from_number=SIM_TWILIO_NUMBER, expires_at=at(now, 86400)
    )
    enqueue_messages(db_url, recipients(1, start=2), from_number=SIM_TWILIO_NUMBER)

    async def go() -> None:
        async with running(sim_settings) as d:
            assert (await d.run_once(now=at(now, 1))).sent == 3

    asyncio.run(go())
    by_to = {m["to"]: m["validity_period"] for m in sim.messages()}
    first, second, third = recipients(3)
    assert by_to == {first: 3600, second: 36000, third: None}


def test_no_retry_after_expiry(
    sim: SimHandle, sim_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """A retryable refusal whose retry would come after expires_at expires the message now."""
    sim.configure(rate_limit_rate=1.0)  # 429: refused, known not sent
    settings = dataclasses.replace(sim_settings, retry_delay_seconds=25.0)
    now = db_now(db)
    (mid,) = enqueue_messages(
        db_url, recipients(1), from_number=SIM_TWILIO_NUMBER, expires_at=at(now, 10)
    )

    async def go() -> None:
        async with running(settings) as d:
            assert (await d.run_once(now=at(now, 1))).expired == 1

    asyncio.run(go())
    assert statuses(db, [mid])[mid][0] == "expired"
    assert db.execute("SELECT count(*) FROM sms_outbox").fetchone() == (0,)


def test_the_expiry_sweep_ends_waiting_messages_at_their_expiry(
    settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """A scheduled message whose validity ends before it is due, and one waiting behind a pace,
    are expired by the sweep; one whose attempt may have reached the provider is left to be
    looked up first, and one still valid is left alone."""
    now = db_now(db)
    scheduled, behind, in_doubt, valid = enqueue_messages(
        db_url, recipients(4), expires_at=at(now, 30)
    )
    db.execute(
        "UPDATE sms_outbox SET next_attempt_at = %s WHERE message_id = %s",
        (at(now, 120), scheduled),
    )
    db.execute(
        "UPDATE sms_outbox SET attempt_started_at = %s WHERE message_id = %s", (now, in_doubt)
    )
    db.execute("UPDATE sms_outbox SET expires_at = %s WHERE message_id = %s", (at(now, 300), valid))

    async def go() -> int:
        pool = await open_pool(
            settings.database_url, application_name="test-expiry", min_size=1, max_size=2
        )
        try:
            return await Expiry(pool, settings).run_once(now=at(now, 31))
        finally:
            await pool.close()

    assert asyncio.run(go()) == 2
    got = statuses(db, [scheduled, behind, in_doubt, valid])
    assert [got[m][0] for m in (scheduled, behind, in_doubt, valid)] == [
        "expired",
        "expired",
        "pending",
        "pending",
    ]
    assert ("transition", "pending", "expired") in events(db, scheduled)


# -- quiet hours -------------------------------------------------------------------------------

NEW_YORK = "+12125550123"
SYDNEY = "+61291234567"
QUIET = QuietHours.parse("21:00-08:00")


def next_local(hour: int, zone: str, after: datetime) -> datetime:
    """The first instant after `after` at which it is `hour`:00 in `zone`."""
    local = after.astimezone(ZoneInfo(zone)).replace(minute=0, second=0, microsecond=0)
    local = local.replace(hour=hour)
    while local.astimezone(UTC) <= after:
        local += timedelta(days=1)
    return local.astimezone(UTC)


def test_quiet_hours_hold_a_recipient_at_night_and_not_one_by_day(
    sim: SimHandle, sim_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """At 03:00 in New York (evening in Sydney): the New York message is held until 08:00 New
    York time with a `held` event, attempt and pace returned; the Sydney one and a high-priority
    one to New York are sent."""
    settings = dataclasses.replace(sim_settings, quiet_hours=QUIET)
    night = next_local(3, "America/New_York", db_now(db))
    (held,) = enqueue_messages(db_url, [NEW_YORK], from_number=SIM_TWILIO_NUMBER)
    enqueue_messages(db_url, [SYDNEY], from_number=SIM_TWILIO_NUMBER)
    enqueue_messages(db_url, ["+12125550124"], from_number=SIM_TWILIO_NUMBER, priority="high")

    async def go() -> None:
        async with running(settings) as d:
            stats = await d.run_once(now=night)
            assert (stats.held, stats.sent) == (1, 2)

    asyncio.run(go())
    assert sorted(m["to"] for m in sim.messages()) == sorted([SYDNEY, "+12125550124"])
    release = night + timedelta(hours=5)
    row = db.execute(
        "SELECT state, attempts, next_attempt_at FROM sms_outbox WHERE message_id = %s", (held,)
    ).fetchone()
    assert row == ("ready", 0, release)
    detail = db.execute(
        "SELECT detail->>'release_at' FROM sms_message_events"
        " WHERE message_id = %s AND event_type = 'held'",
        (held,),
    ).fetchone()
    assert detail is not None and datetime.fromisoformat(detail[0]) == release
    assert statuses(db, [held])[held][0] == "pending"

    async def morning() -> None:
        async with running(settings) as d:
            assert (await d.run_once(now=release)).sent == 1

    asyncio.run(morning())
    assert NEW_YORK in {m["to"] for m in sim.messages()}


def test_without_quiet_hours_nothing_is_held(
    sim: SimHandle, sim_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """QUIET_HOURS empty (the default): a New York recipient at 03:00 is sent at once."""
    assert sim_settings.quiet_hours is None
    night = next_local(3, "America/New_York", db_now(db))
    enqueue_messages(db_url, [NEW_YORK], from_number=SIM_TWILIO_NUMBER)

    async def go() -> None:
        async with running(sim_settings) as d:
            assert (await d.run_once(now=night)).sent == 1

    asyncio.run(go())


@pytest.mark.parametrize("priority", ["normal", "low"])
def test_only_high_priority_bypasses_quiet_hours(
    priority: str, sim: SimHandle, sim_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    settings = dataclasses.replace(sim_settings, quiet_hours=QUIET)
    night = next_local(23, "America/New_York", db_now(db))
    enqueue_messages(db_url, [NEW_YORK], from_number=SIM_TWILIO_NUMBER, priority=priority)

    async def go() -> None:
        async with running(settings) as d:
            assert (await d.run_once(now=night)).held == 1

    asyncio.run(go())
    assert sim.messages() == []


# -- several dispatcher processes --------------------------------------------------------------


def test_three_dispatcher_processes_share_one_senders_pace(
    sim: SimHandle,
    db_url: str,
    db: psycopg.Connection[Any],
    callback_listener: CallbackListener,
    tmp_path: Path,
) -> None:
    """Three `python -m dispatcher` processes drain a 5-mps, burst-5 sender for about 20 s.

    Where the pace is kept, at the claim, the bound is exact: the dispatchers' attempts (database
    clock) never hold more than mps + burst segments in any 1-s window, and 100 sends take at
    least the 19 s the pace allows. At the simulator, sends may bunch by how long each request
    took to leave (a cold SDK client under a loaded machine: up to a few hundred ms), so its
    limit here is twice the pace: without pacing, three dispatchers would send hundreds a
    second, and it would refuse them."""
    sim.configure(enforce_mps={SIM_TWILIO_NUMBER: {"mps": 10, "burst": 10}})
    set_rate(db, SIM_TWILIO_NUMBER, 5, 5)
    enqueue_bulk(db, 200, from_number=SIM_TWILIO_NUMBER)
    env = env_for(
        {
            **sim.env(),
            "DATABASE_URL": db_url,
            "TWILIO_PHONE_NUMBER": SIM_TWILIO_NUMBER,
            "PUBLIC_BASE_URL": callback_listener.url,
            "DISPATCH_POLL_SECONDS": "1",
            "LOG_LEVEL": "INFO",
        }
    )
    procs = [start_dispatcher(env, tmp_path / f"d{i}.log") for i in range(3)]
    try:
        wait_until(
            lambda: len(sim.sends(SIM_TWILIO_NUMBER)["sends"]) >= 100,
            seconds=90,
            what="100 sends at 5 mps",
        )
    finally:
        stop_all(procs)
    report = sim.sends(SIM_TWILIO_NUMBER)
    assert report["refused"] == 0
    # 100 sends, the first 5 a burst: 95 more at 5 per second take 19 s at the least, by the
    # attempts' database clock (at the simulator a cold client's first request may leave late).
    [[took]] = db.execute(
        """
        SELECT extract(epoch FROM a[100] - a[1])::float8
        FROM (SELECT array_agg(occurred_at ORDER BY occurred_at) AS a
              FROM sms_message_events WHERE event_type = 'attempt_started') s
        """
    ).fetchall()
    assert took >= 18.9
    busiest = db.execute(
        """
        SELECT max(n) FROM (
            SELECT count(*) OVER (ORDER BY occurred_at
                                  RANGE BETWEEN interval '999 milliseconds' PRECEDING
                                            AND CURRENT ROW) AS n
            FROM sms_message_events WHERE event_type = 'attempt_started'
        ) w
        """
    ).fetchone()
    assert busiest is not None and busiest[0] <= 5 + 5
