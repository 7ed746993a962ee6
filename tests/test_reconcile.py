"""Reconciliation under slow networks: late copies are adopted, never resent (issue 10).

Real PostgreSQL, the simulator over HTTP and the real SDKs; the clock is injected into run_once, and
the only waits are bounded polls of the simulator's state for a request it is still holding.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
import psycopg
import pytest

from dispatcher.outbox import Sent
from dispatcher.service import Dispatcher, RunStats
from shared.config import Settings
from shared.providers.base import SendRequest
from tests.dispatch_support import enqueue_messages, later, outbox_rows, running, statuses
from tests.fixtures_sim import SIM_SIGNALWIRE_NUMBER, SIM_TWILIO_NUMBER, SimHandle
from tests.status_support import apply, update

SENDER = {"twilio": SIM_TWILIO_NUMBER, "signalwire": SIM_SIGNALWIRE_NUMBER}
PAIR_TO = "+14155550199"
TIMEOUT = 0.5

Step = Callable[[Dispatcher], Awaitable[Any]]


def drive(settings: Settings, *steps: Step) -> list[Any]:
    """Run each step against one Dispatcher (a run_once at an injected clock, or a probe)."""

    async def go() -> list[Any]:
        async with httpx.AsyncClient() as http, running(settings, http=http) as d:
            return [await step(d) for step in steps]

    return asyncio.run(go())


def at(now: datetime) -> Step:
    """One dispatcher iteration at clock `now`."""

    async def step(d: Dispatcher) -> RunStats:
        return await d.run_once(now)

    return step


def until_sim_has(sim: SimHandle, count: int) -> Step:
    """Wait (bounded poll of the simulator's records, not a timing guess) for `count` messages."""

    async def step(d: Dispatcher) -> None:
        deadline = time.monotonic() + 20
        while len(await asyncio.to_thread(sim.messages)) < count:
            assert time.monotonic() < deadline, f"the simulator never held {count} messages"
            await asyncio.sleep(0.05)

    return step


def settled(settings: Settings, started: datetime) -> datetime:
    """The first clock at which an attempt started at `started` may be looked up."""
    return started + timedelta(
        seconds=settings.provider_timeout_seconds + settings.reconcile_settle_seconds + 1
    )


@pytest.fixture
def fast(sim_settings: Settings) -> Settings:
    # Retries due after 2 s: the policy alone would look the attempt up well inside its window.
    return dataclasses.replace(
        sim_settings, provider_timeout_seconds=TIMEOUT, retry_delay_seconds=2.0
    )


@pytest.mark.parametrize("provider", ["twilio", "signalwire"])
def test_send_landing_after_the_timeout_is_adopted_not_resent(
    provider: str, fast: Settings, sim: SimHandle, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """A request held past the client's timeout lands 5 s later; inside the settle window nothing is
    looked up or resent, and after it the late copy is adopted: one message at the provider."""
    (mid,) = enqueue_messages(
        db_url, [PAIR_TO], from_number=SENDER[provider], provider=provider, body="late"
    )
    sim.configure(ingress_delay_rate=1.0, ingress_delay_min=5.0, ingress_delay_max=5.0)
    t0 = later(db)

    async def heal(d: Dispatcher) -> None:
        await asyncio.to_thread(sim.configure, ingress_delay_rate=0.0)

    first, _, early, _, last = drive(
        fast,
        at(t0),
        heal,
        at(t0 + timedelta(seconds=6)),
        until_sim_has(sim, 1),
        at(settled(fast, t0)),
    )
    assert first.rescheduled == 1  # the call timed out: ambiguous
    assert (early.awaiting, early.sent, early.reconciled) == (1, 0, 0)
    assert (last.reconciled, last.sent) == (1, 0)
    (only,) = sim.messages()
    assert only["request_count"] == 1
    assert statuses(db, [mid])[mid][0] == "queued" and statuses(db, [mid])[mid][4] == only["sid"]
    assert outbox_rows(db) == []


def test_sixty_newer_messages_to_the_pair_do_not_hide_the_copy(
    fast: Settings, sim: SimHandle, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """The lookup pages through every message of the pair since the attempt, not the newest 50."""
    (mid,) = enqueue_messages(db_url, [PAIR_TO], body="buried")
    sim.configure(hang_rate=1.0)
    t0 = later(db)

    async def sixty_newer(d: Dispatcher) -> None:
        await asyncio.to_thread(sim.configure, hang_rate=0.0)
        for i in range(60):
            request = SendRequest(uuid4(), SIM_TWILIO_NUMBER, PAIR_TO, f"newer {i}", "")
            await d.providers["twilio"].send(request)

    first, _, last = drive(fast, at(t0), sixty_newer, at(settled(fast, t0)))
    assert first.rescheduled == 1
    assert (last.reconciled, last.sent) == (1, 0)
    copies = [m for m in sim.messages() if not m["body"].startswith("newer")]
    assert len(copies) == 1 and statuses(db, [mid])[mid][4] == copies[0]["sid"]


def test_signalwire_skips_another_messages_sid_and_adopts_its_own(
    fast: Settings, sim: SimHandle, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """Without bodies to compare, an older copy that another message of ours holds is passed over
    and the attempt's own copy adopted, instead of resending."""
    sender = SIM_SIGNALWIRE_NUMBER
    (older,) = enqueue_messages(
        db_url, [PAIR_TO], from_number=sender, provider="signalwire", body="older"
    )
    t0 = later(db)
    (first,) = drive(fast, at(t0))
    assert first.sent == 1
    (mid,) = enqueue_messages(
        db_url, [PAIR_TO], from_number=sender, provider="signalwire", body="newer"
    )
    sim.configure(hang_rate=1.0)
    t1 = t0 + timedelta(seconds=1)

    async def heal(d: Dispatcher) -> None:
        await asyncio.to_thread(sim.configure, hang_rate=0.0)

    hung, _, last = drive(fast, at(t1), heal, at(settled(fast, t1)))
    assert hung.rescheduled == 1
    assert (last.reconciled, last.sent) == (1, 0)
    at_sim = sim.messages()
    assert len(at_sim) == 2 and {m["accepted_count"] for m in at_sim} == {1}
    sid_of = {m["body"]: m["sid"] for m in at_sim}
    held = statuses(db, [older, mid])
    assert (held[older][4], held[mid][4]) == (sid_of["older #0"], sid_of["newer #0"])


def test_callback_naming_our_id_settles_the_attempt_without_a_resend(
    fast: Settings, sim: SimHandle, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """A callback naming our id records the copy's sid and moves the message on; its outbox row
    then leaves unsent, with no lookup and no resend."""
    (mid,) = enqueue_messages(db_url, [PAIR_TO], body="told by callback")
    sim.configure(server_error_rate=1.0)  # ambiguous, and nothing created at the simulator
    t0 = later(db)
    (first,) = drive(fast, at(t0))
    assert first.rescheduled == 1
    sim.configure(server_error_rate=0.0)
    sid = "SM" + "e" * 32
    apply(fast, update("sent", message_id=mid, sid=sid))
    # Before the settle window is over: the callback is proof enough, no need to wait.
    (second,) = drive(fast, at(t0 + timedelta(seconds=2)))
    assert (second.dropped, second.sent, second.awaiting) == (1, 0, 0)
    assert statuses(db, [mid])[mid][4] == sid and sim.messages() == []
    assert outbox_rows(db) == []


def test_second_miss_resends_and_a_new_attempt_starts_counting_again(
    fast: Settings, sim: SimHandle, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """Two lookups a settle window apart must both miss before the one resend."""
    (mid,) = enqueue_messages(db_url, [PAIR_TO], body="never landed")
    sim.configure(server_error_rate=1.0)
    t0 = later(db)
    (first,) = drive(fast, at(t0))
    sim.configure(server_error_rate=0.0)
    look1 = settled(fast, t0)
    look2 = look1 + timedelta(seconds=fast.reconcile_settle_seconds + 1)
    miss, resend = drive(fast, at(look1), at(look2))
    assert first.rescheduled == 1
    assert (miss.awaiting, miss.sent) == (1, 0)
    assert (resend.sent, resend.reconciled) == (1, 0)
    lookups = db.execute(
        "SELECT detail->>'lookup' FROM sms_message_events"
        " WHERE message_id = %s AND event_type = 'reconcile_miss'",
        (mid,),
    ).fetchall()
    assert lookups == [("1",)]
    assert len(sim.messages()) == 1 and statuses(db, [mid])[mid][0] == "queued"


def _ours_ambiguous_then_theirs(
    fast: Settings, sim: SimHandle, db_url: str, db: psycopg.Connection[Any]
) -> tuple[Any, Any, datetime]:
    """SignalWire, one recipient: our message's attempt at t0 ends ambiguous with nothing created
    at the provider, then another message of ours ("theirs") is queued. (ours, theirs, t0)."""
    sender = SIM_SIGNALWIRE_NUMBER
    (ours,) = enqueue_messages(
        db_url, [PAIR_TO], from_number=sender, provider="signalwire", body="mine"
    )
    sim.configure(server_error_rate=1.0)  # our attempt: ambiguous, and nothing created
    t0 = later(db)
    (first,) = drive(fast, at(t0))
    assert first.rescheduled == 1
    sim.configure(server_error_rate=0.0)
    (theirs,) = enqueue_messages(
        db_url, [PAIR_TO], from_number=sender, provider="signalwire", body="theirs"
    )
    return ours, theirs, t0


def test_copy_of_another_message_in_flight_is_not_adopted(
    fast: Settings, sim: SimHandle, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """SignalWire, no body to compare: a copy another message's in-flight call just created is
    left alone (not adopted) until that call is recorded; then it is that message's."""
    sender = SIM_SIGNALWIRE_NUMBER
    mid, other, t0 = _ours_ambiguous_then_theirs(fast, sim, db_url, db)

    async def other_call_in_flight() -> tuple[Any, Any]:
        async with running(fast, owner="other:1:x") as d:
            (work,) = await d.outbox.claim(1, now=t0)  # ours is not due yet: only theirs
            assert work.message_id == other
            assert await d.outbox.start([work], now=t0) == {work.id}
            assert work.to_number and work.body
            sent = await d.providers["signalwire"].send(
                SendRequest(other, sender, work.to_number, work.body, "")
            )
            return work, sent

    work, sent = asyncio.run(other_call_in_flight())
    (contested,) = drive(fast, at(settled(fast, t0)))
    assert (contested.awaiting, contested.reconciled, contested.sent) == (1, 0, 0)

    async def other_call_recorded() -> None:
        async with running(fast, owner="other:1:x") as d:
            rows = await d.outbox.record_sent([Sent(work, sent.sid, sent.raw_status)], now=t0)
            assert len(rows) == 1

    asyncio.run(other_call_recorded())
    (missed,) = drive(fast, at(settled(fast, t0) + timedelta(seconds=12)))
    assert (missed.awaiting, missed.reconciled) == (1, 0)
    held = statuses(db, [mid, other])
    assert held[other][4] == sent.sid and held[mid][4] is None


def test_copy_of_a_later_unresolved_attempt_is_left_to_it(
    fast: Settings, sim: SimHandle, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """SignalWire, no body to compare: our attempt never reached the provider, and another
    message's later attempt to the same recipient made a copy but ended unresolved (timed out).
    That copy is the later attempt's: we do not adopt it (before, we did, and the other message
    was then sent twice and ours never); the other message adopts it, ours is resent."""
    sender = SIM_SIGNALWIRE_NUMBER
    mine, other, t0 = _ours_ambiguous_then_theirs(fast, sim, db_url, db)
    t1 = t0 + timedelta(seconds=0.5)

    async def other_call_unresolved() -> str:
        async with running(fast, owner="other:1:x") as d:
            (work,) = await d.outbox.claim(1, now=t1)  # ours is not due yet: only theirs
            assert work.message_id == other
            assert await d.outbox.start([work], now=t1) == {work.id}
            assert work.to_number and work.body
            sent = await d.providers["signalwire"].send(
                SendRequest(other, sender, work.to_number, work.body, "")
            )
            # Its answer lost (a timeout): unresolved, looked up after ours.
            assert await d.outbox.reschedule(
                work,
                delay_seconds=100.0,
                unresolved=True,
                error_code="timeout",
                error_category="ambiguous",
                error_message="no answer",
                now=t1,
            )
            return sent.sid

    theirs_sid = asyncio.run(other_call_unresolved())
    (looked,) = drive(fast, at(settled(fast, t0)))
    assert (looked.awaiting, looked.reconciled, looked.sent) == (1, 0, 0)
    (both,) = drive(fast, at(t1 + timedelta(seconds=200)))
    assert (both.reconciled, both.sent) == (1, 1)
    at_sim = {m["body"]: m["sid"] for m in sim.messages()}
    held = statuses(db, [mine, other])
    assert held[other][4] == theirs_sid == at_sim["theirs #0"]
    assert held[mine][4] == at_sim["mine #0"]
