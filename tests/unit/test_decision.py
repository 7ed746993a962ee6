"""dispatcher.decision, without a database: every outcome class x every error-table entry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.decision import (
    Drop,
    Error,
    Facts,
    Fail,
    GiveBack,
    Outcome,
    Pause,
    Reconcile,
    Resend,
    Retry,
    Sent,
    Timing,
    after_attempt,
    after_lookup,
    before_lookup,
    too_late_to_call,
    window_end,
)
from shared.providers import signalwire_codes, twilio_codes
from shared.providers.base import Category, ProviderError, RemoteMessage, SendResult
from shared.retry import RetryPolicy

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
FIXED = RetryPolicy(kind="fixed", delay_seconds=25.0, max_attempts=4)
TIMING = Timing(provider_timeout_seconds=10.0, settle_seconds=15.0, lookups=2)


def fresh(attempt: int = 1, **kw: object) -> Facts:
    base: dict[str, object] = {
        "attempt": attempt,
        "claimed_at": NOW,
        "delivery_status": "pending",
        "unresolved_since": None,
    }
    base.update(kw)
    return Facts(**base)  # type: ignore[arg-type]


def entries() -> list[tuple[str, str, tuple[Category, str]]]:
    """Every entry of both providers' error tables, codes and transport/HTTP fallbacks alike."""
    rows: list[tuple[str, str, tuple[Category, str]]] = []
    for name, table in (("twilio", twilio_codes), ("signalwire", signalwire_codes)):
        rows += [(name, code, entry) for code, entry in table.CODES.items()]
        for fallback in ("HTTP_429", "HTTP_401", "HTTP_404", "HTTP_5XX", "CONNECT_ERROR"):
            if hasattr(table, fallback):
                rows.append((name, fallback, getattr(table, fallback)))
        rows += [
            (name, "READ_TIMEOUT", table.READ_TIMEOUT),
            (name, "UNCLASSIFIED_4XX", table.UNCLASSIFIED_4XX),
        ]
    return rows


# What each outcome class leads to: (on attempt 1 of 4, on the last attempt 4 of 4).
EXPECTED_BY_CATEGORY: dict[Category, tuple[type, type]] = {
    Category.PERMANENT: (Fail, Fail),
    Category.CONFIG: (Pause, Pause),
    Category.RETRYABLE: (Retry, Fail),
    Category.AMBIGUOUS: (Retry, Reconcile),
}


@pytest.mark.parametrize(("provider", "code", "entry"), entries())
def test_every_error_table_entry_leads_to_its_outcome(
    provider: str, code: str, entry: tuple[Category, str]
) -> None:
    """Each table entry's category decides the outcome, on a first and on a last attempt."""
    category, reason = entry
    err = ProviderError(category, reason, code=code)
    first, last = EXPECTED_BY_CATEGORY[category]
    early = after_attempt(fresh(1), err, FIXED, rand=0.5)
    late = after_attempt(fresh(4), err, FIXED, rand=0.5)
    assert (type(early), type(late)) == (first, last)
    for outcome in (early, late):
        assert getattr(outcome, "error", None) == Error(category.value, reason, code)


def test_table_covers_every_outcome_class() -> None:
    """The table above meets all four categories, so no class goes untested."""
    assert {entry[0] for _, _, entry in entries()} == set(Category)


def test_accepted_send_is_sent_with_its_sid() -> None:
    """A provider answer is Sent with the sid and raw status, never reconciled."""
    assert after_attempt(fresh(), SendResult("SM1", "queued"), FIXED, rand=0.1) == Sent(
        "SM1", "queued", reconciled=False
    )


@pytest.mark.parametrize(
    ("category", "unresolved"),
    [(Category.AMBIGUOUS, True), (Category.RETRYABLE, False)],
)
def test_retry_keeps_the_attempt_unresolved_only_when_it_may_have_been_sent(
    category: Category, unresolved: bool
) -> None:
    """An ambiguous failure is reconciled before any resend; a retryable one is not."""
    outcome = after_attempt(fresh(), ProviderError(category, "x"), FIXED, rand=0.5)
    assert isinstance(outcome, Retry) and outcome.unresolved is unresolved
    assert outcome.delay_seconds == 25.0


def test_longer_retry_after_wins_over_the_policy() -> None:
    """A provider's Retry-After longer than the policy's delay sets the delay."""
    err = ProviderError(Category.RETRYABLE, "slow down", retry_after=90.0)
    outcome = after_attempt(fresh(), err, FIXED, rand=0.5)
    assert isinstance(outcome, Retry) and outcome.delay_seconds == 90.0


def test_failed_lookup_is_reconciled_again_not_resent() -> None:
    """A lookup that failed leaves the earlier attempt unresolved, even for a retryable error."""
    err = ProviderError(Category.RETRYABLE, "429 on the list")
    outcome = after_attempt(fresh(2), err, FIXED, rand=0.5, unresolved=True)
    assert isinstance(outcome, Retry) and outcome.unresolved


def test_config_error_pauses_and_says_whether_the_attempt_may_have_gone() -> None:
    """A config error pauses; its unresolved flag follows the caller's knowledge."""
    err = ProviderError(Category.CONFIG, "bad token", code="20003")
    assert after_attempt(fresh(), err, FIXED, rand=0.5) == Pause(
        Error("config", "bad token", "20003"), unresolved=False
    )
    assert after_attempt(fresh(), err, FIXED, rand=0.5, unresolved=True) == Pause(
        Error("config", "bad token", "20003"), unresolved=True
    )


