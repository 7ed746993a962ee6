"""What a send attempt or a reconciliation lookup leads to, as values (River's way).

Pure: no I/O, no clock, no randomness of its own. The dispatcher gathers the facts (the claimed
work, the provider's answer or error, the policy, the clock reading in `work.claimed_at`, a random
draw) and gets back one outcome; `dispatcher.outcomes` is the one place that writes it.

- `Sent`: the provider accepted the message (or reconciliation found the copy): record its sid.
- `Retry`: send again after `delay_seconds`; `unresolved` keeps the attempt for reconciliation.
- `Reconcile`: no attempt is left but the last may have reached the provider: look it up once
  more (after `delay_seconds`) before the message is failed.
- `Fail`: the message has finally failed (permanent error, or no attempt left).
- `Pause`: a configuration error: pause the provider, give the attempt back.
- `GiveBack`: no provider call was made (inside the settle window, a lookup that missed, too close
  to the lease end): the row comes back after `delay_seconds` with its attempt returned.
- `Resend`: an earlier attempt is known not to have reached the provider: send now.
- `Drop`: the message is no longer pending (canceled, moved on by a callback): leave it unsent.
- `Expire`: the message's validity ended before a provider took it: `expired`, never sent.
- `Hold`: quiet hours in the recipient's time zone: back to the queue until `until`, unspent.
- `Suppress`: the recipient opted out after the message was queued: canceled, never sent.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.providers.base import Category, ProviderError, RemoteMessage, SendResult
from shared.quiet import QuietHours
from shared.retry import RetryPolicy, backoff_seconds, next_attempt_at


@dataclass(frozen=True)
class Facts:
    """What the decisions need to know about one claimed send (a view of dispatcher.outbox.Work)."""

    attempt: int
    claimed_at: datetime  # the clock of this claim (database clock, or the tests' injected one)
    delivery_status: str | None
    unresolved_since: datetime | None  # when an attempt that may have reached the provider began
    provider_sid: str | None = None  # a sid a callback naming our id already recorded
    reconcile_misses: int = 0
    last_error_code: str | None = None
    last_error_category: str | None = None
    last_error: str | None = None
    priority: str = "normal"  # high | normal | low
    expires_at: datetime | None = None  # not handed to a provider after this
    suppressed: bool = False  # the recipient opted out (sms_suppressions) after enqueue


@dataclass(frozen=True)
class Error:
    """The error an outcome records (code, outcome class, readable reason)."""

    category: str
    reason: str
    code: str | None = None
    opted_out: bool = False  # the provider says the recipient opted out of the sender

    @classmethod
    def of(cls, err: ProviderError) -> Error:
        return cls(err.category.value, err.reason, err.code, err.opted_out)


@dataclass(frozen=True)
class Sent:
    sid: str
    raw_status: str
    reconciled: bool = False


@dataclass(frozen=True)
class Retry:
    delay_seconds: float
    error: Error
    unresolved: bool


@dataclass(frozen=True)
class Reconcile:
    delay_seconds: float
    error: Error


@dataclass(frozen=True)
class Fail:
    error: Error


@dataclass(frozen=True)
class Pause:
    error: Error
    unresolved: bool


@dataclass(frozen=True)
class GiveBack:
    delay_seconds: float
    # "settle": inside the settle window; "missed": a lookup found nothing (counted toward the
    # resend); "contested": the copies found may be another message's whose call is in flight
    # right now (looked up again once that call is over); "no_time": too close to the lease end.
    reason: str = "settle"

    @property
    def missed(self) -> bool:
        return self.reason == "missed"


@dataclass(frozen=True)
class Resend:
    pass


@dataclass(frozen=True)
class Drop:
    status: str | None


@dataclass(frozen=True)
class Expire:
    expires_at: datetime


@dataclass(frozen=True)
class Hold:
    until: datetime


@dataclass(frozen=True)
class Suppress:
    pass


Outcome = (
    Sent | Retry | Reconcile | Fail | Pause | GiveBack | Resend | Drop | Expire | Hold | Suppress
)


@dataclass(frozen=True)
class Timing:
    """The settings the reconciliation decisions read."""

    provider_timeout_seconds: float
    settle_seconds: float
    lookups: int


def after_attempt(
    facts: Facts,
    result: SendResult | ProviderError,
    policy: RetryPolicy,
    *,
    rand: float,
    unresolved: bool | None = None,
) -> Outcome:
    """The outcome of one provider call (or of a failed reconciliation lookup).

    `unresolved` says whether the provider may hold the message; by default, whether the error is
    ambiguous. A lookup that failed passes True: the earlier attempt is still unresolved.
    """
    if isinstance(result, SendResult):
        return Sent(result.sid, result.raw_status)
    err = result
    error = Error.of(err)
    maybe_sent = err.category is Category.AMBIGUOUS if unresolved is None else unresolved
    if err.category is Category.PERMANENT:
        return Fail(error)
    if err.category is Category.CONFIG:
        return Pause(error, unresolved=maybe_sent)
    nxt = next_attempt_at(
        facts.claimed_at, facts.attempt, policy, retry_after=err.retry_after, rand=rand
    )
    if nxt is not None:
        return Retry((nxt - facts.claimed_at).total_seconds(), error, unresolved=maybe_sent)
    if maybe_sent and facts.attempt <= policy.max_attempts:
        # No attempt left, but the last may have been sent: look it up once more before failing.
        return Reconcile(backoff_seconds(facts.attempt, policy, rand=rand), error)
    return Fail(error)


def too_late_to_call() -> GiveBack:
    """Too close to the lease end to call safely: the started attempt goes back, unspent."""
    return GiveBack(0.0, reason="no_time")


def before_lookup(facts: Facts, timing: Timing) -> Outcome | None:
    """What a claimed send needs before any provider call; None: look the earlier attempt up.

    A callback that named our id already proved the copy exists; an attempt that may still be on
    its way to the provider is not looked up before its call's timeout and the settle window end.
    """
    if facts.delivery_status != "pending":
        return Drop(facts.delivery_status)
    if facts.provider_sid is not None:
        return Sent(facts.provider_sid, "callback", reconciled=True)
    if facts.unresolved_since is None:
        return Resend()
    wait = (window_end(facts.unresolved_since, timing) - facts.claimed_at).total_seconds()
    if wait > 0:
        return GiveBack(wait)
    return None


def window_end(started: datetime, timing: Timing) -> datetime:
    """The latest time a copy of an attempt started at `started` is expected to land."""
    return started + timedelta(seconds=timing.provider_timeout_seconds + timing.settle_seconds)


# A copy created this close before another message's call started may still be that call's.
CONTEST_SKEW = timedelta(seconds=2)


def after_lookup(
    facts: Facts,
    copies: Sequence[RemoteMessage],
    taken: Collection[str],
    policy: RetryPolicy,
    timing: Timing,
    in_flight_since: datetime | None = None,
    rivals: Sequence[datetime] = (),
) -> Outcome:
    """The outcome of a reconciliation lookup that answered.

    The oldest copy no other message of ours holds is adopted, unless another message of ours to
    the same recipient has a call in flight (`in_flight_since`: when the earliest such call
    started) and the copy is younger than that call: it may be that call's, not yet recorded, so
    the lookup is repeated once the call is over. Nothing is sent again until `timing.lookups`
    lookups, a settle window apart, have all missed; an attempt past the policy's last is then
    failed rather than resent.

    `rivals`: when the attempts of the other messages of ours that could have made these copies
    (same recipient, and same body where the provider compares bodies) started, while theirs are
    still unresolved or in flight. A copy created after a rival's attempt started, and that rival
    started after this attempt, is the rival's rather than ours: the attempt that started last
    before a copy appeared is the one that made it. (SignalWire: a copy of one message of two to
    one recipient, the other never sent, was adopted by the wrong one; it then resent its own.)
    """
    free = [c for c in copies if c.sid not in taken]
    if in_flight_since is not None:
        mine = [
            c
            for c in free
            if c.created_at is not None and c.created_at < in_flight_since - CONTEST_SKEW
        ]
        if free and not mine:
            return GiveBack(timing.provider_timeout_seconds + 1.0, reason="contested")
        free = mine
    free = [c for c in free if not _rivals_copy(facts, c, rivals)]
    if free:
        return Sent(free[0].sid, free[0].raw_status, reconciled=True)
    if facts.reconcile_misses + 1 < timing.lookups:
        return GiveBack(timing.settle_seconds, reason="missed")
    if facts.attempt > policy.max_attempts:
        # The ambiguous last attempt, now known not to have reached the provider.
        return Fail(
            Error(
                facts.last_error_category or Category.AMBIGUOUS.value,
                facts.last_error or "no attempts left",
                facts.last_error_code,
            )
        )
    return Resend()


def _rivals_copy(facts: Facts, copy: RemoteMessage, rivals: Sequence[datetime]) -> bool:
    """Whether another attempt started after ours and before `copy` was created (within the
    clocks' skew): that attempt, the closer one, made it."""
    ours = facts.unresolved_since
    if ours is None or copy.created_at is None:
        return False
    created = copy.created_at + CONTEST_SKEW
    return any(ours < r <= created for r in rivals)


def before_send(
    facts: Facts, *, quiet: QuietHours | None, zones: Sequence[str]
) -> Suppress | Expire | Hold | None:
    """The last word before a call (no attempt of this message is in doubt any more).

    A recipient who opted out since the message was queued is never sent it (canceled). A message
    past its validity is expired, never sent. Outside high priority, a recipient whose
    time zone (any of `zones`) is inside the quiet hours is held until the window ends for all of
    them, or until the message expires if that comes first (it then expires). None: send now.
    """
    if facts.suppressed:
        return Suppress()
    if facts.expires_at is not None and facts.claimed_at >= facts.expires_at:
        return Expire(facts.expires_at)
    if quiet is None or facts.priority == "high":
        return None
    release = quiet.release_at(zones, facts.claimed_at)
    if release is None:
        return None
    if facts.expires_at is not None and facts.expires_at < release:
        return Hold(facts.expires_at)
    return Hold(release)


def within_validity(facts: Facts, outcome: Outcome) -> Outcome:
    """A retry that could only come after the message expires is no retry: it expires now.

    Only when the failed attempt is known not to have reached the provider; an attempt in doubt
    is still looked up first (it may have been sent before the validity ended).
    """
    if (
        isinstance(outcome, Retry)
        and not outcome.unresolved
        and facts.expires_at is not None
        and facts.claimed_at + timedelta(seconds=outcome.delay_seconds) >= facts.expires_at
    ):
        return Expire(facts.expires_at)
    return outcome


def validity_left(facts: Facts) -> int | None:
    """Whole seconds of validity left at the claim, for providers that take one (None: no limit)."""
    if facts.expires_at is None:
        return None
    return max(1, int((facts.expires_at - facts.claimed_at).total_seconds()))
