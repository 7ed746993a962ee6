"""The providers' error and status tables, read as plain data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.lifecycle import STATUSES
from shared.providers import signalwire_codes, twilio_codes
from shared.providers.base import Category, parse_retry_after

R, P, A, C = Category.RETRYABLE, Category.PERMANENT, Category.AMBIGUOUS, Category.CONFIG


@pytest.mark.parametrize(
    ("code", "category"),
    [
        ("20003", C),
        ("20429", R),
        ("20500", A),
        ("21211", P),
        ("21212", C),
        ("21408", P),
        ("21606", C),
        ("21610", P),
        ("21611", R),
        ("21612", P),
        ("21614", P),
        ("21617", P),
        ("30001", R),
        ("30003", P),
        ("30005", P),
        ("30006", P),
        ("30007", P),
        ("30008", R),
    ],
)
def test_twilio_code_category(code: str, category: Category) -> None:
    """Each listed Twilio code maps to the category the dispatcher acts on."""
    entry = twilio_codes.classify(code)
    assert entry is not None and entry[0] is category and entry[1]


@pytest.mark.parametrize(
    ("code", "category"),
    [
        ("rate_limit_exceeded", R),
        ("invalid_to_number", P),
        ("message_blocked_by_number", P),
        ("not_routable", P),
        ("invalid_from_number", C),
        ("from_number_not_owned", C),
        ("21408", C),
        ("21606", C),
        ("21612", P),
        ("30001", R),
        ("21601", C),
        ("21611", R),
        ("30003", P),
        ("30007", P),
    ],
)
def test_signalwire_code_category(code: str, category: Category) -> None:
    """Each listed SignalWire code maps to the category the dispatcher acts on."""
    entry = signalwire_codes.classify(code)
    assert entry is not None and entry[0] is category and entry[1]


@pytest.mark.parametrize("code", ["21408", "30001"])
def test_same_number_means_different_things(code: str) -> None:
    """Numbers whose meaning differs between Twilio and SignalWire get their own reasons."""
    assert twilio_codes.CODES[code][1] != signalwire_codes.CODES[code][1]


def test_21408_is_config_at_signalwire_and_permanent_at_twilio() -> None:
    """SignalWire's 21408 (no callback URL) is ours to fix; Twilio's (region) is the message's."""
    assert (twilio_codes.CODES["21408"][0], signalwire_codes.CODES["21408"][0]) == (P, C)


def test_unlisted_code_is_none() -> None:
    """An unknown code is left to the caller's HTTP-status fallback."""
    assert twilio_codes.classify("99999") is None and signalwire_codes.classify(None) is None


@pytest.mark.parametrize(
    ("table", "word", "status"),
    [
        (twilio_codes.STATUSES, "accepted", "queued"),
        (twilio_codes.STATUSES, "scheduled", "queued"),
        (twilio_codes.STATUSES, "queued", "queued"),
        (twilio_codes.STATUSES, "sending", "sending"),
        (twilio_codes.STATUSES, "sent", "sent"),
        (twilio_codes.STATUSES, "delivered", "delivered"),
        (twilio_codes.STATUSES, "undelivered", "undelivered"),
        (twilio_codes.STATUSES, "failed", "failed"),
        (twilio_codes.STATUSES, "read", "read"),
        (twilio_codes.STATUSES, "canceled", "failed"),
        (twilio_codes.STATUSES, "partially_delivered", "undelivered"),
        (twilio_codes.STATUSES, "received", None),
        (signalwire_codes.STATUSES, "queued", "queued"),
        (signalwire_codes.STATUSES, "initiated", "sending"),
        (signalwire_codes.STATUSES, "sent", "sent"),
        (signalwire_codes.STATUSES, "delivered", "delivered"),
        (signalwire_codes.STATUSES, "undelivered", "undelivered"),
        (signalwire_codes.STATUSES, "failed", "failed"),
        (signalwire_codes.STATUSES, "read", "read"),
    ],
)
def test_status_words_map_to_lifecycle(
    table: dict[str, str | None], word: str, status: str | None
) -> None:
    """Provider status words map to our lifecycle statuses (None: not one of ours)."""
    assert table[word] == status


@pytest.mark.parametrize("table", [twilio_codes.STATUSES, signalwire_codes.STATUSES])
def test_status_tables_only_name_lifecycle_statuses(table: dict[str, str | None]) -> None:
    """No status word maps to a status the state machine does not know, nor to our own canceled."""
    assert {s for s in table.values() if s is not None} <= STATUSES - {"pending", "canceled"}


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("Wed, 01 Jan 2025 00:00:30 GMT", 30.0),
    ],
)
def test_retry_after_header(header: str | None, seconds: float | None) -> None:
    """Retry-After is read as delta-seconds or as an HTTP date."""
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after(header, now) == seconds
