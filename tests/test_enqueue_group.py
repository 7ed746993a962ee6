"""shared.messages.enqueue_group and sms_messages_enqueue_rows (migration 0017): a group commit's
requests written by ONE call of the enqueue function, each row with its own request's values and
its own answer, as if each request had been written alone, one after the other."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import AsyncConnection

from shared import apikeys, messages
from shared.apikeys import KeyLimits
from shared.messages import EnqueueResult, NewMessage, Pending

SENDER = "+15005550006"
OTHER_SENDER = "+15005550007"
TO = "+14153000001"

# This transaction's calls of the enqueue function (pg_stat_xact_user_functions counts the calls
# of the open transaction, with track_functions = 'pl').
_CALLS = (
    "SELECT coalesce(sum(calls), 0)::int FROM pg_stat_xact_user_functions"
    " WHERE funcname = 'sms_messages_enqueue_rows'"
)


def _row(
    rid: str,
    *,
    to: str = TO,
    sender: str = SENDER,
    key: int | None = None,
    limit: int | None = None,
    idempotency_key: str | None = None,
) -> Pending:
    message = NewMessage(to_number=to, from_number=sender, provider="twilio", body=f"hi {rid}")
    request_hash = None if idempotency_key is None else f"hash-{rid}"
    return Pending(message, key, idempotency_key, request_hash, rid, limit)


def _write_group(db_url: str, rows: Sequence[Pending]) -> tuple[list[messages.Outcome], int]:
    """enqueue_group on a fresh connection that counts function calls: the outcomes, and how
    many calls of the enqueue function the group's transaction made."""
    calls: list[int] = []

    async def count(conn: AsyncConnection[Any], _: Sequence[Pending]) -> None:
        cur = await conn.execute(_CALLS)
        found = await cur.fetchone()
        assert found is not None
        calls.append(found[0])

    async def run() -> list[messages.Outcome]:
        conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
        try:
            await conn.execute("SET track_functions = 'pl'")
            return await messages.enqueue_group(
                conn, rows, lock_timeout_ms=1000, before_commit=count
            )
        finally:
            await conn.close()

    outcomes = asyncio.run(run())
    (made,) = calls
    return outcomes, made


def test_a_group_is_one_call_and_each_row_keeps_its_request_values(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """Six requests of two API keys (one with an idempotency key) are written by one call of the
    enqueue function, and each message stores its own request id, key and idempotency key."""
    first, _ = apikeys.create_key_sync(db, "first")
    second, _ = apikeys.create_key_sync(db, "second")
    rows = [
        _row("r-0", to="+14153000010", key=first),
        _row("r-1", to="+14153000011", key=second, idempotency_key="idem-1"),
        _row("r-2", to="+14153000012"),
        _row("r-3", to="+14153000010", key=second),
        _row("r-4", to="+14153000013", key=first),
        _row("r-5", to="+14153000014", key=second),
    ]
    outcomes, calls = _write_group(db_url, rows)
    assert calls == 1
    assert all(isinstance(o, EnqueueResult) for o in outcomes)
    stored = db.execute(
        "SELECT id, request_id, api_key_id, idempotency_key, to_number FROM sms_messages"
    ).fetchall()
    by_id = {r[0]: r[1:] for r in stored}
    assert len(by_id) == len(rows)
    for row, outcome in zip(rows, outcomes, strict=True):
        assert isinstance(outcome, EnqueueResult)
        assert outcome.to_number == row.message.to_number
        assert by_id[outcome.id] == (
            row.request_id, row.api_key_id, row.idempotency_key, row.message.to_number
        )  # fmt: skip


def test_each_row_of_one_call_is_judged_as_if_written_alone_in_order(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """In one call, refusals are each row's own: an opted-out row takes none of its key's
    recipient limit (2 an hour), so the two rows after it are written and the third is over the
    limit; another key's rows to the same recipient count against their own limit only."""
    limited, _ = apikeys.create_key_sync(db, "limited", limits=KeyLimits(recipient_hourly_limit=2))
    roomy, _ = apikeys.create_key_sync(db, "roomy", limits=KeyLimits(recipient_hourly_limit=3))
    db.execute(
        "INSERT INTO sms_suppressions (phone_number, sender_number, reason) VALUES (%s, %s, 'api')",
        (TO, OTHER_SENDER),
    )
    rows = [
        _row("opted-out", sender=OTHER_SENDER, key=limited, limit=2),
        _row("a", key=limited, limit=2),
        _row("roomy-a", key=roomy, limit=3),
        _row("b", key=limited, limit=2),
        _row("c", key=limited, limit=2),
        _row("roomy-b", key=roomy, limit=3),
        _row("no-limit", key=limited),
    ]
    outcomes, calls = _write_group(db_url, rows)
    assert calls == 1
    kinds = [type(o).__name__ for o in outcomes]
    assert kinds == [
        "RecipientsOptedOut", "EnqueueResult", "EnqueueResult", "EnqueueResult",
        "RecipientLimitReached", "EnqueueResult", "EnqueueResult",
    ]  # fmt: skip
    for refused in outcomes[0], outcomes[4]:
        assert isinstance(refused, messages.RecipientsOptedOut | messages.RecipientLimitReached)
        assert refused.ordinals == [0]  # the row's own request's one message
    written = db.execute("SELECT request_id FROM sms_messages ORDER BY request_id").fetchall()
    assert [r[0] for r in written] == ["a", "b", "no-limit", "roomy-a", "roomy-b"]


def test_the_functions_earlier_signature_still_enqueues_all_or_nothing(
    db: psycopg.Connection[Any],
) -> None:
    """sms_messages_enqueue (0014's signature, a process of the previous release) writes its
    rows with its one request id, and one opted-out row still refuses them all."""
    call = (
        "SELECT ord, opted_out FROM sms_messages_enqueue("
        " %(from)s::text[], %(to)s::text[], %(bodies)s::text[], %(providers)s::text[],"
        " %(segments)s::int[], %(encodings)s::text[], %(nulls)s::text[], %(nulls)s::text[],"
        " %(priorities)s::text[], %(stamps)s::timestamptz[], %(stamps)s::timestamptz[],"
        " NULL, 'old-release', NULL)"
    )

    def args(to: list[str]) -> dict[str, Any]:
        n = len(to)
        return {
            "from": [SENDER] * n, "to": to, "bodies": ["hi"] * n, "providers": ["twilio"] * n,
            "segments": [1] * n, "encodings": ["GSM-7"] * n, "nulls": [None] * n,
            "priorities": ["normal"] * n, "stamps": [None] * n,
        }  # fmt: skip

    with db.transaction():
        made = db.execute(call, args(["+14153000021", "+14153000022"])).fetchall()
    assert made == [(1, False), (2, False)]
    db.execute(
        "INSERT INTO sms_suppressions (phone_number, reason) VALUES (%s, 'api')", ("+14153000032",)
    )
    with db.transaction():
        refused = db.execute(call, args(["+14153000031", "+14153000032"])).fetchall()
    assert refused == [(2, True)]
    stored = db.execute("SELECT request_id, count(*) FROM sms_messages GROUP BY 1").fetchall()
    assert stored == [("old-release", 2)]
