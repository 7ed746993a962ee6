"""Quiet hours (QUIET_HOURS): when a recipient's local time says not to send. Pure, no clock.

A window is read in each time zone of the recipient's number and measured in instants: the one
that starts on local day D runs from D at `start` to `end` (on D + 1 when it wraps midnight).
A local wall time that happens twice (autumn) means its first occurrence; one that never
happens (spring) means the instant the clock jumps past it. So on a spring-forward day a window
ending at 02:30 in New York ends at 03:00 EDT, when the clock first reads later than 02:30.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as number_zones

# What phonenumbers answers for a number it cannot place.
UNKNOWN_ZONE = "Etc/Unknown"
_WINDOW = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


@dataclass(frozen=True)
class QuietHours:
    """A daily window [start, end) of local wall time; start > end wraps midnight."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ValueError("the window must start and end at different times of day")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("quiet hours are local wall times, without a time zone")

    @classmethod
    def parse(cls, text: str) -> QuietHours | None:
        """'21:00-08:00' -> QuietHours; '' -> None (off); ValueError on anything else."""
        text = text.strip()
        if not text:
            return None
        match = _WINDOW.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not HH:MM-HH:MM (such as 21:00-08:00)")
        sh, sm, eh, em = (int(g) for g in match.groups())
        if not (sh < 24 and eh < 24 and sm < 60 and em < 60):
            raise ValueError(f"{text!r} has a time of day outside 00:00-23:59")
        return cls(time(sh, sm), time(eh, em))

    @property
    def wraps(self) -> bool:
        """True when the window crosses midnight (21:00-08:00)."""
        return self.start > self.end

    def release_at(self, zones: Sequence[str], now: datetime) -> datetime | None:
        """When the window ends (UTC) for the last of `zones` inside it at `now`; None if none is.

        Unknown zone names (and phonenumbers' 'Etc/Unknown') are skipped: a number that cannot be
        placed is never held.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        ends = [end for zone in _zones(zones) if (end := self._ends_at(zone, now)) is not None]
        return max(ends).astimezone(UTC) if ends else None

    def _ends_at(self, zone: ZoneInfo, now: datetime) -> datetime | None:
        today = now.astimezone(zone).date()
        # The window that started yesterday may still be open (wrapping, or stretched by DST).
        for day in (today - timedelta(days=1), today):
            start = _instant(zone, datetime.combine(day, self.start))
            end_day = day + timedelta(days=1) if self.wraps else day
            end = _instant(zone, datetime.combine(end_day, self.end))
            if start <= now < end:
                return end
        return None


def _zones(names: Sequence[str]) -> list[ZoneInfo]:
    found = []
    for name in names:
        if name == UNKNOWN_ZONE:
            continue
        try:
            found.append(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):  # a name this host's tz data lacks
            continue
    return found


def _instant(zone: ZoneInfo, wall: datetime) -> datetime:
    """The UTC instant a naive local wall time stands for (first occurrence; past a DST gap)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # `wall` falls in a gap: fold=0 reads it with the offset before the jump (an instant after
    # the jump), fold=1 with the offset after it (an instant before). The jump lies between;
    # transitions fall on whole seconds, so bisecting to a second finds it exactly.
    before = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    after = int(first.timestamp())
    while after - before > 1:
        middle = (before + after) // 2
        local = datetime.fromtimestamp(middle, zone).replace(tzinfo=None)
        if local >= wall:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, UTC)


@lru_cache(maxsize=65536)
def zones_for(number: str) -> tuple[str, ...]:
    """IANA time zones of an E.164 number (phonenumbers' geocoding); () when it cannot say."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return ()
    zones = number_zones.time_zones_for_number(parsed)
    return tuple(z for z in zones if z != UNKNOWN_ZONE)
