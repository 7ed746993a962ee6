"""dispatcher.sweeper: messages whose callbacks never came, checked at the simulator, at a pace."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from dispatcher.runner import Runner
from dispatcher.sweeper import (
    IDLE_SECONDS,
    ReadBudget,
    Sweeper,
    SweepPass,
    is_passing,
    next_pass_in,
    recheck_delay,
)
from dispatcher.wakeup import Wakeup
from shared.config import Settings
from shared.db import conninfo_with_app, open_pool
from shared.errors import ConfigError
from shared.providers.base import Category, Provider, ProviderError, SendRequest, header
from shared.providers.registry import close_providers, open_providers
from shared.status import apply_update
from tests.dispatch_support import running
from tests.fixtures_sim import SIM_SIGNALWIRE_NUMBER, SIM_TWILIO_NUMBER, CallbackListener, SimHandle
from tests.status_support import events, insert_message, message

SENDERS = {"twilio": SIM_TWILIO_NUMBER, "signalwire": SIM_SIGNALWIRE_NUMBER}
OPEN = "delivery_status IN ('queued', 'sending', 'sent')"  # accepted, no final status yet
T = TypeVar("T")


def send_at_sim(settings: Settings, provider: str, message_id: uuid.UUID, to: str) -> str:
    """Submit a message through the real provider client, as the dispatcher does; its sid."""

    async def run() -> str:
        providers = await open_providers(settings)
        try:
            return await submit(providers[provider], message_id, to)
        finally:
            await close_providers(providers)

    return asyncio.run(run())


async def submit(provider: Provider, message_id: uuid.UUID, to: str) -> str:
    """One send through an open provider client, with its own callback URL; the sid."""
    client: Any = provider  # callback_url() is each client's own
    url = client.callback_url(message_id) if provider.name == "twilio" else client.callback_url()
    request = SendRequest(message_id, SENDERS[provider.name], to, "hello", str(url))
    return (await provider.send(request)).sid


def accepted(db: psycopg.Connection[Any], settings: Settings, provider: str, to: str) -> uuid.UUID:
    """A message sent to the simulator and recorded as queued with its sid (dispatcher's part)."""
    mid = insert_message(db, provider=provider, from_number=SENDERS[provider], to_number=to)
    sid = send_at_sim(settings, provider, mid, to)
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'queued', provider_sid = %s,"
        " submitted_at = now() WHERE id = %s",
        (sid, mid),
    )
    return mid


def wait_final_at_sim(sim: SimHandle, count: int) -> None:
    """Bounded wait until the simulator's own record of `count` messages is final."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = sim.messages()
        final = [r for r in rows if r["status"] in ("delivered", "undelivered", "failed")]
        if len(final) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"simulator did not finish: {sim.messages()}")


def callbacks_settled(listener: CallbackListener, quiet: float = 0.3) -> list[Any]:
    """Everything the listener got once no callback came for `quiet` seconds (bounded wait).

    The simulator posts a status's callback right after it records the status, so a final status
    at the simulator does not mean its callback has arrived yet.
    """
    deadline = time.monotonic() + 10
    seen = -1
    while len(listener.requests) != seen and time.monotonic() < deadline:
        seen = len(listener.requests)
        time.sleep(quiet)
    return list(listener.requests)


def db_now(db: psycopg.Connection[Any]) -> datetime:
    row = db.execute("SELECT now()").fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


def due(db: psycopg.Connection[Any], settings: Settings) -> datetime:
    """A clock just past STATUS_SWEEP_AFTER_SECONDS from the database's now."""
    return db_now(db) + timedelta(seconds=settings.status_sweep_after_seconds + 1)


async def sweeping(settings: Settings, scenario: Callable[[Sweeper], Awaitable[T]]) -> T:
    """Run `scenario` with one Sweeper (one dispatcher: its own pool, providers and budgets)."""
    pool = await open_pool(settings.database_url, application_name="sweeper-test", min_size=1)
    providers = await open_providers(settings)
    try:
        return await scenario(Sweeper(pool, providers, settings))
    finally:
        await close_providers(providers)
        await pool.close()


