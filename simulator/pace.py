"""How fast each sender may send (`enforce_mps`), and when each of its accepted sends arrived.

The rule: a send is refused when the segments accepted from its `from` number in the trailing
second, plus its own, would exceed `ceil(mps) + burst`. That is the most a correct pacer (a token
bucket or GCRA of `mps` segments per second and `burst` segments) can put in any one-second
window, so the simulator refuses only what a correct dispatcher never sends.

Pure: the clock is passed in (monotonic seconds by default), nothing here does I/O.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

WINDOW = 1.0  # seconds: the rule and max_in_window look at one-second windows
ANY_SENDER = "*"  # the enforce_mps key whose rule covers every number without its own


@dataclass(frozen=True)
class PaceRule:
    """A sender's pace: `mps` segments per second, `burst` segments at once."""

    mps: float
    burst: int

    @classmethod
    def of(cls, mps: float, burst: int | None = None) -> PaceRule:
        """A rule with the default burst max(1, ceil(mps)); ValueError if either is out of range."""
        if not (math.isfinite(mps) and mps > 0):
            raise ValueError(f"mps must be a positive number, not {mps!r}")
        chosen = max(1, math.ceil(mps)) if burst is None else burst
        if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen < 1:
            raise ValueError(f"burst must be a whole number of segments >= 1, not {burst!r}")
        return cls(float(mps), chosen)

    @property
    def limit(self) -> int:
        """The most segments the trailing second may hold: ceil(mps) + burst."""
        return math.ceil(self.mps) + self.burst

    def public(self) -> dict[str, Any]:
        return {"mps": self.mps, "burst": self.burst, "limit": self.limit}


def parse_rules(value: Any) -> dict[str, PaceRule]:
    """`enforce_mps` from JSON (`{"+1...": 1, "*": {"mps": 10, "burst": 20}}`) or a flag.

    A value is a number (mps, default burst), `{"mps": m, "burst": b}` or `[m, b]`; null drops
    the number. A flag or SIM_ENFORCE_MPS may also be `NUMBER=MPS[:BURST],...`
    (`*=10,+15005550006=1:2`).
    """
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            value = json.loads(text)
        else:
            value = dict(item.split("=", 1) for item in text.split(",") if item.strip())
    if not isinstance(value, Mapping):
        raise ValueError("enforce_mps must map a number (or '*') to its mps")
    rules: dict[str, PaceRule] = {}
    for raw_number, spec in value.items():
        number = str(raw_number).strip()
        if spec is None:
            continue
        rules[number] = _rule(spec)
    return rules


def _rule(spec: Any) -> PaceRule:
    if isinstance(spec, Mapping):
        extra = set(spec) - {"mps", "burst", "limit"}  # `limit` is what public() adds
        if extra or "mps" not in spec:
            raise ValueError(f"a pace is {{'mps': m, 'burst': b}}, not {dict(spec)!r}")
        rule = PaceRule.of(float(spec["mps"]), _burst(spec.get("burst")))
        if spec.get("limit", rule.limit) != rule.limit:  # derived; accepted only if it agrees
            raise ValueError(f"the limit of {dict(spec)!r} is ceil(mps) + burst = {rule.limit}")
        return rule
    if isinstance(spec, list | tuple):
        mps, burst = spec
        return PaceRule.of(float(mps), _burst(burst))
    if isinstance(spec, str) and ":" in spec:
        mps, burst = spec.split(":", 1)
        return PaceRule.of(float(mps), _burst(burst))
    if isinstance(spec, bool):
        raise ValueError(f"mps must be a number, not {spec!r}")
    return PaceRule.of(float(spec))


def _burst(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"burst must be a whole number of segments, not {value!r}")
    return int(value)


def rule_for(rules: Mapping[str, PaceRule], sender: str) -> PaceRule | None:
    """The sender's own rule, else the `*` rule, else None (not enforced)."""
    return rules.get(sender) or rules.get(ANY_SENDER)


@dataclass(frozen=True)
class Send:
    """One accepted send: when it arrived (clock seconds) and how many segments it cost."""

    at: float
    segments: int


def recent(sends: Sequence[Send], now: float, window: float = WINDOW) -> list[Send]:
    """The sends (oldest first, as recorded) in the trailing window (now - window, now]."""
    found = []
    for send in reversed(sends):  # only the tail is read, however long the record
        if send.at <= now - window:
            break
        if send.at <= now:
            found.append(send)
    found.reverse()
    return found


def in_window(sends: Sequence[Send], now: float, window: float = WINDOW) -> int:
    """Segments of `sends` (oldest first) in the trailing window (now - window, now]."""
    return sum(s.segments for s in recent(sends, now, window))


def max_in_window(sends: Iterable[Send], window: float = WINDOW) -> int:
    """The most segments any window (t - window, t] holds: what the pace rule bounds."""
    ordered = sorted(sends, key=lambda s: s.at)
    best = total = start = 0
    for send in ordered:
        total += send.segments
        while ordered[start].at <= send.at - window:
            total -= ordered[start].segments
            start += 1
        best = max(best, total)
    return best


def retry_after(sends: Sequence[Send], now: float, segments: int, rule: PaceRule) -> int:
    """Whole seconds (at least 1) until a send of `segments` would fit under `rule`."""
    window = recent(sends, now)
    excess = sum(s.segments for s in window) + segments - rule.limit
    wait = WINDOW  # a send bigger than the limit never fits: come back after a window
    for send in window:  # oldest first: each that leaves the window frees its segments
        if excess <= 0:
            break
        excess -= send.segments
        wait = send.at + WINDOW - now
    return max(1, math.ceil(wait))


class PaceLimiter:
    """Per-sender record of accepted sends, and the check of each new one against its rule."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._sends: dict[str, deque[Send]] = {}
        self.refused: Counter[str] = Counter()

    def admit(self, sender: str, segments: int, rule: PaceRule | None) -> int | None:
        """Record the send and return None, or refuse it: Retry-After seconds, nothing recorded."""
        now = self.clock()
        sends = self._sends.setdefault(sender, deque())
        if rule is not None and in_window(sends, now) + segments > rule.limit:
            self.refused[sender] += 1
            return retry_after(sends, now, segments, rule)
        sends.append(Send(now, segments))
        return None

    def sends(self, sender: str) -> list[Send]:
        """The sender's accepted sends, oldest first."""
        return list(self._sends.get(sender, ()))

    def senders(self) -> list[str]:
        """Every number that had a send accepted or refused."""
        return sorted(set(self._sends) | set(self.refused))

    def reset(self) -> None:
        self._sends.clear()
        self.refused.clear()
