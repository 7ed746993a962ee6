"""shared.quota: chunk sizes, local shares, Retry-After; and a key's effective countries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import quota
from shared.apikeys import Caller, KeyLimits
from shared.config import Settings
from shared.quota import Share
from shared.validation import check_recipient

START = datetime(2031, 3, 4, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("limit", "chunk"),
    [(1, 1), (60, 1), (199, 1), (200, 2), (1000, 10), (100_000, 1000)],
)
def test_chunk_is_one_percent_and_at_least_one(limit: int, chunk: int) -> None:
    """Limits under 200 are reserved one at a time (exact); larger ones 1% at a time."""
    assert quota.chunk(limit) == chunk


@given(st.integers(1, 10_000_000), st.integers(1, 1000))
def test_want_covers_the_need_and_never_a_chunk_less(limit: int, short: int) -> None:
    """A reservation asks at least what is missing, and at least a chunk."""
    asked = quota.want(short, limit)
    assert asked >= short and asked >= quota.chunk(limit)
    assert asked in (short, quota.chunk(limit))


@pytest.mark.parametrize(
    ("seconds", "header"), [(-3.0, 1), (0.0, 1), (0.2, 1), (1.0, 1), (1.01, 2), (29.5, 30)]
)
def test_retry_after_is_whole_seconds_at_least_one(seconds: float, header: int) -> None:
    """Retry-After rounds up and never says 0."""
    assert quota.retry_after(seconds) == header


def _share(tokens: int = 0, limit: int = 60) -> Share:
    return Share(START, limit, spend_until=100.0, ends_at=100.5, tokens=tokens)


def test_a_share_spends_only_what_it_holds() -> None:
    """take() spends whole needs only."""
    share = _share(tokens=3)
    assert share.take(2) and share.tokens == 1
    assert not share.take(2) and share.tokens == 1
    assert share.take(1) and share.tokens == 0


def test_a_share_dies_with_its_window_and_with_a_changed_limit() -> None:
    """A share is live before its (early) end and only under the limit it was reserved for."""
    share = _share()
    assert share.live(99.9, 60)
    assert not share.live(100.0, 60)
    assert not share.live(50.0, 61)


def test_a_refusal_covers_every_larger_need() -> None:
    """Once the database refused n in a window, n and more are refused locally; less is not."""
    share = _share()
    assert not share.known_refused(1)
    share.refused(5)
    assert share.known_refused(5) and share.known_refused(9) and not share.known_refused(4)
    share.refused(2)
    assert share.known_refused(2) and not share.known_refused(1)


def test_share_retry_after_counts_to_the_late_end() -> None:
    """Retry-After of a share runs to the window's end as seen after the answer (never early)."""
    assert _share().retry_after(70.0) == 31
    assert _share().retry_after(100.6) == 1


def test_recipient_retry_after() -> None:
    """Until the message that must leave has left the hour; an hour when none can make room."""
    now = START
    assert quota.recipient_retry_after(now + timedelta(seconds=9.2), now) == 10
    assert quota.recipient_retry_after(now - timedelta(seconds=1), now) == 1
    assert quota.recipient_retry_after(None, now) == 3600


@given(st.lists(st.integers(1, 50), max_size=40), st.integers(0, 30))
def test_spending_never_exceeds_what_was_reserved(needs: list[int], reserved: int) -> None:
    """However needs arrive, what a share hands out never exceeds what was put in it."""
    share = _share(tokens=reserved)
    spent = sum(need for need in needs if share.take(need))
    assert spent + share.tokens == reserved and share.tokens >= 0


def _caller(countries: frozenset[str] | None) -> Caller:
    return Caller(1, "sender", KeyLimits(), countries)


@pytest.mark.parametrize(
    ("configured", "key", "effective"),
    [
        (set(), None, None),  # nothing configured: any region
        ({"US", "CA"}, None, {"US", "CA"}),  # the key follows ALLOWED_COUNTRIES
        (set(), {"CA"}, {"CA"}),  # the key's own list is the whole list
        ({"US", "CA"}, {"US"}, {"US"}),  # narrows
        ({"US", "CA"}, {"US", "GB"}, {"US"}),  # never widens
        ({"US", "CA"}, {"GB"}, set()),  # wholly outside: nowhere
    ],
)
def test_key_countries_narrow_never_widen(
    configured: set[str], key: set[str] | None, effective: set[str] | None
) -> None:
    """A key's allowed_countries is intersected with ALLOWED_COUNTRIES; None means any region."""
    caller = _caller(None if key is None else frozenset(key))
    got = caller.allowed_countries(frozenset(configured))
    assert got == (None if effective is None else frozenset(effective))


def test_check_recipient_takes_the_keys_countries() -> None:
    """check_recipient judges against the key's effective set when given; an empty one refuses
    every region, where an empty ALLOWED_COUNTRIES allows every one."""
    settings = Settings()
    assert check_recipient("+14155552671", settings)[1] == []
    assert check_recipient("+14155552671", settings, countries=frozenset({"US"}))[1] == []
    _, problems = check_recipient("+14155552671", settings, countries=frozenset())
    assert [(p.code, p.message) for p in problems] == [
        ("country_not_allowed", "country US is not allowed (none for this API key)")
    ]
    _, problems = check_recipient("+16135550123", settings, countries=frozenset({"US"}))
    assert [p.code for p in problems] == ["country_not_allowed"]


def test_owner_is_the_key_for_senders_and_none_for_operators() -> None:
    """The tenancy guard: a sender key's own id; an operator's None (every message)."""
    assert _caller(None).owner == 1
    assert Caller(7, "operator", KeyLimits(), None).owner is None
