"""The pace measurement's arithmetic (bench/pace.py) and the bodies it seeds (bench/seed.py), on
hand-made simulator records: no processes, no database."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bench import pace, seed
from shared.segments import count_segments


def record(ats: list[float], segments: int = 1, refused: int = 0, most: int = 0) -> dict[str, Any]:
    """A GET /_sim/sends report of one sender."""
    return {
        "sends": [{"at": at, "segments": segments} for at in ats],
        "refused": refused,
        "max_window_segments": most,
    }


def test_steady_window_starts_one_second_after_the_first_send() -> None:
    """The burst's first second is left out; the window is [t0 + 1, t0 + 1 + W)."""
    burst = [100.0] * 5
    steady = [100.0 + k / 2 for k in range(2, 30)]  # 2 per second from t0 + 1
    got = pace.sender_pace("+1", record(burst + steady, most=7), window=10.0)
    assert got.segments_in_window == 20
    assert got.covered
    assert got.max_window_segments == 7


def test_segments_not_messages_are_counted() -> None:
    """A two-segment send counts twice toward the achieved rate."""
    got = pace.sender_pace("+1", record([10.0, 11.0, 11.5], segments=2), window=1.0)
    assert got.segments_in_window == 4


def test_a_sender_that_stops_early_is_not_covered() -> None:
    """A sender whose last send comes before the window's end ran dry (or stalled)."""
    got = pace.sender_pace("+1", record([0.0, 1.0, 5.0]), window=10.0)
    assert not got.covered


def test_a_sender_that_never_sent() -> None:
    """No sends: nothing counted, not covered, refusals still reported."""
    got = pace.sender_pace("+1", record([], refused=3), window=10.0)
    assert (got.segments_in_window, got.covered, got.refused) == (0, False, 3)


@pytest.mark.parametrize(("mps", "burst"), [(50.0, 50), (5.0, 5), (1.0, 1), (0.5, 1), (2.5, 3)])
def test_burst_is_the_service_default(mps: float, burst: int) -> None:
    """The pace the bench configures has the burst SENDER_DEFAULT_MPS would give it."""
    assert pace.burst_of(mps) == burst


def test_sender_numbers_are_distinct_and_not_simulator_test_numbers() -> None:
    """Every configuration has its own valid E.164 numbers, none of the +1500555 test set."""
    numbers = [n for i, (count, _) in enumerate(pace.CONFIGS) for n in pace.numbers(i, count)]
    assert len(numbers) == len(set(numbers)) == sum(count for count, _ in pace.CONFIGS)
    assert all(re.fullmatch(r"\+[1-9][0-9]{1,14}", n) for n in numbers)
    assert not any(n.startswith("+1500555") for n in numbers)


def test_every_long_body_has_two_segments_and_the_rest_one() -> None:
    """seed.body with long_every: every 7th body costs two segments, bodies stay unique."""
    bodies = [seed.body("t", i, pace.LONG_EVERY) for i in range(70)]
    costs = [count_segments(b)[0] for b in bodies]
    assert costs == [2 if i % 7 == 6 else 1 for i in range(70)]
    assert len(set(bodies)) == len(bodies)


def test_long_bodies_are_spread_over_every_sender() -> None:
    """With senders taken round robin, each of 10 senders gets two-segment messages."""
    count = 10
    long_by_sender = {i % count for i in range(700) if i % pace.LONG_EVERY == pace.LONG_EVERY - 1}
    assert long_by_sender == set(range(count))
