"""Operator time specs (tooling.timespec): ages with a unit, or ISO 8601 times (UTC if naive)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tooling.timespec import parse_duration, parse_when

NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        (" 6H ", timedelta(hours=6)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    """A number and one unit of s, m, h, d or w, blanks and case aside."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["90", "d", "1.5h", "-3d", "3 days", ""])
def test_malformed_durations_are_refused(text: str) -> None:
    """Anything else is a ValueError whose text shows the accepted forms."""
    with pytest.raises(ValueError, match="90s, 15m"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6h", NOW - timedelta(hours=6)),
        ("2026-01-01T00:00", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T02:00+02:00", datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))),
    ],
)
def test_times(text: str, expected: datetime) -> None:
    """An age counts back from now; an ISO time without an offset is UTC."""
    assert parse_when(text, NOW) == expected


def test_malformed_times_are_refused() -> None:
    """Neither an age nor ISO 8601: a ValueError naming both forms."""
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_when("yesterday", NOW)