def with_sweeper(settings: Settings, scenario: Callable[[Sweeper], Awaitable[T]]) -> T:
    return asyncio.run(sweeping(settings, scenario))


def passes(settings: Settings, *nows: datetime) -> list[SweepPass]:
    """One Sweeper's passes at these clocks, in order (its read budget carries over)."""

    async def scenario(sweeper: Sweeper) -> list[SweepPass]:
        return [await sweeper.run_once(now=now) for now in nows]

    return with_sweeper(settings, scenario)


def sweep(settings: Settings, *, now: datetime | None, sweepers: int = 1) -> list[int]:
    """One pass of `sweepers` dispatchers at the same time; the number each claimed."""

    async def claimed(sweeper: Sweeper) -> int:
        return (await sweeper.run_once(now=now)).claimed

    async def run() -> list[int]:
        return list(await asyncio.gather(*(sweeping(settings, claimed) for _ in range(sweepers))))

    return asyncio.run(run())


def paced(settings: Settings, reads_per_second: float, **changes: Any) -> Settings:
    return dataclasses.replace(settings, status_sweep_reads_per_second=reads_per_second, **changes)


# -- the pace and the retry backoff, as pure decisions ------------------------------------------


def test_read_budget_holds_one_second_and_refills_at_its_rate() -> None:
    """The budget starts with one second of reads, refills at its rate and never saves more."""
    budget = ReadBudget(4.0)
    assert budget.available(100.0) == 4
    budget.spend(4)
    assert budget.available(100.0) == 0
    assert budget.batch_in(100.0) == pytest.approx(1.0)
    assert budget.available(100.5) == 2
    assert budget.available(160.0) == 4  # an idle minute saves no more than one second's worth
    assert budget.available(150.0) == 4  # a clock that steps back refills nothing


def test_read_budget_below_one_read_per_second_still_reads() -> None:
    """At half a read per second the sweeper reads one message every two seconds."""
    budget = ReadBudget(0.5)
    assert budget.available(0.0) == 1
    budget.spend(1)
    assert budget.available(1.0) == 0
    assert budget.batch_in(1.0) == pytest.approx(1.0)
    assert budget.available(2.0) == 1


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_read_budget_must_be_positive(rate: float) -> None:
    """A zero or negative STATUS_SWEEP_READS_PER_SECOND stops start-up, naming the variable."""
    with pytest.raises(ConfigError, match="STATUS_SWEEP_READS_PER_SECOND"):
        ReadBudget(rate)


@pytest.mark.parametrize(
    ("allowed", "claimed", "batch_in", "expected"),
    [
        (20, 20, 1.0, 1.0),  # took all it was allowed: more is stale, back when the budget refills
        (20, 20, 0.0, 0.0),  # the lookups outlasted the refill: at once
        (20, 7, 0.65, IDLE_SECONDS),  # fewer stale than allowed: caught up, idle
        (20, 0, 1.0, IDLE_SECONDS),  # nothing stale
        (0, 0, 0.4, 0.4),  # the budget was empty: back when it holds a batch
        (1, 1, 60.0, IDLE_SECONDS),  # never sleeps longer than an idle pass would
    ],
)
def test_next_pass_follows_the_backlog(
    allowed: int, claimed: int, batch_in: float, expected: float
) -> None:
    """The next pass comes as soon as the budget allows while a backlog is left, else idle."""
    assert next_pass_in(allowed, claimed, batch_in) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("failures", "after", "retry_after", "expected"),
    [
        (1, 900.0, None, 15.0),
        (2, 900.0, None, 30.0),
        (3, 900.0, None, 60.0),
        (6, 900.0, None, 480.0),
        (7, 900.0, None, 900.0),  # never later than the normal interval
        (500, 900.0, None, 900.0),
        (1, 10.0, None, 10.0),
        (1, 900.0, 120.0, 120.0),  # the provider's Retry-After when longer
        (1, 900.0, 5.0, 15.0),
        (1, 900.0, 7200.0, 900.0),
    ],
)
def test_failed_lookups_back_off_doubling_up_to_the_interval(
    failures: int, after: float, retry_after: float | None, expected: float
) -> None:
    """A failed lookup is asked again after 15 s, doubling per failure, capped at the interval."""
    assert recheck_delay(failures, after, retry_after) == expected


