"""The message status state machine: pure, no I/O (DESIGN section 4)."""

from __future__ import annotations

from typing import Final

RANK: Final[dict[str, int]] = {
    "pending": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "read": 5,
    "canceled": 4,
}
STATUSES: Final = frozenset(RANK)
TERMINAL: Final = frozenset({"delivered", "undelivered", "failed", "read", "canceled"})
FAILED: Final = frozenset({"failed", "undelivered"})


def can_move(current: str, new: str) -> bool:
    """Whether `current -> new` is a real forward transition.

    Status only rises by rank; terminal states are final except delivered -> read; canceled is
    reachable only from pending.
    """
    if current not in RANK or new not in RANK or current == new:
        return False
    if new == "canceled":
        return current == "pending"
    if current in TERMINAL:
        return current == "delivered" and new == "read"
    return RANK[new] > RANK[current]


def sources_for(new: str) -> list[str]:
    """Every status from which `new` may be reached: the guard of a status UPDATE's WHERE clause."""
    return sorted(s for s in RANK if can_move(s, new))
