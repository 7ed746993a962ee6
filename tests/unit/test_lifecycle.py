"""The status state machine and the verdict on a status update, as pure functions: no database."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.lifecycle import (
    RANK,
    SIDLESS,
    STATUSES,
    DuplicateSend,
    MessageFacts,
    Move,
    NoSid,
    ProviderMismatch,
    RecordSidFirst,
    Stale,
    Unrecognized,
    Verdict,
    can_move,
    judge,
    sources_for,
)
from shared.providers.base import StatusUpdate

A = "SM" + "a" * 32
B = "SM" + "b" * 32

# Every `current -> new`, written out by hand from the README's "Message lifecycle": rows are the
# current status, columns the new one in ORDER; "Y" is a real forward move, "." is not.
ORDER = (
    "pending", "queued", "sending", "sent", "delivered", "undelivered", "failed", "read",
    "canceled", "expired",
)  # fmt: skip
# fmt: off
CAN_MOVE = {
    #              pe qu se st de un fa re ca ex
    "pending":     ". Y Y Y Y Y Y Y Y Y",
    "queued":      ". . Y Y Y Y Y Y . .",
    "sending":     ". . . Y Y Y Y Y . .",
    "sent":        ". . . . Y Y Y Y . .",
    "delivered":   ". . . . . . . Y . .",
    "undelivered": ". . . . . . . . . .",
    "failed":      ". . . . . . . . . .",
    "read":        ". . . . . . . . . .",
    "canceled":    ". . . . . . . . . .",
    "expired":     ". . . . . . . . . .",
}
# fmt: on


def _allowed(current: str, new: str) -> bool:
    return CAN_MOVE[current].split()[ORDER.index(new)] == "Y"


def test_table_names_every_status_once() -> None:
    """The hand-written table has exactly the lifecycle's statuses as rows and columns."""
    assert set(CAN_MOVE) == set(ORDER) == STATUSES
    assert len(ORDER) == len(STATUSES)
    assert all(len(row.split()) == len(ORDER) for row in CAN_MOVE.values())


@pytest.mark.parametrize(("current", "new"), list(itertools.product(ORDER, ORDER)))
def test_can_move_matches_the_table(current: str, new: str) -> None:
    """can_move answers each of the 100 status pairs as the table says."""
    assert can_move(current, new) is _allowed(current, new)


@pytest.mark.parametrize("other", ["lost", "received", "SENT", ""])
def test_statuses_outside_the_lifecycle_never_move(other: str) -> None:
    """A status the lifecycle does not know is never a source or a target of a move."""
    assert not any(can_move(other, s) or can_move(s, other) for s in STATUSES)


@pytest.mark.parametrize("new", ORDER)
def test_sources_for_is_the_tables_column(new: str) -> None:
    """The SQL guard's source list for a status is exactly its column of the table, sorted."""
    assert sources_for(new) == sorted(s for s in ORDER if _allowed(s, new))


def _facts(status: str, sid: str | None = A, provider: str = "twilio") -> MessageFacts:
    return MessageFacts(status=status, provider=provider, sid=sid)


def _update(
    status: str | None,
    *,
    sid: str | None = A,
    provider: str = "twilio",
    raw: str | None = None,
    error_code: str | None = None,
) -> StatusUpdate:
    return StatusUpdate(
        provider=provider,
        message_id=None,
        sid=sid,
        raw_status=raw if raw is not None else (status or "mystery"),
        status=status,
        error_code=error_code,
    )


def _move(to: str, *, terminal: bool = False) -> Move:
    return Move(to, terminal=terminal, failed=False, error_code=None, error_message=None)


def _fail(to: str, message: str, code: str | None = None) -> Move:
    return Move(to, terminal=True, failed=True, error_code=code, error_message=message)


