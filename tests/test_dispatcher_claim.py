"""The claim and the guarded outbox writes, on real PostgreSQL connections (no provider)."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from dispatcher.outbox import Again, Outbox, Sent, Work, claim_params
from shared.config import Settings
from shared.db import open_pool
from shared.queries import q
from tests.dispatch_support import enqueue_messages, ensure_sender, later, outbox_rows, recipients

OTHER_FROM = "+15005550009"


def _claim(conn: psycopg.Connection[Any], owner: str, limit: int, now: Any = None) -> list[int]:
    rows = conn.execute(
        q("outbox_claim_due"),
        claim_params(owner, limit, 60.0, now=now),
    ).fetchall()
    return [r[0] for r in rows]


def test_two_open_claims_never_share_a_row(db_url: str, db: psycopg.Connection[Any]) -> None:
    """While one claim's transaction is still open, a second claimer passes the senders it holds
    (their pace is being spent) and takes other senders' work, never waiting; once the first
    commits, the rest of its sender's work is the second's."""
    enqueue_messages(db_url, recipients(10))
    with psycopg.connect(db_url) as a, psycopg.connect(db_url) as b:
        first = _claim(a, "a", 6)
        enqueue_messages(db_url, recipients(3, start=100), from_number=OTHER_FROM)
        b.execute("SET lock_timeout = '2s'")  # waiting on a's locks would fail the test
        second = _claim(b, "b", 6)
        a.commit()
        b.commit()
        third = _claim(b, "b", 6)
        b.commit()
    assert len(first) == 6
    assert len(second) == 3  # the other sender's three, none of the first sender's
    assert len(third) == 4
    assert not set(first) & set(second) and not set(first) & set(third)
    owners = {r["id"]: r["lease_owner"] for r in outbox_rows(db)}
    assert all(owners[i] == "a" for i in first) and all(owners[i] == "b" for i in second + third)
    senders = {r["id"]: r["sender"] for r in outbox_rows(db)}
    assert {senders[i] for i in second} == {OTHER_FROM}


def test_racing_claimers_partition_the_queue(db_url: str, db: psycopg.Connection[Any]) -> None:
    """Four threads claiming small batches at once take every row exactly once between them."""
    enqueue_messages(db_url, recipients(120))
    taken: dict[str, list[int]] = {}
    start = threading.Barrier(4)

    def worker(name: str) -> None:
        got: list[int] = []
        with psycopg.connect(db_url, autocommit=True) as conn:
            start.wait()
            while batch := _claim(conn, name, 7):
                got.extend(batch)
        taken[name] = got

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    everything = [i for got in taken.values() for i in got]
    assert len(everything) == 120 and len(set(everything)) == 120


def test_rolled_back_claim_leaves_nothing_half_claimed(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """A claim whose transaction rolls back leaves every row ready, unowned, attempts untouched."""
    enqueue_messages(db_url, recipients(5))
    before = outbox_rows(db)
    with psycopg.connect(db_url) as conn:
        assert len(_claim(conn, "gone", 5)) == 5
        conn.rollback()
    after = outbox_rows(db)
    assert after == before
    assert {(r["state"], r["lease_owner"], r["attempts"]) for r in after} == {("ready", None, 0)}
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert len(_claim(conn, "next", 5)) == 5


def test_paused_provider_work_is_not_claimed(db_url: str, db: psycopg.Connection[Any]) -> None:
    """Rows of a provider paused until later stay put; they are claimed once the pause is over."""
    enqueue_messages(db_url, recipients(3))
    now = later(db)
    db.execute(
        "INSERT INTO sms_provider_pauses (provider, paused_until) VALUES ('twilio', %s)",
        (now + timedelta(seconds=30),),
    )
    assert _claim(db, "x", 10, now) == []
    assert len(_claim(db, "x", 10, now + timedelta(seconds=31))) == 3


def test_rescue_reuses_an_unstarted_attempt_and_counts_a_started_one(
    db_url: str, db: psycopg.Connection[Any], settings: Settings
) -> None:
    """An expired lease is rescued; its attempt number is reused unless that attempt had started."""
    enqueue_messages(db_url, recipients(2))
    t0 = later(db)

    async def go() -> None:
        pool = await open_pool(db_url, application_name="test", min_size=1, max_size=2)
        try:
            dead = Outbox(pool, "dead", settings)
            works = await dead.claim(10, now=t0)
            assert [w.attempt for w in works] == [1, 1]
            started = await dead.start(works[:1], now=t0)
            assert started == {works[0].id}
            rescuer = Outbox(pool, "rescuer", settings)
            assert await rescuer.claim(10, now=t0 + timedelta(seconds=59)) == []
            rescued = {w.id: w for w in await rescuer.claim(10, now=t0 + timedelta(seconds=61))}
            assert rescued[works[0].id].attempt == 2
            assert rescued[works[0].id].unresolved_since == t0  # reconcile since then
            assert rescued[works[1].id].attempt == 1
            assert rescued[works[1].id].unresolved_since is None
            assert all(w.rescued for w in rescued.values())
        finally:
            await pool.close()

    asyncio.run(go())


def test_a_lost_lease_overwrites_nothing(
    db_url: str, db: psycopg.Connection[Any], settings: Settings
) -> None:
    """A dispatcher whose lease was rescued by another cannot record, reschedule or release."""
    (mid,) = enqueue_messages(db_url, recipients(1))
    t0 = later(db)

    async def go() -> None:
        pool = await open_pool(db_url, application_name="test", min_size=1, max_size=2)
        try:
            slow = Outbox(pool, "slow", settings)
            (mine,) = await slow.claim(1, now=t0)
            assert await slow.start([mine], now=t0) == {mine.id}
            fast = Outbox(pool, "fast", settings)
            (theirs,) = await fast.claim(1, now=t0 + timedelta(seconds=61))
            assert await slow.record_sent([Sent(mine, "SMstale", "queued")], now=t0) == []
            assert not await slow.reschedule(
                mine,
                delay_seconds=1,
                unresolved=False,
                error_code="x",
                error_category="retryable",
                error_message="late",
            )
            late = Again(mine, 1, False, False, "x", "retryable", "late")
            assert await slow.reschedule_many([late]) == []
            assert await slow.release([(mine, True)], settle_seconds=0) == 0
            assert not await slow.fail(
                mine, error_code="x", error_category="permanent", error_message="late"
            )
            assert await slow.start([mine], now=t0 + timedelta(seconds=62)) == set()
            rows = await fast.record_sent([Sent(theirs, "SMfresh", "queued")], now=t0)
            assert [r["message_id"] for r in rows] == [mid]
        finally:
            await pool.close()

    asyncio.run(go())
    row = db.execute(
        "SELECT delivery_status, provider_sid FROM sms_messages WHERE id = %s", (mid,)
    ).fetchone()
    assert row == ("queued", "SMfresh")
    assert outbox_rows(db) == []


def _rows_read(plan: dict[str, Any], relation: str) -> float:
    """Rows a plan read from `relation`, over every loop, those its filters dropped included."""
    own = 0.0
    if plan.get("Relation Name") == relation:
        loops = plan.get("Actual Loops", 1)
        own = (plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)) * loops
    return own + sum(_rows_read(p, relation) for p in plan.get("Plans", []))


def idle_senders(db: psycopg.Connection[Any], count: int) -> None:
    """`count` registered numbers with nothing queued, the table analyzed as autovacuum would."""
    db.execute(
        "INSERT INTO sms_senders (phone_number, provider, mps, burst)"
        " SELECT '+1555010' || lpad(k::text, 4, '0'), 'twilio', 1, 1"
        " FROM generate_series(0, %s - 1) AS k",
        (count,),
    )
    db.execute("ANALYZE sms_senders")


def test_idle_senders_cost_the_claim_nothing(db_url: str, db: psycopg.Connection[Any]) -> None:
    """Registered senders with nothing queued are never visited: a claim among 3,000 idle numbers
    (a ghost number per user) reads only the sender that has work."""
    idle_senders(db, 3000)
    enqueue_messages(db_url, recipients(1))
    params = claim_params("x", 100, 60.0, now=later(db))
    with db.transaction(force_rollback=True):
        [[plan]] = db.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + q("outbox_claim_due"), params
        ).fetchone()
    assert plan["Plan"]["Actual Rows"] == 1
    assert _rows_read(plan["Plan"], "sms_senders") <= 4


def test_claims_take_senders_in_turn(
    db_url: str, db: psycopg.Connection[Any], settings: Settings
) -> None:
    """Each claim starts its walk where the last one stopped: two senders with deep backlogs are
    served in turn, although the first in number order could fill every claim by itself."""
    ensure_sender(db, OTHER_FROM)
    enqueue_messages(db_url, recipients(4))
    enqueue_messages(db_url, recipients(4, start=100), from_number=OTHER_FROM)
    t0 = later(db)

    async def go() -> list[set[str | None]]:
        pool = await open_pool(db_url, application_name="test", min_size=1, max_size=2)
        try:
            outbox = Outbox(pool, "x", settings)
            return [{w.from_number for w in await outbox.claim(2, now=t0)} for _ in range(4)]
        finally:
            await pool.close()

    first, second, third, fourth = asyncio.run(go())
    assert len(first) == 1 and first == third
    assert len(second) == 1 and second == fourth and second != first


def test_pace_wait_reads_only_senders_with_work(db_url: str, db: psycopg.Connection[Any]) -> None:
    """The dispatcher's wait for the next allowance (after a short claim) reads only the senders
    that have work queued, however many idle numbers are registered."""
    idle_senders(db, 3000)
    enqueue_messages(db_url, recipients(1))
    with db.transaction(force_rollback=True):
        [[plan]] = db.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + q("senders_next_allowance"), {"now": later(db)}
        ).fetchone()
    assert _rows_read(plan["Plan"], "sms_senders") <= 2
    [seconds] = db.execute(q("senders_next_allowance"), {"now": later(db)}).fetchone()
    assert seconds is not None and seconds < 0  # the sender may send now


def test_attempt_started_keeps_when_it_was_claimed(
    db_url: str, db: psycopg.Connection[Any], settings: Settings
) -> None:
    """The 'attempt_started' event says when its row was claimed (claim -> start is the wait the
    bench's stage breakdown reports) as well as when the attempt started."""
    enqueue_messages(db_url, recipients(1))
    t0 = later(db)

    async def go() -> None:
        pool = await open_pool(db_url, application_name="test", min_size=1, max_size=2)
        try:
            outbox = Outbox(pool, "x", settings)
            works = await outbox.claim(10, now=t0)
            assert await outbox.start(works, now=t0 + timedelta(seconds=2)) == {works[0].id}
        finally:
            await pool.close()

    asyncio.run(go())
    row = db.execute(
        "SELECT occurred_at, (detail->>'claimed_at')::timestamptz FROM sms_message_events"
        " WHERE event_type = 'attempt_started'"
    ).fetchone()
    assert row == (t0 + timedelta(seconds=2), t0)


@pytest.mark.parametrize("providers", [(), ("twilio",)], ids=["checks_first", "starts"])
def test_claims_run_one_generic_plan(
    db_url: str, db: psycopg.Connection[Any], providers: tuple[str, ...]
) -> None:
    """The claim's plan does not depend on its parameters, so a connection keeps one generic plan
    of it: after the custom plans PostgreSQL tries first (5), no claim is planned again, whatever
    its limit, starting attempts or not. Before, the LIMIT made every custom plan look cheaper and
    every claim re-planned (with a queue of some size, analyzed: on a handful of rows every plan
    looks alike)."""
    enqueue_messages(db_url, recipients(2000))
    db.execute("ANALYZE sms_outbox, sms_messages, sms_senders")
    now = later(db)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for limit in (1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2):
            conn.execute(
                q("outbox_claim_due"),
                claim_params("x", limit, 60.0, now=now, providers=providers),
                prepare=True,
            )
        [[generic, custom]] = conn.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE %s",
            ("%WITH RECURSIVE clock AS%",),
        ).fetchall()
    assert custom <= 5
    assert generic >= 6


