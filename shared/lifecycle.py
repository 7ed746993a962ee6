"""The message status state machine and the verdict on a provider's status word: pure, no I/O.

The README's "Message lifecycle" describes it. `shared.status` locks the message, records the raw
update, asks `judge` and carries the verdict out with SQL; nothing here touches the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

from shared.providers.base import StatusUpdate

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
    # Not handed to a provider before its validity ended; reached only from pending.
    "expired": 4,
}
STATUSES: Final = frozenset(RANK)
TERMINAL: Final = frozenset({"delivered", "undelivered", "failed", "read", "canceled", "expired"})
FAILED: Final = frozenset({"failed", "undelivered"})
# Statuses the CHECK on sms_messages allows without a provider sid.
SIDLESS: Final = frozenset({"pending", "failed", "canceled", "expired"})


def can_move(current: str, new: str) -> bool:
    """Whether `current -> new` is a real forward transition.

    Status only rises by rank; terminal states are final except delivered -> read; canceled is
    reachable only from pending, and so is expired.
    """
    if current not in RANK or new not in RANK or current == new:
        return False
    if new in ("canceled", "expired"):
        return current == "pending"
    if current in TERMINAL:
        return current == "delivered" and new == "read"
    return RANK[new] > RANK[current]


def sources_for(new: str) -> list[str]:
    """Every status from which `new` may be reached: the guard of a status UPDATE's WHERE clause."""
    return sorted(s for s in RANK if can_move(s, new))


@dataclass(frozen=True)
class MessageFacts:
    """What judging an update needs to know of its message, as locked for that update."""

    status: str
    provider: str
    sid: str | None  # the provider sid recorded for it; None before the first


@dataclass(frozen=True)
class ProviderMismatch:
    """The update comes from another provider than the message's: history only."""


@dataclass(frozen=True)
class DuplicateSend:
    """The update is about a second provider message under our id: history, and a double send."""

    stray_sid: str
    recorded_sid: str | None  # None: the message has none (another message holds its copy)


@dataclass(frozen=True)
class Unrecognized:
    """The provider's status word is not one of ours: recorded only."""


@dataclass(frozen=True)
class Stale:
    """`to` is not a forward move from the message's status (late, repeated or after final)."""

    to: str


@dataclass(frozen=True)
class NoSid:
    """A forward move to a status the message may hold only with a provider sid, and it has none."""

    to: str


@dataclass(frozen=True)
class Move:
    """Move the message to `to`: one UPDATE guarded by `sources`, and an alert when failed."""

    to: str
    terminal: bool
    failed: bool
    error_code: str | None  # only when failed
    error_message: str | None  # only when failed

    @property
    def sources(self) -> list[str]:
        return sources_for(self.to)


Verdict: TypeAlias = ProviderMismatch | DuplicateSend | Unrecognized | Stale | NoSid | Move


@dataclass(frozen=True)
class RecordSidFirst:
    """Give the message its first sid, then carry out `recorded`, or `taken` if another message
    already owns that sid (the two differ only for a status that needs a sid)."""

    sid: str
    recorded: Verdict
    taken: Verdict


def judge(message: MessageFacts, update: StatusUpdate) -> Verdict | RecordSidFirst:
    """What a provider's status update does to its message (README, "Message lifecycle")."""
    if update.provider != message.provider:
        return ProviderMismatch()
    if update.sid and message.sid and update.sid != message.sid:
        # A second provider message under our id: a double send. Its fate is not this message's
        # (the recorded sid's callbacks still move it), so it is kept as history and reported.
        return DuplicateSend(stray_sid=update.sid, recorded_sid=message.sid)
    if message.sid is None and update.sid:
        # A callback that beats the dispatcher's own recording of the sid brings the sid first.
        return RecordSidFirst(
            sid=update.sid,
            recorded=_status_verdict(message.status, update, has_sid=True),
            taken=_status_verdict(message.status, update, has_sid=False),
        )
    return _status_verdict(message.status, update, has_sid=message.sid is not None)


def _status_verdict(current: str, update: StatusUpdate, *, has_sid: bool) -> Verdict:
    new = update.status
    if new == "canceled":
        # Our "canceled" means we stopped it before any provider saw it; a provider that cancels a
        # message it accepted means it will never arrive, which is a delivery failure.
        new = "failed"
    if new is None:
        return Unrecognized()
    if not can_move(current, new):
        return Stale(new)
    if not has_sid and new not in SIDLESS:
        return NoSid(new)
    if new not in FAILED:
        return Move(
            new, terminal=new in TERMINAL, failed=False, error_code=None, error_message=None
        )
    reason = f"{update.provider} reported {update.raw_status}"
    return Move(
        new,
        terminal=new in TERMINAL,
        failed=True,
        error_code=update.error_code,
        error_message=f"{reason} (error {update.error_code})" if update.error_code else reason,
    )
