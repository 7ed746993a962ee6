"""Quiet hours: parsing QUIET_HOURS, the number's zones, and when a held message is released."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from shared.quiet import QuietHours, zones_for

NEW_YORK = ZoneInfo("America/New_York")
NIGHT = QuietHours(time(21, 0), time(8, 0))


def _ny(
    year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0, *, fold: int = 0
) -> datetime:
    """A New York wall time, as the UTC instant the dispatcher's clock would give."""
    local = datetime(year, month, day, hour, minute, second, tzinfo=NEW_YORK, fold=fold)
    return local.astimezone(UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("21:00-08:00", QuietHours(time(21, 0), time(8, 0))),
        (" 01:00 - 05:30 ", QuietHours(time(1, 0), time(5, 30))),
        ("9:15-17:45", QuietHours(time(9, 15), time(17, 45))),
        ("23:59-00:00", QuietHours(time(23, 59), time(0, 0))),
        ("", None),
        ("   ", None),
    ],
)
def test_parse(text: str, expected: QuietHours | None) -> None:
    """HH:MM-HH:MM parses (spaces allowed around it and the dash); empty means off."""
    assert QuietHours.parse(text) == expected


@pytest.mark.parametrize(
    "text", ["21:00", "21:00-21:00", "24:00-08:00", "21:60-08:00", "9pm-8am", "21:00-08:00-09:00"]
)
def test_parse_refuses(text: str) -> None:
    """A malformed window, an impossible time or an empty window is a ValueError."""
    with pytest.raises(ValueError):
        QuietHours.parse(text)


def test_zones_for() -> None:
    """An E.164 number maps to the IANA zones phonenumbers knows for it; unknown ones to ()."""
    assert zones_for("+12125550100") == ("America/New_York",)
    assert zones_for("+442079460000") == ("Europe/London",)
    assert "Asia/Vladivostok" in zones_for("+79123456789")
    assert zones_for("+999123") == ()
    assert zones_for("not a number") == ()


def test_a_new_york_number_at_3_am_is_held_until_8() -> None:
    """03:00 in New York is inside 21:00-08:00: released at 08:00 New York time (UTC)."""
    zones = zones_for("+12125550100")
    release = NIGHT.release_at(zones, _ny(2025, 1, 15, 3, 0))
    assert release == _ny(2025, 1, 15, 8, 0) == datetime(2025, 1, 15, 13, 0, tzinfo=UTC)
    assert release is not None and release.tzinfo == UTC


@pytest.mark.parametrize(
    ("local", "second"),
    [((2025, 1, 15, 12, 0), 0), ((2025, 1, 15, 8, 0), 0), ((2025, 1, 15, 20, 59), 59)],
)
def test_outside_the_window_is_not_held(local: tuple[int, int, int, int, int], second: int) -> None:
    """Noon, the end minute itself and the second before the start are not held."""
    assert NIGHT.release_at(["America/New_York"], _ny(*local, second)) is None


def test_the_window_wraps_midnight() -> None:
    """Held from 21:00 (inclusive) to 08:00 the next day, on either side of midnight."""
    assert NIGHT.release_at(["America/New_York"], _ny(2025, 1, 15, 21, 0)) == _ny(2025, 1, 16, 8)
    assert NIGHT.release_at(["America/New_York"], _ny(2025, 1, 15, 23, 59)) == _ny(2025, 1, 16, 8)
    assert NIGHT.release_at(["America/New_York"], _ny(2025, 1, 16, 0, 1)) == _ny(2025, 1, 16, 8)


def test_a_window_within_one_day() -> None:
    """01:00-05:00 holds between those hours only, until 05:00 the same day."""
    early = QuietHours(time(1, 0), time(5, 0))
    assert early.release_at(["America/New_York"], _ny(2025, 6, 1, 1, 0)) == _ny(2025, 6, 1, 5)
    assert early.release_at(["America/New_York"], _ny(2025, 6, 1, 4, 59)) == _ny(2025, 6, 1, 5)
    for hour in (0, 5, 12, 23):
        assert early.release_at(["America/New_York"], _ny(2025, 6, 1, hour, 0)) is None


def test_only_the_zones_inside_count_and_the_last_to_end_wins() -> None:
    """Held until the inside zone whose window ends last; a zone outside the window adds nothing.

    22:00 UTC in January: Vladivostok (UTC+10) reads 08:00, just out; Moscow (UTC+3) 01:00, in
    until 05:00 UTC; Kaliningrad (UTC+2) 00:00, in until 06:00 UTC.
    """
    now = datetime(2025, 1, 15, 22, 0, tzinfo=UTC)
    zones = ["Europe/Kaliningrad", "Europe/Moscow", "Asia/Vladivostok"]
    assert NIGHT.release_at(zones, now) == datetime(2025, 1, 16, 6, 0, tzinfo=UTC)
    assert NIGHT.release_at(zones[1:], now) == datetime(2025, 1, 16, 5, 0, tzinfo=UTC)
    assert NIGHT.release_at(zones[2:], now) is None
    # 09:30 UTC is 19:30 in Vladivostok (UTC+10), inside 19:00-20:00, and 12:30 in Moscow.
    evening = QuietHours(time(19, 0), time(20, 0))
    assert evening.release_at(zones, datetime(2025, 1, 15, 9, 30, tzinfo=UTC)) == datetime(
        2025, 1, 15, 10, 0, tzinfo=UTC
    )