def _claim_works(
    db_url: str, settings: Settings, now: Any, providers: tuple[str, ...], quiet: bool = False
) -> list[Work]:
    async def go() -> list[Work]:
        pool = await open_pool(db_url, application_name="test", min_size=1, max_size=2)
        try:
            return await Outbox(pool, "x", settings).claim(
                10, now=now, providers=providers, quiet=quiet
            )
        finally:
            await pool.close()

    return asyncio.run(go())


def test_claim_starts_fresh_sends_in_its_own_commit(
    db_url: str, db: psycopg.Connection[Any], settings: Settings
) -> None:
    """A fresh send the dispatcher can call is started by the claim itself: "attempt 1 started"
    (outbox row, message attempts, event) is committed with the lease, so the batch needs no
    second commit before its call, and nothing is marked unresolved."""
    [message_id] = enqueue_messages(db_url, recipients(1))
    t0 = later(db)
    [work] = _claim_works(db_url, settings, t0, ("twilio",))
    assert work.started and work.unresolved_since is None and work.attempt == 1
    [row] = outbox_rows(db)
    assert row["attempt_started_at"] == t0 and row["state"] == "leased"
    assert db.execute(
        "SELECT attempt, occurred_at, (detail->>'claimed_at')::timestamptz"
        " FROM sms_message_events WHERE event_type = 'attempt_started'"
    ).fetchall() == [(1, t0, t0)]
    assert db.execute(
        "SELECT attempts FROM sms_messages WHERE id = %s", (message_id,)
    ).fetchone() == (1,)


