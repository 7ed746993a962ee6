"""The dispatcher's side of consent (issue 13): a suppression that arrives after enqueue cancels the
message at claim, and a provider's opt-out refusal (21610) suppresses the recipient. Real
PostgreSQL, the real SDKs and the simulator; the clock injected."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from shared.config import Settings
from tests.dispatch_support import enqueue_messages, later, running, statuses
from tests.fixtures_sim import SIM_SIGNALWIRE_NUMBER, SIM_TWILIO_NUMBER, SimHandle

RECIPIENT = "+14155550142"
OTHER_SENDER = "+15005550009"


def suppress(db: psycopg.Connection[Any], phone: str, sender: str | None) -> None:
    db.execute(
        "INSERT INTO sms_suppressions (phone_number, sender_number, reason) VALUES (%s, %s, 'api')",
        (phone, sender),
    )


def run_once(settings: Settings, db: psycopg.Connection[Any]) -> Any:
    async def go() -> Any:
        async with running(settings) as d:
            return await d.run_once(now=later(db))

    return asyncio.run(go())


@pytest.mark.parametrize("sender", [SIM_TWILIO_NUMBER, None], ids=["this-sender", "every-sender"])
def test_a_suppression_after_enqueue_cancels_at_claim(
    sender: str | None,
    sim: SimHandle,
    sim_settings: Settings,
    db_url: str,
    db: psycopg.Connection[Any],
) -> None:
    """Queued, then the recipient opts out (of this sender, or of all): canceled with category
    `suppressed`, a `suppressed` event, never at the provider, its pace given back."""
    (mid,) = enqueue_messages(db_url, [RECIPIENT], from_number=SIM_TWILIO_NUMBER)
    suppress(db, RECIPIENT, sender)
    assert run_once(sim_settings, db).suppressed == 1
    status, category, code, _, sid = statuses(db, [mid])[mid]
    assert (status, category, code, sid) == ("canceled", "suppressed", "recipient_opted_out", None)
    kinds = [
        r[0]
        for r in db.execute(
            "SELECT event_type FROM sms_message_events WHERE message_id = %s ORDER BY id", (mid,)
        )
    ]
    assert kinds[-2:] == ["suppressed", "transition"]
    assert sim.messages() == []
    assert db.execute("SELECT count(*) FROM sms_outbox").fetchone() == (0,)


def test_a_suppression_for_another_sender_does_not_stop_the_send(
    sim: SimHandle, sim_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    enqueue_messages(db_url, [RECIPIENT], from_number=SIM_TWILIO_NUMBER)
    suppress(db, RECIPIENT, OTHER_SENDER)
    suppress(db, "+14155550143", None)
    assert run_once(sim_settings, db).sent == 1
    assert [m["to"] for m in sim.messages()] == [RECIPIENT]


def test_twilio_21610_suppresses_the_recipient_for_that_sender(
    sim: SimHandle, sim_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """The simulator's +15005550004 answers 21610 (unsubscribed recipient): the message fails and
    the recipient is suppressed for that sender, the failed message named as the cause."""
    opted_out = "+15005550004"
    (mid,) = enqueue_messages(db_url, [opted_out], from_number=SIM_TWILIO_NUMBER)
    assert run_once(sim_settings, db).failed == 1
    assert statuses(db, [mid])[mid][:3] == ("failed", "permanent", "21610")
    rows = db.execute(
        "SELECT phone_number, sender_number, reason, source_message_id FROM sms_suppressions"
    ).fetchall()
    assert rows == [(opted_out, SIM_TWILIO_NUMBER, "provider_opt_out", mid)]


def test_other_permanent_refusals_suppress_nobody(
    sim: SimHandle, sim_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """21612 (not reachable by SMS) fails the message but is no opt-out."""
    (mid,) = enqueue_messages(db_url, ["+15005550002"], from_number=SIM_TWILIO_NUMBER)
    assert run_once(sim_settings, db).failed == 1
    assert statuses(db, [mid])[mid][2] == "21612"
    assert db.execute("SELECT count(*) FROM sms_suppressions").fetchone() == (0,)


def test_signalwire_sends_are_suppressed_at_claim_too(
    sim: SimHandle, sim_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    (mid,) = enqueue_messages(
        db_url, [RECIPIENT], from_number=SIM_SIGNALWIRE_NUMBER, provider="signalwire"
    )
    suppress(db, RECIPIENT, None)
    assert run_once(sim_settings, db).suppressed == 1
    assert statuses(db, [mid])[mid][0] == "canceled"
    assert sim.messages() == []


def test_signalwire_blocked_by_number_suppresses_the_recipient(
    sim: SimHandle, sim_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """SignalWire's `message_blocked_by_number` (the simulator's +15005550004) is its opt-out."""
    (mid,) = enqueue_messages(
        db_url, ["+15005550004"], from_number=SIM_SIGNALWIRE_NUMBER, provider="signalwire"
    )
    assert run_once(sim_settings, db).failed == 1
    assert statuses(db, [mid])[mid][2] == "message_blocked_by_number"
    rows = db.execute("SELECT sender_number, reason FROM sms_suppressions").fetchall()
    assert rows == [(SIM_SIGNALWIRE_NUMBER, "provider_opt_out")]
