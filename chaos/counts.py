"""The verdict of one scenario, Jepsen style, as a pure function of three records: what the client
was told (acks), what the provider accepted (the simulator's log) and what we wrote (the database).

No I/O here: tests/test_chaos_counts.py pins every count with hand-made records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

# Final states a message may legitimately reach without the provider ever accepting it.
UNSENT_FINAL = frozenset({"failed", "canceled", "expired"})

# A provider's status word -> our delivery_status (DESIGN section 4), for the fidelity check.
PROVIDER_STATUS = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "initiated": "sending",
    "sending": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "canceled",
    "read": "read",
}

Outcome = Literal["ok", "fail", "info"]


@dataclass(frozen=True)
class Ack:
    """The end of one client request chain (one message, same Idempotency-Key on every try).

    `ok`: a 202 with the message id; `fail`: a definite refusal (4xx); `info`: no definite answer
    (timeout, connection error or 5xx on the last try): the message may or may not exist.
    """

    body: str
    outcome: Outcome
    message_id: str | None = None


@dataclass(frozen=True)
class SimMessage:
    """One message the provider (simulator) accepted."""

    sid: str
    provider: str
    body: str
    status: str
    message_id: str | None = None


@dataclass(frozen=True)
class DbMessage:
    """One row of sms_messages."""

    id: str
    body: str
    status: str
    provider: str
    provider_sid: str | None


@dataclass(frozen=True)
class Counts:
    """What one scenario left behind; `ok` is the pass/fail verdict."""

    requests: int  # client request chains (messages the client tried to send)
    acked: int  # 202 received
    rejected: int  # definite 4xx: should be 0
    indeterminate: int  # no definite answer ...
    indeterminate_in_db: int  # ... but the message was written
    indeterminate_absent: int  # ... and it was not
    lost: int  # acked, never accepted by the provider, and not in a legitimate unsent final state
    duplicated: int  # bodies the provider accepted more than once
    duplicate_copies: int  # extra provider messages beyond the first, over all those bodies
    unexpected: int  # provider messages whose body is in no sms_messages row
    stuck: int  # messages still pending or with a send_sms outbox row
    db_messages: int
    db_doubles: int  # bodies written more than once (an idempotency failure)
    provider_messages: int  # messages at the provider (simulator)
    failed: int  # messages finally failed (legitimate when the provider never accepted them)
    failed_but_sent: int  # failed in the database although the provider accepted the body
    status_checked: int  # messages compared with the provider's final status
    status_matched: int
    status_fidelity_pct: float
    sid_unknown: int  # a recorded provider_sid the provider does not have
    wrong_sid: int  # a recorded provider_sid whose provider message has another body
    detected_doubles: int  # duplicate_send_detected events
    db_statuses: dict[str, int]

    @property
    def ok(self) -> bool:
        """No acked message lost, none sent twice, none stuck, nothing sent that we never wrote,
        no message holding the provider identity of another."""
        return not (self.lost or self.duplicated or self.stuck or self.unexpected or self.wrong_sid)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def provider_status(word: str) -> str:
    """Our delivery_status for a provider's status word (unknown words stay as they are)."""
    return PROVIDER_STATUS.get(word.lower(), word.lower())