def test_claim_starts_nothing_a_check_could_stop(
    db_url: str, db: psycopg.Connection[Any], settings: Settings
) -> None:
    """Only sends nothing would stop are started by the claim: not one whose provider this
    dispatcher lacks, one past its validity, one to a recipient who opted out, one held by quiet
    hours (normal priority; high is started), nor one claimed without providers at all."""
    t0 = later(db)
    [expired] = recipients(1, start=10)
    enqueue_messages(db_url, [expired], expires_at=t0 + timedelta(seconds=0.5))
    [opted_out] = recipients(1, start=20)
    enqueue_messages(db_url, [opted_out])
    db.execute(
        "INSERT INTO sms_suppressions (phone_number, sender_number, reason) VALUES (%s, NULL, %s)",
        (opted_out, "api"),
    )
    [urgent] = recipients(1, start=30)
    enqueue_messages(db_url, [urgent], priority="high")
    [plain] = recipients(1, start=40)
    enqueue_messages(db_url, [plain])
    # Each claim after the last one's leases ended: their rows come back unstarted (rescued).
    lease = timedelta(seconds=settings.dispatch_lease_seconds + 1)
    none = _claim_works(db_url, settings, t0, ())
    assert len(none) == 4 and not any(w.started for w in none)
    other = _claim_works(db_url, settings, t0 + lease, ("signalwire",))
    assert len(other) == 4 and not any(w.started for w in other)
    works = _claim_works(db_url, settings, t0 + 2 * lease, ("twilio",), quiet=True)
    started = {w.to_number for w in works if w.started}
    assert started == {urgent}
    assert db.execute(
        "SELECT count(*) FROM sms_message_events WHERE event_type = 'attempt_started'"
    ).fetchone() == (1,)


