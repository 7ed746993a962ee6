"""Summaries of repeated runs: median with min-max spread, and latency percentiles."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def spread(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """{median, min, max, runs} of one figure measured in several runs."""
    if not values:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": [round(v, digits) for v in values],
    }


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(p / 100 * len(sorted_values)), 1)
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max of latencies given in seconds, in milliseconds."""
    ordered = sorted(seconds)
    return {
        "p50_ms": round(percentile(ordered, 50) * 1000, 2),
        "p99_ms": round(percentile(ordered, 99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else math.nan,
    }


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    """a / b, None when either side is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)
