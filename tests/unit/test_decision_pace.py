"""The last word before a call (validity, quiet hours) and retries bounded by validity: pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.decision import (
    Error,
    Expire,
    Facts,
    Fail,
    Hold,
    Reconcile,
    Retry,
    before_send,
    validity_left,
    within_validity,
)
from shared.quiet import QuietHours

# 03:00 in New York (EST, UTC-5), 19:00 in Sydney (AEDT, UTC+11).
NIGHT_IN_NEW_YORK = datetime(2026, 1, 15, 8, 0, tzinfo=UTC)
QUIET = QuietHours.parse("21:00-08:00")
NY = ("America/New_York",)
SYDNEY = ("Australia/Sydney",)
ERROR = Error("retryable", "busy", "20429")


def facts(**kw: object) -> Facts:
    base: dict[str, object] = {
        "attempt": 1,
        "claimed_at": NIGHT_IN_NEW_YORK,
        "delivery_status": "pending",
        "unresolved_since": None,
    }
    base.update(kw)
    return Facts(**base)  # type: ignore[arg-type]


def test_a_message_past_its_validity_expires() -> None:
    expires = NIGHT_IN_NEW_YORK - timedelta(seconds=1)
    assert before_send(facts(expires_at=expires), quiet=None, zones=NY) == Expire(expires)


def test_a_message_expiring_exactly_now_expires() -> None:
    assert before_send(facts(expires_at=NIGHT_IN_NEW_YORK), quiet=None, zones=NY) == Expire(
        NIGHT_IN_NEW_YORK
    )


def test_a_valid_message_outside_quiet_hours_is_sent() -> None:
    later = NIGHT_IN_NEW_YORK + timedelta(hours=1)
    assert before_send(facts(expires_at=later), quiet=QUIET, zones=SYDNEY) is None


def test_night_in_the_recipients_zone_holds_until_the_window_ends() -> None:
    release = datetime(2026, 1, 15, 13, 0, tzinfo=UTC)  # 08:00 in New York
    assert before_send(facts(), quiet=QUIET, zones=NY) == Hold(release)


@pytest.mark.parametrize("priority", ["normal", "low"])
def test_only_high_priority_is_never_held(priority: str) -> None:
    assert isinstance(before_send(facts(priority=priority), quiet=QUIET, zones=NY), Hold)
    assert before_send(facts(priority="high"), quiet=QUIET, zones=NY) is None


def test_no_quiet_hours_configured_holds_nothing() -> None:
    assert before_send(facts(), quiet=None, zones=NY) is None


def test_a_hold_ends_at_the_expiry_when_that_comes_first() -> None:
    expires = NIGHT_IN_NEW_YORK + timedelta(hours=1)
    assert before_send(facts(expires_at=expires), quiet=QUIET, zones=NY) == Hold(expires)


def test_a_retry_after_the_expiry_expires_now() -> None:
    known = facts(expires_at=NIGHT_IN_NEW_YORK + timedelta(seconds=10))
    outcome = within_validity(known, Retry(25.0, ERROR, unresolved=False))
    assert outcome == Expire(NIGHT_IN_NEW_YORK + timedelta(seconds=10))


def test_a_retry_before_the_expiry_stays_a_retry() -> None:
    known = facts(expires_at=NIGHT_IN_NEW_YORK + timedelta(seconds=30))
    retry = Retry(25.0, ERROR, unresolved=False)
    assert within_validity(known, retry) is retry


def test_an_attempt_in_doubt_is_looked_up_even_past_the_expiry() -> None:
    """It may have been sent before the validity ended: reconciliation decides, not expiry."""
    known = facts(expires_at=NIGHT_IN_NEW_YORK + timedelta(seconds=1))
    doubt = Retry(25.0, ERROR, unresolved=True)
    assert within_validity(known, doubt) is doubt
    reconcile = Reconcile(25.0, ERROR)
    assert within_validity(known, reconcile) is reconcile


def test_other_outcomes_pass_through() -> None:
    fail = Fail(ERROR)
    assert within_validity(facts(expires_at=NIGHT_IN_NEW_YORK), fail) is fail
    retry = Retry(25.0, ERROR, unresolved=False)
    assert within_validity(facts(), retry) is retry


def test_validity_left_is_whole_seconds_from_the_claim() -> None:
    assert validity_left(facts()) is None
    assert validity_left(facts(expires_at=NIGHT_IN_NEW_YORK + timedelta(seconds=90.9))) == 90
    assert validity_left(facts(expires_at=NIGHT_IN_NEW_YORK + timedelta(seconds=0.2))) == 1