def test_claim_never_starts_a_send_whose_attempt_is_in_doubt(
    db_url: str, db: psycopg.Connection[Any], settings: Settings
) -> None:
    """A rescued row whose attempt had started is reconciled first: the claim leaves it
    unresolved (attempt_started_at kept), never starts it again."""
    enqueue_messages(db_url, recipients(1))
    t0 = later(db)
    [first] = _claim_works(db_url, settings, t0, ("twilio",))
    assert first.started
    rescue_at = t0 + timedelta(seconds=settings.dispatch_lease_seconds + 1)
    [again] = _claim_works(db_url, settings, rescue_at, ("twilio",))
    assert again.rescued and not again.started
    assert again.unresolved_since == t0 and again.attempt == 2  # a started attempt counts
    [row] = outbox_rows(db)
    assert row["attempt_started_at"] == t0


def test_one_statement_writes_hand_the_pool_back_transactional_connections(
    db_url: str, settings: Settings
) -> None:
    """The claim and the other single-statement writes run in autocommit (no BEGIN and COMMIT
    round trips), and every connection goes back to the pool out of autocommit, after a failed
    statement too: the pool's next user (a multi-statement transaction) keeps its atomicity."""

    async def go() -> tuple[list[bool], bool]:
        pool = await open_pool(db_url, application_name="test", min_size=1, max_size=1)
        try:
            outbox = Outbox(pool, "x", settings)
            seen: list[bool] = []

            async def body(conn: psycopg.AsyncConnection[Any]) -> None:
                seen.append(conn.autocommit)
                await conn.execute("SELECT 1 / 0")

            try:
                await outbox._tx(body, one_statement=True)
            except psycopg.errors.DivisionByZero:
                pass
            await outbox.claim(10)
            async with pool.connection() as conn:
                return seen, conn.autocommit
        finally:
            await pool.close()

    seen, after = asyncio.run(go())
    assert seen == [True]
    assert after is False
