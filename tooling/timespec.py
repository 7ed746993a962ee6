"""Times and durations as operators type them: `90s`, `15m`, `6h`, `30d`, `2w`, or ISO 8601."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

_DURATION: Final = re.compile(r"^\s*(\d{1,9})\s*([smhdw])\s*$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """`30d` -> 30 days; ValueError for anything else (a unit is required)."""
    m = _DURATION.match(text.lower())
    if m is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 6h, 30d, 2w)")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def parse_when(text: str, now: datetime) -> datetime:
    """A point in time: a duration means that long before `now`; ISO 8601 without an offset
    is UTC."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use ISO 8601, e.g. 2025-01-31T12:00Z, or an age like 6h)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
