"""shared.status.apply_update on the real database: forward only, recorded raw, exactly once."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from shared.config import Settings
from shared.lifecycle import RANK
from shared.status import apply_update
from tests.status_support import apply, events, insert_message, message, update

SID = "SM" + "a" * 32


def test_callback_before_dispatcher_records_sid_lands_on_message(
    db: psycopg.Connection[Any], settings: Settings
) -> None:
    """A 'sent' callback for a still-pending message moves it forward and gives it its sid."""
    mid = insert_message(db, status="pending", sid=None)
    result = apply(settings, update("sent", message_id=mid, sid=SID))
    row = message(db, mid)
    assert (row["delivery_status"], row["provider_sid"]) == ("sent", SID)
    assert row["submitted_at"] is not None
    assert result.changed and result.sid_recorded
    # The dispatcher's later, idempotent record of the same sid then changes nothing.
    db.execute(
        "UPDATE sms_messages SET provider_sid = coalesce(provider_sid, %s),"
        " delivery_status = 'queued' WHERE id = %s AND delivery_status = 'pending'",
        (SID, mid),
    )
    assert message(db, mid)["delivery_status"] == "sent"


def test_matches_by_sid_when_no_message_id(db: psycopg.Connection[Any], settings: Settings) -> None:
    """A callback without our id finds the message by (provider, sid)."""
    mid = insert_message(db, status="queued", sid=SID)
    result = apply(settings, update("delivered", sid=SID))
    assert result.message_id == mid
    assert message(db, mid)["delivery_status"] == "delivered"


def test_sid_of_another_provider_does_not_match(
    db: psycopg.Connection[Any], settings: Settings
) -> None:
    """A sid is only unique per provider, so a SignalWire callback never moves a Twilio message."""
    mid = insert_message(db, status="queued", sid=SID)
    result = apply(settings, update("delivered", sid=SID, provider="signalwire"))
    assert not result.known
    assert message(db, mid)["delivery_status"] == "queued"


def test_unknown_message_is_recorded_and_changes_nothing(
    db: psycopg.Connection[Any], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A callback for no message of ours is kept raw with no message id and logged as a WARNING."""
    mid = insert_message(db, status="queued", sid=SID)
    with caplog.at_level(logging.WARNING, logger="shared.status"):
        result = apply(settings, update("delivered", message_id=uuid.uuid4(), sid="SM" + "b" * 32))
    assert not result.known
    orphans = events(db, None)
    assert [(e["event_type"], e["to_status"], e["provider_sid"]) for e in orphans] == [
        ("callback", "delivered", "SM" + "b" * 32)
    ]
    assert message(db, mid)["delivery_status"] == "queued"
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_exact_duplicate_recorded_once_and_applied_once(
    db: psycopg.Connection[Any], settings: Settings
) -> None:
    """The same callback twice leaves one callback event and one transition."""
    mid = insert_message(db, status="queued", sid=SID)
    first = apply(settings, update("delivered", message_id=mid))
    second = apply(settings, update("delivered", message_id=mid))
    assert first.changed and first.recorded
    assert not second.changed and not second.recorded
    assert len(events(db, mid, "callback")) == 1
    assert len(events(db, mid, "transition")) == 1


def test_backwards_callback_is_recorded_but_changes_nothing(
    db: psycopg.Connection[Any], settings: Settings
) -> None:
    """'sent' arriving after 'delivered' is kept as history and leaves the message delivered."""
    mid = insert_message(db, status="queued", sid=SID)
    apply(settings, update("delivered", message_id=mid))
    before = message(db, mid)
    result = apply(settings, update("sent", message_id=mid))
    after = message(db, mid)
    assert not result.changed and result.recorded
    assert after["delivery_status"] == "delivered"
    assert after["last_message_at"] == before["last_message_at"]
    assert [e["to_status"] for e in events(db, mid, "callback")] == ["delivered", "sent"]