JUDGE_TABLE: list[tuple[str, MessageFacts, StatusUpdate, Verdict | RecordSidFirst]] = [
    # (case, message facts, update, verdict)
    ("other provider", _facts("queued"), _update("delivered", provider="signalwire"),
     ProviderMismatch()),
    ("other provider before stray sid", _facts("queued"),
     _update("delivered", sid=B, provider="signalwire"), ProviderMismatch()),
    ("stray sid", _facts("queued"), _update("sent", sid=B), DuplicateSend(B, recorded_sid=A)),
    ("stray sid with an unknown word", _facts("queued"), _update(None, sid=B, raw="teleported"),
     DuplicateSend(B, recorded_sid=A)),
    ("stray sid on a final message", _facts("failed"), _update("delivered", sid=B),
     DuplicateSend(B, recorded_sid=A)),
    ("update without sid", _facts("queued"), _update("delivered", sid=None),
     _move("delivered", terminal=True)),
    ("update with empty sid", _facts("queued"), _update("delivered", sid=""),
     _move("delivered", terminal=True)),
    ("first sid, forward", _facts("pending", sid=None), _update("sent"),
     RecordSidFirst(A, recorded=_move("sent"), taken=NoSid("sent"))),
    ("first sid, failure", _facts("pending", sid=None), _update("failed", error_code="30003"),
     RecordSidFirst(A, recorded=_fail("failed", "twilio reported failed (error 30003)", "30003"),
                    taken=_fail("failed", "twilio reported failed (error 30003)", "30003"))),
    ("first sid, unknown word", _facts("pending", sid=None), _update(None, raw="teleported"),
     RecordSidFirst(A, recorded=Unrecognized(), taken=Unrecognized())),
    ("first sid, not forward", _facts("failed", sid=None), _update("sent"),
     RecordSidFirst(A, recorded=Stale("sent"), taken=Stale("sent"))),
    ("unknown word", _facts("queued"), _update(None, raw="teleported"), Unrecognized()),
    ("backwards", _facts("delivered"), _update("sent"), Stale("sent")),
    ("repeated", _facts("sent"), _update("sent"), Stale("sent")),
    ("after a failure", _facts("failed"), _update("read"), Stale("read")),
    ("cancel after failure", _facts("failed"), _update("canceled"), Stale("failed")),
    ("not forward before no sid", _facts("pending", sid=None), _update("pending", sid=None),
     Stale("pending")),
    ("no sid", _facts("pending", sid=None), _update("sent", sid=None), NoSid("sent")),
    ("no sid, delivered", _facts("pending", sid=None), _update("delivered", sid=None),
     NoSid("delivered")),
    ("no sid, but failure needs none", _facts("pending", sid=None),
     _update("failed", sid=None), _fail("failed", "twilio reported failed")),
    ("forward", _facts("queued"), _update("sending"), _move("sending")),
    ("delivered", _facts("sent"), _update("delivered"), _move("delivered", terminal=True)),
    ("read after delivered", _facts("delivered"), _update("read"), _move("read", terminal=True)),
    ("success keeps no error code", _facts("sent"), _update("delivered", error_code="0"),
     _move("delivered", terminal=True)),
    ("provider cancel is a failure", _facts("queued"), _update("canceled"),
     _fail("failed", "twilio reported canceled")),
    ("undelivered with code", _facts("sent"), _update("undelivered", error_code="30003"),
     _fail("undelivered", "twilio reported undelivered (error 30003)", "30003")),
    ("failure names its provider and word", _facts("sent", provider="signalwire"),
     _update("failed", provider="signalwire", raw="FAILED", error_code="30008"),
     _fail("failed", "signalwire reported FAILED (error 30008)", "30008")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("facts", "update", "expected"),
    [row[1:] for row in JUDGE_TABLE],
    ids=[row[0] for row in JUDGE_TABLE],
)
def test_judge_matches_the_table(
    facts: MessageFacts, update: StatusUpdate, expected: Verdict | RecordSidFirst
) -> None:
    """judge returns the table's verdict for each message and update."""
    assert judge(facts, update) == expected


def test_judge_table_covers_every_verdict_kind() -> None:
    """Each kind of verdict judge can return has at least one row in the table."""
    kinds = {*get_args(Verdict), RecordSidFirst}
    assert {type(row[3]) for row in JUDGE_TABLE} == kinds


def test_judge_never_moves_where_the_state_machine_forbids() -> None:
    """For every message and update, a Move is forward, from its own provider, and has a sid."""
    sids = (None, "", A, B)
    for status, provider, sid, new, update_sid, update_provider in itertools.product(
        STATUSES, ("twilio", "signalwire"), (None, A, B), (*STATUSES, None), sids, ("twilio", "x")
    ):
        facts = _facts(status, sid=sid, provider=provider)
        judged = judge(facts, _update(new, sid=update_sid, provider=update_provider))
        branches = (
            [(judged.recorded, True), (judged.taken, False)]
            if isinstance(judged, RecordSidFirst)
            else [(judged, sid is not None)]
        )
        for verdict, has_sid in branches:
            if isinstance(verdict, Move):
                assert update_provider == provider
                assert can_move(status, verdict.to)
                assert has_sid or verdict.to in SIDLESS
                assert verdict.failed == (verdict.error_message is not None)


@st.composite
def _history(draw: st.DrawFn) -> list[str]:
    """Callbacks of one consistent true history, in any order, any statuses repeated or missing."""
    # The same histories as the database-level property in tests/test_status.py.
    path = [s for s in ("queued", "sending", "sent") if draw(st.booleans())]
    terminal = draw(st.sampled_from(["delivered", "undelivered", "failed", None]))
    if terminal:
        path.append(terminal)
    if terminal == "delivered" and draw(st.booleans()):
        path.append("read")
    if not path:
        path = ["queued"]
    return draw(st.lists(st.sampled_from(path), min_size=1, max_size=10))


def _carry_out(facts: MessageFacts, update: StatusUpdate) -> MessageFacts:
    """What the database holds after a verdict (the sid always free to record)."""
    judged = judge(facts, update)
    if isinstance(judged, RecordSidFirst):
        facts = replace(facts, sid=judged.sid)
        judged = judged.recorded
    return replace(facts, status=judged.to) if isinstance(judged, Move) else facts


@given(callbacks=_history())
def test_any_order_and_duplication_ends_at_highest_and_never_moves_down(
    callbacks: list[str],
) -> None:
    """Judged in any order and duplication, a message's callbacks never lower it and end highest."""
    facts = _facts("pending", sid=None)
    seen: list[str] = []
    for status in callbacks:
        code = "30003" if status in ("failed", "undelivered") else None
        facts = _carry_out(facts, _update(status, error_code=code))
        seen.append(facts.status)
    ranks = [RANK[s] for s in seen]
    assert ranks == sorted(ranks)
    assert seen[-1] == max(callbacks, key=RANK.__getitem__)
    assert facts.sid == A