def test_a_country_with_several_zones_from_its_number() -> None:
    """A number whose zones phonenumbers lists several of is held when any one is inside."""
    zones = zones_for("+79123456789")
    assert len(zones) > 1
    # 20:30 UTC in January: 08:30 in Kamchatka (UTC+12, outside), 07:30 in Magadan (UTC+11,
    # inside until 21:00 UTC), 23:30 in Moscow (until 05:00 UTC) and 22:30 in Europe/Bucharest
    # (UTC+2, which phonenumbers lists for +7 9...): the westernmost ends last, 06:00 UTC.
    now = datetime(2025, 1, 15, 20, 30, tzinfo=UTC)
    assert NIGHT.release_at(zones, now) == datetime(2025, 1, 16, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize("zones", [[], ["Etc/Unknown"], ["Not/A_Zone"], zones_for("+999123")])
def test_unknown_numbers_are_not_held(zones: list[str]) -> None:
    """No zone, only 'Etc/Unknown' or a zone the tz data lacks: never held."""
    assert NIGHT.release_at(zones, _ny(2025, 1, 15, 3, 0)) is None


def test_now_must_be_aware() -> None:
    """A naive `now` is a programming error, not a guess about the host's zone."""
    with pytest.raises(ValueError, match="aware"):
        NIGHT.release_at(["America/New_York"], datetime(2025, 1, 15, 3, 0))


def test_dst_spring_forward_night_is_an_hour_shorter() -> None:
    """9 March 2025, New York skips 02:00-03:00: 21:00 EST to 08:00 EDT is 10 hours."""
    release = NIGHT.release_at(["America/New_York"], _ny(2025, 3, 9, 1, 30))
    assert release == _ny(2025, 3, 9, 8, 0) == datetime(2025, 3, 9, 12, 0, tzinfo=UTC)


def test_dst_an_end_in_the_skipped_hour_releases_when_the_clock_jumps() -> None:
    """Ending at 02:30, which 9 March 2025 never reads in New York: released at the jump,
    03:00 EDT (07:00 UTC), the first instant the local clock is past 02:30."""
    window = QuietHours(time(22, 0), time(2, 30))
    release = window.release_at(["America/New_York"], _ny(2025, 3, 9, 1, 59))
    assert release == datetime(2025, 3, 9, 7, 0, tzinfo=UTC)
    assert window.release_at(["America/New_York"], release) is None


def test_dst_a_start_in_the_skipped_hour_starts_at_the_jump() -> None:
    """Starting at 02:30 on the spring-forward day: the window opens at 03:00 EDT."""
    window = QuietHours(time(2, 30), time(6, 0))
    assert window.release_at(["America/New_York"], datetime(2025, 3, 9, 6, 59, tzinfo=UTC)) is None
    assert window.release_at(["America/New_York"], datetime(2025, 3, 9, 7, 0, tzinfo=UTC)) == (
        _ny(2025, 3, 9, 6, 0)
    )


def test_dst_an_end_in_the_repeated_hour_means_its_first_occurrence() -> None:
    """2 November 2025, New York reads 01:00-02:00 twice: a window ending 01:30 ends at the first
    01:30 (EDT); during the repeated hour the window is over, not open again."""
    window = QuietHours(time(22, 0), time(1, 30))
    assert window.release_at(["America/New_York"], _ny(2025, 11, 2, 1, 10)) == _ny(
        2025, 11, 2, 1, 30
    )
    assert window.release_at(["America/New_York"], _ny(2025, 11, 2, 1, 10, fold=1)) is None


def test_dst_fall_back_night_is_an_hour_longer() -> None:
    """2 November 2025: 21:00 EDT to 08:00 EST, and the repeated hour is inside."""
    assert NIGHT.release_at(["America/New_York"], _ny(2025, 11, 2, 1, 30, fold=1)) == (
        datetime(2025, 11, 2, 13, 0, tzinfo=UTC)
    )


def test_southern_hemisphere_dst() -> None:
    """Sydney leaves DST on 6 April 2025 (03:00 -> 02:00): 21:00-08:00 still ends at 08:00 AEST."""
    sydney = ZoneInfo("Australia/Sydney")
    now = datetime(2025, 4, 6, 2, 30, tzinfo=sydney).astimezone(UTC)
    release = NIGHT.release_at(zones_for("+61212345678"), now)
    assert release == datetime(2025, 4, 6, 8, 0, tzinfo=sydney).astimezone(UTC)
    assert release == datetime(2025, 4, 5, 22, 0, tzinfo=UTC)