@pytest.mark.parametrize(
    ("error", "passing"),
    [
        (TimeoutError(), True),
        (ProviderError(Category.AMBIGUOUS, "no answer in time"), True),
        (ProviderError(Category.RETRYABLE, "rate limited", http_status=429), True),
        (ProviderError(Category.CONFIG, "resource not found", code="20404"), False),
        (ProviderError(Category.PERMANENT, "refused"), False),
    ],
)
def test_only_passing_failures_are_retried_soon(error: BaseException, passing: bool) -> None:
    """Timeouts, connection errors, 5xx and 429 come back soon; refusals wait the interval."""
    assert is_passing(error) is passing


# -- one pass against the database and the simulator -------------------------------------------


@pytest.mark.parametrize("provider", ["twilio", "signalwire"])
def test_dropped_callbacks_are_repaired_by_the_sweeper(
    sim: SimHandle,
    sim_settings: Settings,
    callback_listener: CallbackListener,
    db: psycopg.Connection[Any],
    provider: str,
) -> None:
    """A message whose callbacks were all dropped reads delivered after one sweep past the age."""
    sim.configure(callback_drop_rate=1.0)
    mid = accepted(db, sim_settings, provider, "+14155550123")
    wait_final_at_sim(sim, 1)
    assert callback_listener.requests == []
    assert sweep(sim_settings, now=due(db, sim_settings)) == [1]
    row = message(db, mid)
    assert row["delivery_status"] == "delivered"
    assert row["final_at"] is not None
    assert [e["to_status"] for e in events(db, mid, "sweep")] == ["delivered"]
    assert [(e["from_status"], e["to_status"]) for e in events(db, mid, "transition")] == [
        ("queued", "delivered")
    ]


