"""The overview's chart geometry (api/ops/charts.py): pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.ops import charts

STEP = timedelta(minutes=5)


def _row(start: datetime, **counts: int) -> dict[str, object]:
    base = dict.fromkeys(("sent", "reconciled", "retryable", "permanent", "ambiguous", "config"), 0)
    return {"bucket": start, **base, **counts}


def test_origin_makes_the_last_bucket_hold_now() -> None:
    """The first of 12 five-minute buckets starts 55 minutes before the bucket holding now."""
    now = datetime(2026, 12, 5, 10, 7, 30, tzinfo=UTC)
    assert charts.bucket_origin(now, STEP, 12) == datetime(2026, 12, 5, 9, 10, tzinfo=UTC)


def test_buckets_fill_the_gaps_with_zeros() -> None:
    """Every bucket of the span is there, empty ones as zero; reconciled counts as sent and
    permanent plus config as failed."""
    origin = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
    rows = [_row(origin + STEP, sent=3, reconciled=1, permanent=1, config=2, retryable=4)]
    buckets = charts.buckets_of(rows, origin, STEP, 3)
    assert [b.start for b in buckets] == [origin, origin + STEP, origin + 2 * STEP]
    assert [b.total for b in buckets] == [0, 11, 0]
    assert buckets[1].counts == {"sent": 4, "retryable": 4, "ambiguous": 0, "failed": 3}


def test_stacked_bars_are_proportional_and_patterned() -> None:
    """Segments stack from the baseline in SERIES order, their heights in proportion to the
    counts on a round axis, each with its own pattern and a title naming class and count."""
    origin = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
    buckets = charts.buckets_of([_row(origin, sent=6, permanent=4)], origin, STEP, 2)
    chart = charts.stacked("twilio, last hour", buckets, "%H:%M", 1)
    sent, failed = chart.bars
    assert (sent.pattern, failed.pattern) == ("solid", "cross")
    assert sent.y + sent.height == pytest.approx(chart.baseline)
    assert failed.y + failed.height == pytest.approx(sent.y)
    assert sent.height / failed.height == pytest.approx(6 / 4, rel=0.01)
    assert sent.title == "09:00: Sent 6" and failed.title == "09:00: Failed (permanent or config) 4"
    assert [label for _, label in chart.y_ticks] == ["0", "5", "10"]
    assert [label for _, label in chart.x_labels] == ["09:00", "09:05"]


def test_an_empty_chart_has_no_bars_and_a_unit_axis() -> None:
    """No attempts: no bars, and the axis still reads 0 to 1."""
    origin = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
    chart = charts.stacked("signalwire", charts.buckets_of([], origin, STEP, 4), "%H:%M", 2)
    assert chart.bars == [] and [label for _, label in chart.y_ticks] == ["0", "1"]
    assert len(chart.x_labels) == 2