def test_no_time_to_call_gives_the_attempt_back_at_once() -> None:
    """Too close to the lease end: the attempt returns unspent, due now."""
    assert too_late_to_call() == GiveBack(0.0, reason="no_time")


STARTED = NOW - timedelta(seconds=40)


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (fresh(delivery_status="canceled"), Drop("canceled")),
        (fresh(delivery_status="sent", provider_sid="SM9"), Drop("sent")),
        (fresh(provider_sid="SM9", unresolved_since=STARTED), Sent("SM9", "callback", True)),
        (fresh(), Resend()),
        # Started 40 s ago: timeout 10 + settle 15 are over, so look it up.
        (fresh(unresolved_since=STARTED), None),
        # Started 5 s ago: 20 s of the window are left.
        (fresh(unresolved_since=NOW - timedelta(seconds=5)), GiveBack(20.0)),
    ],
)
def test_before_lookup(facts: Facts, expected: Outcome | None) -> None:
    """Drop, adopt a callback's sid, send a fresh row, wait out the window, or look it up."""
    assert before_lookup(facts, TIMING) == expected


def test_window_ends_after_timeout_and_settle() -> None:
    """A copy may land until the call's timeout plus the settle window after the start."""
    assert window_end(STARTED, TIMING) == STARTED + timedelta(seconds=25)


def copy(sid: str, minutes: int) -> RemoteMessage:
    return RemoteMessage(
        sid=sid,
        raw_status="queued",
        status="queued",
        from_number="+15005550006",
        to_number="+14155550100",
        body=None,
        created_at=NOW + timedelta(minutes=minutes),
    )


@pytest.mark.parametrize(
    ("facts", "copies", "taken", "expected"),
    [
        # The oldest copy no other message holds is adopted.
        (fresh(2), [copy("A", 0), copy("B", 1)], set(), Sent("A", "queued", True)),
        (fresh(2), [copy("A", 0), copy("B", 1)], {"A"}, Sent("B", "queued", True)),
        # Nothing (free): the first miss waits a settle window and looks again.
        (fresh(2), [copy("A", 0)], {"A"}, GiveBack(15.0, reason="missed")),
        (fresh(2), [], set(), GiveBack(15.0, reason="missed")),
        # The second miss resends.
        (fresh(2, reconcile_misses=1), [], set(), Resend()),
        # ... unless no attempt is left: the ambiguous last attempt fails with its own error.
        (
            fresh(5, reconcile_misses=1, last_error_code="timeout", last_error="no answer"),
            [],
            set(),
            Fail(Error("ambiguous", "no answer", "timeout")),
        ),
    ],
)
def test_after_lookup(
    facts: Facts, copies: list[RemoteMessage], taken: set[str], expected: Outcome
) -> None:
    """Adopt a free copy, look again after a miss, resend after the last miss, or fail."""
    assert after_lookup(facts, copies, taken, FIXED, TIMING) == expected


def test_copy_younger_than_another_call_in_flight_is_left_for_it() -> None:
    """A copy created after another message's in-flight call started may be that call's: wait."""
    young, old = copy("Y", 0), copy("O", -1)
    in_flight = NOW - timedelta(seconds=30)
    assert after_lookup(fresh(2), [young], set(), FIXED, TIMING, in_flight) == GiveBack(
        11.0, reason="contested"
    )
    # An older copy is no candidate for that call: adopted; a miss stays a miss.
    assert after_lookup(fresh(2), [old, young], set(), FIXED, TIMING, in_flight) == Sent(
        "O", "queued", True
    )
    assert after_lookup(fresh(2), [], set(), FIXED, TIMING, in_flight) == GiveBack(
        15.0, reason="missed"
    )


def test_copy_made_after_a_later_rivals_attempt_started_is_the_rivals() -> None:
    """Two unresolved attempts to one recipient, a provider without bodies to compare: the copy
    created after the later attempt started is that attempt's, never the earlier one's (which,
    if it never reached the provider, is looked up again and then resent); the later attempt
    adopts it. A copy made before the rival started stays ours."""
    ours = NOW - timedelta(minutes=10)
    rival = NOW - timedelta(minutes=5)
    after_rival, before_rival = copy("R", -4), copy("O", -8)
    facts = fresh(2, unresolved_since=ours)
    assert after_lookup(facts, [after_rival], set(), FIXED, TIMING, rivals=[rival]) == GiveBack(
        15.0, reason="missed"
    )
    assert after_lookup(
        facts, [after_rival, before_rival], set(), FIXED, TIMING, rivals=[rival]
    ) == Sent("O", "queued", True)
    # Seen from the rival: our attempt started before it, so the copy is the rival's own.
    theirs = fresh(2, unresolved_since=rival)
    assert after_lookup(theirs, [after_rival], set(), FIXED, TIMING, rivals=[ours]) == Sent(
        "R", "queued", True
    )


def test_one_lookup_setting_resends_on_the_first_miss() -> None:
    """RECONCILE_LOOKUPS=1 restores a single lookup before the resend."""
    single = Timing(provider_timeout_seconds=10.0, settle_seconds=15.0, lookups=1)
    assert after_lookup(fresh(2), [], set(), FIXED, single) == Resend()