def count(
    acks: Sequence[Ack],
    sim: Sequence[SimMessage],
    db: Sequence[DbMessage],
    *,
    outbox_message_ids: Collection[str] = (),
    detected_doubles: int = 0,
) -> Counts:
    """The counts of one scenario from its three records (see Counts for each definition)."""
    at_provider = Counter(m.body for m in sim)
    db_by_id = {m.id: m for m in db}
    db_by_body: dict[str, DbMessage] = {}
    db_bodies = Counter(m.body for m in db)
    for m in db:
        db_by_body.setdefault(m.body, m)
    sim_by_sid = {(m.provider, m.sid): m for m in sim}

    acked = [a for a in acks if a.outcome == "ok"]
    lost = 0
    for a in acked:
        if at_provider[a.body]:
            continue
        row = db_by_id.get(a.message_id or "") or db_by_body.get(a.body)
        if row is None or row.status not in UNSENT_FINAL:
            lost += 1
    unsure = [a for a in acks if a.outcome == "info"]
    unsure_in_db = sum(1 for a in unsure if a.body in db_bodies)

    outbox = set(outbox_message_ids)
    stuck = sum(1 for m in db if m.status == "pending" or m.id in outbox)
    twice = {body: n for body, n in at_provider.items() if n > 1}

    checked = matched = sid_unknown = wrong_sid = failed_but_sent = 0
    for m in db:
        if m.status == "failed" and at_provider[m.body]:
            failed_but_sent += 1
        if m.provider_sid is None:
            if at_provider[m.body]:
                checked += 1  # the provider has it, we do not know its sid: a mismatch
            continue
        checked += 1
        remote = sim_by_sid.get((m.provider, m.provider_sid))
        if remote is None:
            sid_unknown += 1
        elif remote.body != m.body:
            wrong_sid += 1  # adopted another message's provider copy
        elif provider_status(remote.status) == m.status:
            matched += 1

    return Counts(
        requests=len(acks),
        acked=len(acked),
        rejected=sum(1 for a in acks if a.outcome == "fail"),
        indeterminate=len(unsure),
        indeterminate_in_db=unsure_in_db,
        indeterminate_absent=len(unsure) - unsure_in_db,
        lost=lost,
        duplicated=len(twice),
        duplicate_copies=sum(n - 1 for n in twice.values()),
        unexpected=sum(1 for m in sim if m.body not in db_bodies),
        stuck=stuck,
        db_messages=len(db),
        db_doubles=sum(1 for n in db_bodies.values() if n > 1),
        provider_messages=len(sim),
        failed=sum(1 for m in db if m.status == "failed"),
        failed_but_sent=failed_but_sent,
        status_checked=checked,
        status_matched=matched,
        status_fidelity_pct=round(100.0 * matched / checked, 2) if checked else 100.0,
        sid_unknown=sid_unknown,
        wrong_sid=wrong_sid,
        detected_doubles=detected_doubles,
        db_statuses=dict(sorted(Counter(m.status for m in db).items())),
    )


def examples(
    acks: Sequence[Ack],
    sim: Sequence[SimMessage],
    db: Sequence[DbMessage],
    *,
    outbox_message_ids: Collection[str] = (),
    limit: int = 5,
) -> dict[str, list[str]]:
    """A few ids behind each failing count, to find in the logs (never a body or a number).

    lost and stuck: our message ids; duplicated: `message_id provider:sid,sid` per body;
    unexpected: provider sids; wrong_sid: `message_id provider:sid` (the sid holds another body).
    """
    db_by_body = {m.body: m for m in db}
    by_body: dict[str, list[SimMessage]] = {}
    for m in sim:
        by_body.setdefault(m.body, []).append(m)
    lost = []
    for a in acks:
        if a.outcome != "ok" or a.body in by_body:
            continue
        row = db_by_body.get(a.body)
        if row is None or row.status not in UNSENT_FINAL:
            lost.append(row.id if row is not None else (a.message_id or "?"))
    duplicated = [
        f"{db_by_body[b].id if b in db_by_body else '?'} {ms[0].provider}:"
        + ",".join(m.sid for m in ms)
        for b, ms in by_body.items()
        if len(ms) > 1
    ]
    outbox = set(outbox_message_ids)
    sim_by_sid = {(m.provider, m.sid): m for m in sim}
    wrong = [
        f"{m.id} {m.provider}:{m.provider_sid}"
        for m in db
        if m.provider_sid is not None
        and (remote := sim_by_sid.get((m.provider, m.provider_sid))) is not None
        and remote.body != m.body
    ]
    found = {
        "lost": lost,
        "duplicated": duplicated,
        "unexpected": [m.sid for m in sim if m.body not in db_by_body],
        "stuck": [m.id for m in db if m.status == "pending" or m.id in outbox],
        "wrong_sid": wrong,
    }
    return {name: ids[:limit] for name, ids in found.items() if ids}
