"""The overview's charts as geometry for an SVG drawn server-side: stacked bars of attempt
outcomes per time bucket. Pure (no I/O). Each outcome class has its own fill pattern and a
legend, every bar segment a <title>, and the page prints the same numbers as a table, so the
chart never relies on colour alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

# (key, legend label, fill pattern id in the template): sent at the bottom, failures on top.
SERIES: Final = (
    ("sent", "Sent", "solid"),
    ("retryable", "Retryable error", "hatch"),
    ("ambiguous", "Ambiguous", "dots"),
    ("failed", "Failed (permanent or config)", "cross"),
)
WIDTH: Final = 640
HEIGHT: Final = 220
LEFT: Final = 44  # room for the y-axis labels
BOTTOM: Final = 28  # room for the x-axis labels
TOP: Final = 10
RIGHT: Final = 8


@dataclass(frozen=True)
class Bucket:
    """One time bucket's outcome counts (keys of SERIES)."""

    start: datetime
    counts: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Bar:
    """One segment of a stacked bar."""

    x: float
    y: float
    width: float
    height: float
    pattern: str
    title: str


@dataclass(frozen=True)
class Chart:
    """What the template draws: bars, axis ticks and labels, and the buckets for the table."""

    title: str
    width: int
    height: int
    bars: list[Bar]
    y_ticks: list[tuple[float, str]]  # (y, label)
    x_labels: list[tuple[float, str]]  # (x centre, label)
    buckets: list[Bucket]
    baseline: float
    plot_left: int
    plot_right: int


def bucket_origin(now: datetime, step: timedelta, count: int) -> datetime:
    """The start of the first of `count` buckets of `step` whose last one contains `now`."""
    epoch = datetime(2000, 1, 1, tzinfo=now.tzinfo)
    current = epoch + ((now - epoch) // step) * step
    return current - (count - 1) * step


def outcome_counts(row: Mapping[str, Any]) -> dict[str, int]:
    """The SERIES counts of one row of events_outcomes_by_bucket (or sms_provider_outcomes_1h):
    reconciled attempts were sent; permanent and config errors both end the message."""
    return {
        "sent": int(row["sent"]) + int(row["reconciled"]),
        "retryable": int(row["retryable"]),
        "ambiguous": int(row["ambiguous"]),
        "failed": int(row["permanent"]) + int(row["config"]),
    }


def buckets_of(
    rows: Sequence[Mapping[str, Any]], origin: datetime, step: timedelta, count: int
) -> list[Bucket]:
    """`count` consecutive buckets from `origin`, empty ones included, from one provider's rows."""
    by_start = {row["bucket"]: outcome_counts(row) for row in rows}
    empty = {key: 0 for key, _, _ in SERIES}
    starts = [origin + i * step for i in range(count)]
    return [Bucket(start, by_start.get(start, empty)) for start in starts]


def _nice_top(value: int) -> int:
    """A round axis maximum at or above `value` (1, 2, 5 x 10^n)."""
    top = 1
    while True:
        for factor in (1, 2, 5):
            if top * factor >= value:
                return top * factor
        top *= 10


def stacked(title: str, buckets: Sequence[Bucket], label_format: str, label_every: int) -> Chart:
    """A stacked bar chart of `buckets`; every `label_every`-th bucket gets an x label."""
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    baseline = float(TOP + plot_height)
    top = _nice_top(max((b.total for b in buckets), default=0))
    slot = plot_width / max(len(buckets), 1)
    bar_width = slot * 0.7
    bars: list[Bar] = []
    x_labels: list[tuple[float, str]] = []
    for i, bucket in enumerate(buckets):
        x = LEFT + i * slot + (slot - bar_width) / 2
        y = baseline
        when = bucket.start.strftime(label_format)
        for key, label, pattern in SERIES:
            count = bucket.counts.get(key, 0)
            if count == 0:
                continue
            height = plot_height * count / top
            y -= height
            bars.append(Bar(round(x, 1), round(y, 1), round(bar_width, 1), round(height, 1),
                            pattern, f"{when}: {label} {count}"))  # fmt: skip
        if i % label_every == 0:
            x_labels.append((round(x + bar_width / 2, 1), when))
    fractions = (0.0, 0.5, 1.0) if top > 1 else (0.0, 1.0)
    y_ticks = [
        (round(baseline - plot_height * fraction, 1), f"{top * fraction:g}")
        for fraction in fractions
    ]
    return Chart(
        title=title,
        width=WIDTH,
        height=HEIGHT,
        bars=bars,
        y_ticks=y_ticks,
        x_labels=x_labels,
        buckets=list(buckets),
        baseline=baseline,
        plot_left=LEFT,
        plot_right=WIDTH - RIGHT,
    )