def test_failure_found_by_sweep_stores_error_and_alerts(
    sim: SimHandle, sim_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """A delivery failure learnt by the sweeper is stored with its code and alerts once."""
    sim.configure(callback_drop_rate=1.0)
    mid = accepted(db, sim_settings, "twilio", "+15005550013")  # the simulator fails it: 30006
    wait_final_at_sim(sim, 1)
    sweep(sim_settings, now=due(db, sim_settings))
    row = message(db, mid)
    assert (row["delivery_status"], row["error_code"], row["error_category"]) == (
        "failed",
        "30006",
        "delivery",
    )
    assert db.execute(
        "SELECT count(*) FROM sms_alerts WHERE message_id = %s", (mid,)
    ).fetchone() == (1,)


def test_young_messages_are_left_alone(
    sim: SimHandle, sim_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """A message submitted less than STATUS_SWEEP_AFTER_SECONDS ago is not asked about."""
    sim.configure(callback_drop_rate=1.0)
    mid = accepted(db, sim_settings, "twilio", "+14155550123")
    assert sweep(sim_settings, now=None) == [0]
    assert message(db, mid)["delivery_status"] == "queued"
    assert message(db, mid)["status_checked_at"] is None


def test_a_refused_lookup_waits_for_the_next_interval(
    sim: SimHandle, sim_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """A lookup the provider refuses (sid unknown) is not asked again before the next interval."""
    mid = insert_message(db, status="sent", sid="SM" + "0" * 32)  # unknown at the simulator
    now = due(db, sim_settings)
    soon = now + timedelta(seconds=recheck_delay(1, sim_settings.status_sweep_after_seconds))
    later = now + timedelta(seconds=sim_settings.status_sweep_after_seconds + 1)
    assert [p.claimed for p in passes(sim_settings, now, soon, later)] == [1, 0, 1]
    row = message(db, mid)
    assert (row["delivery_status"], row["status_check_failures"]) == ("sent", 0)
    assert row["status_recheck_at"] is None


def test_messages_past_the_max_age_are_left_alone(
    sim_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Past STATUS_SWEEP_MAX_AGE_SECONDS a message is no longer asked about, retry due or not."""
    short = dataclasses.replace(sim_settings, status_sweep_max_age_seconds=3600)
    insert_message(db, status="sent", sid="SM" + "0" * 32, submitted_ago_seconds=7200)
    retried = insert_message(db, status="sent", sid="SM" + "1" * 32, submitted_ago_seconds=7200)
    db.execute(
        "UPDATE sms_messages SET status_checked_at = now() - interval '1 minute',"
        " status_recheck_at = now() - interval '1 second', status_check_failures = 2"
        " WHERE id = %s",
        (retried,),
    )
    assert sweep(short, now=None) == [0]


def test_two_sweepers_never_check_the_same_message(
    sim: SimHandle, sim_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Two dispatchers sweeping at once split the stale messages, none checked twice."""
    sim.configure(callback_drop_rate=1.0)
    mids = [accepted(db, sim_settings, "twilio", f"+1415555{i:04d}") for i in range(6)]
    wait_final_at_sim(sim, len(mids))
    claimed = sweep(sim_settings, now=due(db, sim_settings), sweepers=2)
    assert sum(claimed) == len(mids)
    for mid in mids:
        assert message(db, mid)["delivery_status"] == "delivered"
        assert len(events(db, mid, "sweep")) == 1


# -- the pace follows the backlog, within the read budget ---------------------------------------


def test_each_pass_claims_the_backlog_up_to_the_budget_and_comes_back_soon(
    sim: SimHandle, sim_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Five stale messages at two reads/s: passes of 2, 2 and 1 one second apart, then idle."""
    sim.configure(callback_drop_rate=1.0)
    mids = [accepted(db, sim_settings, "twilio", f"+1415555{i:04d}") for i in range(5)]
    wait_final_at_sim(sim, len(mids))
    start = due(db, sim_settings)

    async def scenario(sweeper: Sweeper) -> list[SweepPass]:
        done, now = [], start
        for _ in range(4):
            done.append(await sweeper.run_once(now=now))
            now += timedelta(seconds=done[-1].next_in)
        return done

    done = with_sweeper(paced(sim_settings, 2.0), scenario)
    assert [(p.claimed, p.next_in) for p in done] == [
        (2, 1.0),
        (2, 1.0),
        (1, IDLE_SECONDS),  # fewer stale than the budget allowed: caught up
        (0, IDLE_SECONDS),  # idle passes find nothing and stay idle
    ]
    assert {message(db, mid)["delivery_status"] for mid in mids} == {"delivered"}


def test_each_provider_has_its_own_read_budget(
    sim: SimHandle, sim_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """A Twilio backlog does not spend SignalWire's reads: one pass takes the batch of each."""
    sim.configure(callback_drop_rate=1.0)
    for i in range(3):
        accepted(db, sim_settings, "twilio", f"+1415555{i:04d}")
        accepted(db, sim_settings, "signalwire", f"+1415556{i:04d}")
    wait_final_at_sim(sim, 6)
    (first,) = passes(paced(sim_settings, 2.0), due(db, sim_settings))
    assert first.claimed == 4
    rows = db.execute(
        "SELECT provider, count(*) FROM sms_messages WHERE status_checked_at IS NOT NULL"
        " GROUP BY provider ORDER BY provider"
    ).fetchall()
    assert rows == [("signalwire", 2), ("twilio", 2)]


# -- failed lookups come back soon ----------------------------------------------------------------


def test_a_timed_out_lookup_is_asked_again_on_a_later_pass(
    sim: SimHandle, sim_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """A lookup that times out is due again 15 s later, not a whole interval, and then repairs."""
    sim.configure(callback_drop_rate=1.0)
    mid = accepted(db, sim_settings, "twilio", "+14155550123")
    wait_final_at_sim(sim, 1)
    impatient = dataclasses.replace(sim_settings, provider_timeout_seconds=0.2)
    now = due(db, sim_settings)

    async def scenario(sweeper: Sweeper) -> list[SweepPass]:
        sim.configure(latency=2.0)  # reads answer after the 0.2 s timeout
        timed_out = await sweeper.run_once(now=now)
        early = await sweeper.run_once(now=now + timedelta(seconds=14))
        sim.configure(latency=0.0)
        again = await sweeper.run_once(now=now + timedelta(seconds=15))
        return [timed_out, early, again]

    timed_out, early, again = with_sweeper(impatient, scenario)
    assert (timed_out.claimed, timed_out.retrying) == (1, 1)
    assert early.claimed == 0
    assert (again.claimed, again.retrying) == (1, 0)
    row = message(db, mid)
    assert (row["delivery_status"], row["status_check_failures"]) == ("delivered", 0)
    assert row["status_recheck_at"] is None


def test_failed_lookups_back_off_and_the_count_resets_on_an_answer(
    sim: SimHandle, sim_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """During a provider outage a message is asked again after 15 s, then 30 s; an answer resets."""
    sim.configure(callback_drop_rate=1.0)
    mid = accepted(db, sim_settings, "twilio", "+14155550123")
    wait_final_at_sim(sim, 1)
    now = due(db, sim_settings)

    def at(seconds: float) -> datetime:
        return now + timedelta(seconds=seconds)

    def bookkeeping() -> tuple[Any, ...]:
        row = message(db, mid)
        return row["delivery_status"], row["status_check_failures"], row["status_recheck_at"]

    async def scenario(sweeper: Sweeper) -> list[tuple[int, tuple[Any, ...]]]:
        sim.configure(outage=True)  # every read answers 503
        seen = []
        for seconds in (0, 15, 44):
            seen.append(((await sweeper.run_once(now=at(seconds))).claimed, bookkeeping()))
        sim.configure(outage=False)
        seen.append(((await sweeper.run_once(now=at(45))).claimed, bookkeeping()))
        return seen

    assert with_sweeper(sim_settings, scenario) == [
        (1, ("queued", 1, at(15))),
        (1, ("queued", 2, at(45))),
        (0, ("queued", 2, at(45))),
        (1, ("delivered", 0, None)),
    ]


# -- steady load with dropped callbacks --------------------------------------------------------


async def apply_callbacks(
    pool: AsyncConnectionPool, provider: Provider, settings: Settings, received: list[Any]
) -> None:
    """Apply callbacks the simulator posted to the listener, as the webhook does once verified."""
    for r in received:
        query = dict(parse_qsl(urlsplit(r.path).query))
        update = provider.parse_callback(r.body, header(r.headers, "Content-Type"), query)
        async with pool.connection() as conn:
            await apply_update(conn, update, settings=settings, source="callback")


def test_steady_load_with_a_tenth_of_callbacks_dropped_keeps_the_backlog_at_zero(
    sim: SimHandle,
    sim_settings: Settings,
    callback_listener: CallbackListener,
    db: psycopg.Connection[Any],
) -> None:
    """100 messages a minute, 10 % of callbacks dropped: every minute ends with no backlog.

    The sweeper reads at most 0.5 lookups/s (one per pass), so keeping up takes several passes a
    minute at the pace it asks for. Each minute's messages are submitted over its first 40 s, so
    the last 20 s of the next minute bring no newly stale ones: whatever is stale at the end of a
    minute is backlog the sweeper failed to work off. None may be, no minute may read more than
    its budget, and every status ends up the provider's (the issue saw 35 % wrong).
    """
    per_minute, minutes, rate, spread = 100, 3, 0.5, 40.0
    settings = paced(sim_settings, rate, status_sweep_after_seconds=60.0)
    sim.configure(callback_drop_rate=0.1, seed=10)
    start = db_now(db)

    def at(seconds: float) -> datetime:
        return start + timedelta(seconds=seconds)

    def stale(now: datetime) -> int:
        row = db.execute(
            f"SELECT count(*) FROM sms_messages WHERE {OPEN}"
            " AND submitted_at < %s - interval '60 seconds'",
            (now,),
        ).fetchone()
        assert row is not None
        return int(row[0])

    async def send_minute(provider: Provider, minute: int) -> None:
        """This minute's load: accepted at the simulator, submitted evenly over `spread`."""
        gate = asyncio.Semaphore(16)
        to = [f"+1415{minute:03d}{i:04d}" for i in range(per_minute)]
        mids = [insert_message(db, from_number=SIM_TWILIO_NUMBER, to_number=n) for n in to]

        async def one(mid: uuid.UUID, number: str) -> str:
            async with gate:
                return await submit(provider, mid, number)

        sids = await asyncio.gather(*(one(mid, n) for mid, n in zip(mids, to, strict=True)))
        with db.cursor() as cur:
            cur.executemany(
                "UPDATE sms_messages SET delivery_status = 'queued', provider_sid = %s,"
                " submitted_at = %s WHERE id = %s",
                [
                    (sid, at(minute * 60 + i * spread / per_minute), mid)
                    for i, (sid, mid) in enumerate(zip(sids, mids, strict=True))
                ],
            )

    async def scenario(sweeper: Sweeper) -> list[tuple[int, int, int]]:
        twilio = sweeper.providers["twilio"]
        rounds, applied = [], 0
        for minute in range(minutes + 1):  # the last minute only sweeps what the others left
            if minute < minutes:
                await send_minute(twilio, minute)
            wait_final_at_sim(sim, per_minute * min(minute + 1, minutes))
            received = callbacks_settled(callback_listener)[applied:]
            applied += len(received)
            await apply_callbacks(sweeper.pool, twilio, settings, received)
            now, reads, last = at(minute * 60), 0, at(minute * 60)
            while now < at(minute * 60 + 60):
                done = await sweeper.run_once(now=now)
                reads, last = reads + done.claimed, now
                now += timedelta(seconds=done.next_in)
            rounds.append((minute, reads, stale(last)))
        return rounds

    rounds = with_sweeper(settings, scenario)
    for minute, reads, left in rounds:
        assert left == 0, f"minute {minute}: {left} messages past the interval without a status"
        assert reads <= rate * 60 + 1, f"minute {minute}: {reads} reads over the budget"
    assert max(reads for _, reads, _ in rounds) > 1  # more than one pass's batch a minute
    at_sim = {m["sid"]: m["status"] for m in sim.messages()}
    ours = db.execute("SELECT provider_sid, delivery_status FROM sms_messages").fetchall()
    assert len(ours) == per_minute * minutes
    assert [(sid, status) for sid, status in ours if status != at_sim[sid]] == []


# -- the runner runs the passes at the pace they ask for ------------------------------------------


def test_the_runner_sweeps_again_as_soon_as_a_pass_asks(
    sim: SimHandle, sim_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """With a minute between failed sweeps, a backlog of three batches is repaired in seconds."""
    sim.configure(callback_drop_rate=1.0)
    mids = [accepted(db, sim_settings, "twilio", f"+1415555{i:04d}") for i in range(12)]
    wait_final_at_sim(sim, len(mids))
    db.execute("UPDATE sms_messages SET submitted_at = now() - interval '1 minute'")
    settings = paced(sim_settings, 4.0, status_sweep_after_seconds=30.0)

    async def run() -> None:
        pool = await open_pool(db_url, application_name="sweeper-test", min_size=1)
        try:
            async with running(settings) as d:
                sweeper = Sweeper(pool, d.providers, settings)
                wakeup = Wakeup(conninfo_with_app(db_url, "sweeper-test-listen"))
                runner = Runner(d, wakeup, sweep=sweeper, sweep_every=60.0)
                task = asyncio.create_task(runner.run())
                try:
                    async with asyncio.timeout(15):  # three passes of 4, a second apart
                        while True:  # bounded poll of the outcome, not a timing sleep
                            if await _open(pool) == 0:
                                break
                            await asyncio.sleep(0.05)
                finally:
                    runner.stop()
                    await asyncio.wait_for(task, 15)
        finally:
            await pool.close()

    asyncio.run(run())
    assert {message(db, mid)["delivery_status"] for mid in mids} == {"delivered"}


async def _open(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(f"SELECT count(*) FROM sms_messages WHERE {OPEN}")
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])
