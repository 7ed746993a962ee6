"""The claim loop waits for company only while provider calls are short (dispatcher.runner)."""

from __future__ import annotations

from dispatcher.runner import GATHER_MAX_CALL_SECONDS, gather_first


def test_short_calls_wait_for_a_quarter_batch_of_free_slots() -> None:
    assert gather_first(3, 16, 0.016)


def test_before_any_call_the_loop_waits_for_company() -> None:
    assert gather_first(3, 16, None)


def test_long_calls_claim_what_is_free_at_once() -> None:
    """At 200 ms a call, a slot left idle for the gather is sending time lost."""
    assert not gather_first(3, 16, 0.2)
    assert not gather_first(3, 16, GATHER_MAX_CALL_SECONDS)


def test_enough_free_slots_need_no_wait() -> None:
    assert not gather_first(16, 16, 0.016)
