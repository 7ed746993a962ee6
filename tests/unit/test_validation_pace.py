"""Priority, send_at and validity of a send request, pure, against an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.config import Settings
from shared.validation import (
    CLOCK_SKEW,
    MAX_SCHEDULE_AHEAD,
    MAX_VALIDITY_SECONDS,
    PRIORITIES,
    SEND_FIELDS,
    Problem,
    Schedule,
    parse_batch,
    parse_schedule,
    parse_send,
    parse_timestamp,
)

SETTINGS = Settings()
TO = "+14155552671"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
MAX_VALIDITY = timedelta(seconds=MAX_VALIDITY_SECONDS)


def at(delta: timedelta) -> str:
    """NOW + delta as RFC 3339 (UTC, Z)."""
    return (NOW + delta).isoformat().replace("+00:00", "Z")


def codes(problems: list[Problem]) -> set[tuple[str, str]]:
    return {(p.field, p.code) for p in problems}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-28T21:00:00Z", datetime(2026, 11, 28, 21, tzinfo=UTC)),
        ("2026-11-28t21:00:00z", datetime(2026, 11, 28, 21, tzinfo=UTC)),
        ("2026-11-28T21:00:00-00:00", datetime(2026, 11, 28, 21, tzinfo=UTC)),
        (
            "2026-11-28T22:30:00.25+01:30",
            datetime(2026, 11, 28, 21, 0, 0, 250000, tzinfo=UTC),
        ),
    ],
)
def test_parse_timestamp_reads_rfc3339(raw: str, expected: datetime) -> None:
    """An RFC 3339 date-time with Z or a numeric offset (either case) is the instant it names."""
    assert parse_timestamp(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "tomorrow",
        "2026-11-28",  # a date alone
        "2026-11-28T21:00:00",  # no offset: whose 21:00?
        "2026-11-28T21:00Z",  # no seconds
        "2026-11-28 21:00:00Z",  # ISO 8601 allows a space, JSON Schema's date-time does not
        "20261128T210000Z",  # ISO 8601 basic format
        "2026-11-28T21:00:00+0100",  # offset without a colon
        "2026-02-30T00:00:00Z",  # no such day
        "2026-11-28T24:00:00Z",
        "2026-11-28T21:00:60Z",  # a leap second Python cannot hold
        "2026-11-28T21:00:00+24:00",
        "\u0662\u0660\u0662\u0666-11-28T21:00:00Z",  # Arabic-Indic digits
        "2026-11-28T21:00:00Z\n",
    ],
)
def test_parse_timestamp_refuses_everything_else(raw: str) -> None:
    """Anything but a complete RFC 3339 date-time with an offset is not a timestamp."""
    assert parse_timestamp(raw) is None


def test_no_schedule_is_normal_now_and_forever() -> None:
    """Without the fields: priority normal, no send_at, no expiry."""
    assert parse_schedule({}, NOW) == (Schedule("normal", None, None), [])
    nulls = {"priority": None, "send_at": None, "expires_at": None, "validity_seconds": None}
    assert parse_schedule(nulls, NOW) == (Schedule("normal", None, None), [])


@pytest.mark.parametrize("priority", PRIORITIES)
def test_each_priority_is_taken(priority: str) -> None:
    """high, normal and low are the priorities."""
    assert parse_schedule({"priority": priority}, NOW) == (Schedule(priority), [])


@pytest.mark.parametrize(
    ("payload", "schedule"),
    [
        ({"send_at": at(HOUR)}, Schedule(send_at=NOW + HOUR)),
        ({"send_at": at(MAX_SCHEDULE_AHEAD)}, Schedule(send_at=NOW + MAX_SCHEDULE_AHEAD)),
        # Within the clock skew the past is now; the time is kept as given.
        ({"send_at": at(-CLOCK_SKEW)}, Schedule(send_at=NOW - CLOCK_SKEW)),
        # Validity counts from now without send_at...
        ({"validity_seconds": 600}, Schedule(expires_at=NOW + timedelta(seconds=600))),
        ({"validity_seconds": 1}, Schedule(expires_at=NOW + timedelta(seconds=1))),
        ({"validity_seconds": MAX_VALIDITY_SECONDS}, Schedule(expires_at=NOW + MAX_VALIDITY)),
        # ...from send_at when it is ahead...
        (
            {"send_at": at(24 * HOUR), "validity_seconds": 600},
            Schedule(send_at=NOW + 24 * HOUR, expires_at=NOW + 24 * HOUR + timedelta(minutes=10)),
        ),
        # ...and from now when send_at is within the skew, so it never starts expired.
        (
            {"send_at": at(-timedelta(seconds=30)), "validity_seconds": 1},
            Schedule(send_at=NOW - timedelta(seconds=30), expires_at=NOW + timedelta(seconds=1)),
        ),
        ({"expires_at": at(HOUR)}, Schedule(expires_at=NOW + HOUR)),
        ({"expires_at": at(MAX_VALIDITY)}, Schedule(expires_at=NOW + MAX_VALIDITY)),
        (
            {"send_at": at(30 * 24 * HOUR), "expires_at": at(30 * 24 * HOUR + MAX_VALIDITY)},
            Schedule(send_at=NOW + 30 * 24 * HOUR, expires_at=NOW + 30 * 24 * HOUR + MAX_VALIDITY),
        ),
        # Another offset names the same instant.
        (
            {"send_at": "2026-11-28T14:00:00+01:00", "priority": "low"},
            Schedule("low", send_at=NOW + HOUR),
        ),
    ],
)
def test_valid_schedules(payload: dict[str, Any], schedule: Schedule) -> None:
    """Each valid combination comes out as absolute times, validity made into expires_at."""
    assert parse_schedule(payload, NOW) == (schedule, [])


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"priority": "urgent"}, {("priority", "invalid_priority")}),
        ({"priority": "HIGH"}, {("priority", "invalid_priority")}),
        ({"priority": 0}, {("priority", "invalid_type")}),
        ({"send_at": 1764331200}, {("send_at", "invalid_type")}),
        ({"send_at": "tomorrow"}, {("send_at", "invalid_timestamp")}),
        ({"send_at": "2026-11-28T21:00:00"}, {("send_at", "invalid_timestamp")}),
        ({"send_at": at(-CLOCK_SKEW - timedelta(seconds=1))}, {("send_at", "in_past")}),
        (
            {"send_at": at(MAX_SCHEDULE_AHEAD + timedelta(seconds=1))},
            {("send_at", "too_far_ahead")},
        ),
        ({"send_at": "9999-12-31T23:59:59-23:59"}, {("send_at", "too_far_ahead")}),
        ({"send_at": "0001-01-01T00:00:00+01:00"}, {("send_at", "in_past")}),
        ({"expires_at": ["x"]}, {("expires_at", "invalid_type")}),
        ({"expires_at": "soon"}, {("expires_at", "invalid_timestamp")}),
        ({"expires_at": at(timedelta(0))}, {("expires_at", "in_past")}),
        ({"expires_at": at(-HOUR)}, {("expires_at", "in_past")}),
        (
            {"send_at": at(2 * HOUR), "expires_at": at(2 * HOUR)},
            {("expires_at", "before_send_at")},
        ),
        ({"send_at": at(2 * HOUR), "expires_at": at(HOUR)}, {("expires_at", "before_send_at")}),
        (
            {"expires_at": at(MAX_VALIDITY + timedelta(seconds=1))},
            {("expires_at", "too_far_ahead")},
        ),
        ({"expires_at": "9999-12-31T23:59:59-23:59"}, {("expires_at", "too_far_ahead")}),
        ({"validity_seconds": 0}, {("validity_seconds", "out_of_range")}),
        ({"validity_seconds": -5}, {("validity_seconds", "out_of_range")}),
        (
            {"validity_seconds": MAX_VALIDITY_SECONDS + 1},
            {("validity_seconds", "out_of_range")},
        ),
        ({"validity_seconds": "60"}, {("validity_seconds", "invalid_type")}),
        ({"validity_seconds": 60.0}, {("validity_seconds", "invalid_type")}),
        ({"validity_seconds": 1.5}, {("validity_seconds", "invalid_type")}),
        ({"validity_seconds": True}, {("validity_seconds", "invalid_type")}),
        (
            {"expires_at": at(HOUR), "validity_seconds": 60},
            {("validity_seconds", "conflicting_fields")},
        ),
        # One mistake, one problem: an expiry meant for a refused send_at is judged against it.
        (
            {"send_at": at(40 * 24 * HOUR), "expires_at": at(40 * 24 * HOUR + HOUR)},
            {("send_at", "too_far_ahead")},
        ),
        # Every problem at once.
        (
            {"priority": "asap", "send_at": "x", "validity_seconds": 0},
            {
                ("priority", "invalid_priority"),
                ("send_at", "invalid_timestamp"),
                ("validity_seconds", "out_of_range"),
            },
        ),
    ],
)
def test_schedule_problems(payload: dict[str, Any], expected: set[tuple[str, str]]) -> None:
    """Each bad field gets its own code, naming the field; the unusable value comes out unset."""
    schedule, problems = parse_schedule(payload, NOW)
    assert codes(problems) == expected
    assert all(p.message for p in problems)
    fields = {field for field, _ in expected}
    if "priority" in fields:
        assert schedule.priority == "normal"
    if "send_at" in fields:
        assert schedule.send_at is None
    if fields & {"expires_at", "validity_seconds"}:
        assert schedule.expires_at is None


def test_the_clock_is_the_one_given() -> None:
    """The same request is valid or not by the `now` passed in, whatever the real time is."""
    payload = {"send_at": "2030-01-01T00:00:00Z"}
    assert parse_schedule(payload, datetime(2029, 12, 1, tzinfo=UTC))[1] == []
    assert codes(parse_schedule(payload, datetime(2029, 11, 1, tzinfo=UTC))[1]) == {
        ("send_at", "too_far_ahead")
    }
    assert codes(parse_schedule(payload, datetime(2030, 1, 2, tzinfo=UTC))[1]) == {
        ("send_at", "in_past")
    }
    # Any aware clock works, not only UTC.
    tokyo = datetime(2030, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=9)))
    assert parse_schedule(payload, tokyo) == (Schedule(send_at=tokyo), [])


def test_a_naive_clock_is_a_programming_error() -> None:
    """`now` without a time zone cannot be compared with an RFC 3339 time: refused loudly."""
    with pytest.raises(ValueError, match="aware"):
        parse_schedule({}, datetime(2026, 11, 28, 12, 0))


@given(
    send_offset=st.one_of(
        st.none(), st.integers(-2 * 60, int(MAX_SCHEDULE_AHEAD.total_seconds()) + 60)
    ),
    validity=st.integers(-10, MAX_VALIDITY_SECONDS + 10),
)
def test_validity_property(send_offset: int | None, validity: int) -> None:
    """Accepted exactly inside the documented ranges, and then the expiry is validity seconds
    after the later of send_at and now: always after both."""
    payload: dict[str, Any] = {"validity_seconds": validity}
    if send_offset is not None:
        payload["send_at"] = at(timedelta(seconds=send_offset))
    schedule, problems = parse_schedule(payload, NOW)
    send_ok = send_offset is None or -60 <= send_offset <= MAX_SCHEDULE_AHEAD.total_seconds()
    valid = send_ok and 1 <= validity <= MAX_VALIDITY_SECONDS
    assert (problems == []) == valid
    if valid:
        assert schedule.expires_at is not None
        start = NOW if schedule.send_at is None else max(NOW, schedule.send_at)
        assert schedule.expires_at - start == timedelta(seconds=validity)
        assert schedule.expires_at > NOW
        assert schedule.send_at is None or schedule.expires_at > schedule.send_at


def test_parse_send_carries_the_schedule() -> None:
    """parse_send takes the new fields and returns them on the SendInput."""
    payload = {
        "to": TO,
        "body": "x",
        "priority": "high",
        "send_at": at(HOUR),
        "validity_seconds": 60,
    }
    given_, problems = parse_send(payload, SETTINGS, now=NOW)
    assert problems == []
    assert (given_.priority, given_.send_at, given_.expires_at) == (
        "high",
        NOW + HOUR,
        NOW + HOUR + timedelta(seconds=60),
    )
    assert {"priority", "send_at", "expires_at", "validity_seconds"} <= set(SEND_FIELDS)


def test_parse_send_reports_schedule_problems_with_the_others() -> None:
    """Schedule problems come in the same list as the other fields' problems."""
    _, problems = parse_send({"body": "x", "priority": "now"}, SETTINGS, now=NOW)
    assert codes(problems) == {("to", "required"), ("priority", "invalid_priority")}


def test_parse_batch_names_each_item_schedule_problem() -> None:
    """A batch item's schedule problem is named messages[i].field; all items use one clock."""
    payload = {
        "messages": [
            {"to": TO, "body": "a", "send_at": at(HOUR)},
            {"to": TO, "body": "b", "send_at": at(-HOUR)},
            {
                "to": TO,
                "body": "c",
                "priority": "top",
                "expires_at": at(HOUR),
                "validity_seconds": 5,
            },
        ]
    }
    parsed, problems = parse_batch(payload, SETTINGS, now=NOW)
    assert codes(problems) == {
        ("messages[1].send_at", "in_past"),
        ("messages[2].priority", "invalid_priority"),
        ("messages[2].validity_seconds", "conflicting_fields"),
    }
    assert parsed[0].send_at == NOW + HOUR