def test_transition_is_recorded_logged_and_touches_conversation(
    db: psycopg.Connection[Any], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A real move writes a from -> to event, logs 'previous -> new', moves last_message_at."""
    mid = insert_message(db, status="queued", sid=SID)
    db.execute("UPDATE sms_conversations SET last_message_at = now() - interval '1 hour'")
    before = message(db, mid)
    with caplog.at_level(logging.INFO, logger="shared.status"):
        apply(settings, update("delivered", message_id=mid))
    after = message(db, mid)
    assert after["last_message_at"] > before["last_message_at"]
    assert after["final_at"] is not None
    [evt] = events(db, mid, "transition")
    assert (evt["from_status"], evt["to_status"]) == ("queued", "delivered")
    [line] = [r for r in caplog.records if getattr(r, "action", None) == "status_changed"]
    assert line.getMessage() == "status queued -> delivered"
    assert getattr(line, "message_id", None) == str(mid)
    assert getattr(line, "conversation_id", None) == str(after["conversation_id"])


def test_delivered_may_become_read_but_failed_may_not(
    db: psycopg.Connection[Any], settings: Settings
) -> None:
    """read follows delivered (keeping its final_at); a failed message stays failed."""
    delivered = insert_message(db, status="delivered", sid=SID)
    final_at = message(db, delivered)["final_at"]
    apply(settings, update("read", message_id=delivered))
    assert message(db, delivered)["delivery_status"] == "read"
    assert message(db, delivered)["final_at"] == final_at
    failed = insert_message(db, status="failed", sid="SM" + "c" * 32, to_number="+14155550124")
    apply(settings, update("read", message_id=failed, sid="SM" + "c" * 32))
    assert message(db, failed)["delivery_status"] == "failed"


@pytest.mark.parametrize("status", ["failed", "undelivered"])
def test_final_failure_stores_error_and_raises_one_alert(
    db: psycopg.Connection[Any], settings: Settings, status: str
) -> None:
    """A failed/undelivered callback stores its error code as a delivery error and alerts once."""
    mid = insert_message(db, status="sent", sid=SID)
    apply(settings, update(status, message_id=mid, error_code="30003"))
    apply(settings, update(status, message_id=mid, error_code="30003"))
    row = message(db, mid)
    assert (row["delivery_status"], row["error_code"], row["error_category"]) == (
        status,
        "30003",
        "delivery",
    )
    assert row["error_message"]
    alerts = db.execute("SELECT kind FROM sms_alerts WHERE message_id = %s", (mid,)).fetchall()
    assert alerts == [("message_failed",)]
    # Never a resend: no new send work appears for the message.
    assert db.execute(
        "SELECT count(*) FROM sms_outbox WHERE message_id = %s", (mid,)
    ).fetchone() == (0,)


def test_provider_cancel_of_accepted_message_is_a_failure(
    db: psycopg.Connection[Any], settings: Settings
) -> None:
    """A provider canceling a message it accepted means it never arrives: failed, not canceled."""
    mid = insert_message(db, status="queued", sid=SID)
    apply(settings, update("canceled", message_id=mid))
    assert message(db, mid)["delivery_status"] == "failed"


def test_unrecognized_status_is_recorded_and_changes_nothing(
    db: psycopg.Connection[Any], settings: Settings
) -> None:
    """A status word we do not know is kept raw and moves nothing."""
    mid = insert_message(db, status="queued", sid=SID)
    result = apply(settings, update(None, message_id=mid, raw_status="teleported"))
    assert result.recorded and not result.changed
    assert message(db, mid)["delivery_status"] == "queued"
    assert [e["to_status"] for e in events(db, mid, "callback")] == ["teleported"]


def test_callback_for_another_sid_is_history_only(
    db: psycopg.Connection[Any], settings: Settings
) -> None:
    """A callback naming our id but another provider message than the recorded sid moves nothing."""
    mid = insert_message(db, status="queued", sid=SID)
    result = apply(settings, update("failed", message_id=mid, sid="SM" + "d" * 32))
    assert result.recorded and not result.changed
    assert message(db, mid)["delivery_status"] == "queued"


def test_stray_sid_is_a_detected_double_send_once_with_one_alert(
    db: psycopg.Connection[Any], settings: Settings
) -> None:
    """A callback naming our id under a second sid: one event, one counted alert, nothing moves."""
    mid = insert_message(db, status="queued", sid=SID)
    stray = "SM" + "d" * 32
    before = REGISTRY.get_sample_value("sms_duplicate_sends_detected_total", {"provider": "twilio"})
    first = apply(settings, update("sent", message_id=mid, sid=stray))
    apply(settings, update("delivered", message_id=mid, sid=stray))
    after = REGISTRY.get_sample_value("sms_duplicate_sends_detected_total", {"provider": "twilio"})
    assert first.duplicate and not first.changed
    detected = events(db, mid, "duplicate_send_detected")
    assert [(e["provider_sid"], e["detail"]["recorded_sid"]) for e in detected] == [(stray, SID)]
    assert (after or 0) - (before or 0) == 1
    alerts = db.execute(
        "SELECT kind, payload->>'duplicate_sid' FROM sms_alerts WHERE message_id = %s", (mid,)
    ).fetchall()
    assert alerts == [("duplicate_send", stray)]
    assert message(db, mid)["delivery_status"] == "queued"


def test_copy_named_ours_but_held_by_another_message_is_a_detected_double(
    db: psycopg.Connection[Any], settings: Settings
) -> None:
    """A callback naming our id whose sid another message holds (adopted by time alone) means our
    message is sent again: detected once, with the alert; neither message moves."""
    holder = insert_message(db, status="queued", sid=SID)
    ours = insert_message(db, status="pending", to_number="+14155550188")
    result = apply(settings, update("delivered", message_id=ours, sid=SID))
    again = apply(settings, update("sent", message_id=ours, sid=SID))
    assert result.duplicate and not result.changed and again.duplicate
    detected = events(db, ours, "duplicate_send_detected")
    assert [(e["provider_sid"], e["detail"]["recorded_sid"]) for e in detected] == [(SID, None)]
    kinds = db.execute("SELECT kind FROM sms_alerts WHERE message_id = %s", (ours,)).fetchall()
    assert kinds == [("duplicate_send",)]
    assert message(db, ours)["delivery_status"] == "pending"
    assert message(db, holder)["delivery_status"] == "queued"


def test_recorded_sid_still_moves_after_a_stray_copy_reported_the_same_status(
    db: psycopg.Connection[Any], settings: Settings
) -> None:
    """Duplicates are keyed by sid: the stray copy's `delivered` does not swallow the real one."""
    mid = insert_message(db, status="queued", sid=SID)
    apply(settings, update("delivered", message_id=mid, sid="SM" + "d" * 32))
    result = apply(settings, update("delivered", message_id=mid, sid=SID))
    assert result.recorded and result.current == "delivered"
    assert message(db, mid)["delivery_status"] == "delivered"


def test_message_body_never_reaches_the_event_history(
    db: psycopg.Connection[Any], settings: Settings
) -> None:
    """A payload's Body field is dropped before the raw callback is stored."""
    mid = insert_message(db, status="queued", sid=SID)
    upd = update("sent", message_id=mid)
    upd = type(upd)(**{**upd.__dict__, "raw": {**upd.raw, "Body": "secret text"}})
    apply(settings, upd)
    [evt] = events(db, mid, "callback")
    assert "Body" not in evt["detail"]["payload"]
    assert evt["detail"]["payload"]["MessageStatus"] == "sent"


def test_concurrent_callbacks_end_at_the_highest(
    db: psycopg.Connection[Any], settings: Settings
) -> None:
    """Callbacks applied at once on separate connections still end at the highest status."""
    mid = insert_message(db, status="queued", sid=SID)

    async def run() -> None:
        async def one(status: str) -> None:
            async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
                await apply_update(conn, update(status, message_id=mid), settings=settings)

        await asyncio.gather(*(one(s) for s in ("sending", "delivered", "sent", "read")))

    asyncio.run(run())
    assert message(db, mid)["delivery_status"] == "read"


@st.composite
def _history(draw: st.DrawFn) -> list[str]:
    """Callbacks of one consistent true history, in any order, any statuses repeated or missing."""
    path = [s for s in ("queued", "sending", "sent") if draw(st.booleans())]
    terminal = draw(st.sampled_from(["delivered", "undelivered", "failed", None]))
    if terminal:
        path.append(terminal)
    if terminal == "delivered" and draw(st.booleans()):
        path.append("read")
    if not path:
        path = ["queued"]
    return draw(st.lists(st.sampled_from(path), min_size=1, max_size=10))


@hsettings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(callbacks=_history())
def test_any_order_and_duplication_ends_at_highest_and_never_moves_down(
    db: psycopg.Connection[Any], settings: Settings, callbacks: list[str]
) -> None:
    """Any order/duplication of a message's callbacks never lowers it and ends at the highest."""
    mid = insert_message(db, status="pending", sid=None, to_number=_fresh_number())
    sid = "SM" + uuid.uuid4().hex
    seen: list[str] = []

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
            for status in callbacks:
                code = "30003" if status in ("failed", "undelivered") else None
                await apply_update(
                    conn,
                    update(status, message_id=mid, sid=sid, error_code=code),
                    settings=settings,
                )
                seen.append(message(db, mid)["delivery_status"])

    asyncio.run(run())
    ranks = [RANK[s] for s in seen]
    assert ranks == sorted(ranks)
    assert seen[-1] == max(callbacks, key=RANK.__getitem__)
    assert len(events(db, mid, "callback")) == len(set(callbacks))
    assert len(events(db, mid, "transition")) == len(set(seen))


_counter = iter(range(10**6))


def _fresh_number() -> str:
    return f"+1415{next(_counter):07d}"
