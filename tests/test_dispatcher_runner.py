"""The daemon loop in-process: LISTEN/NOTIFY wake-ups, the poll fallback, a dropped LISTEN link."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import AsyncConnection

from dispatcher.runner import Runner
from dispatcher.wakeup import Wakeup
from shared.config import Settings
from shared.db import conninfo_with_app
from shared.messages import enqueue
from tests.dispatch_support import SENDER_SQL, UNPACED_MPS, running
from tests.fixtures_sim import SIM_TWILIO_NUMBER, SimHandle

LISTENER_APP = "test-dispatcher-listen"


async def add_message(conn: AsyncConnection[Any], to: str, *, notify: bool) -> None:
    await conn.execute(
        SENDER_SQL,
        {"number": SIM_TWILIO_NUMBER, "provider": "twilio", "mps": UNPACED_MPS, "burst": 10_000},
    )
    await enqueue(
        conn,
        api_key_id=None,
        to_number=to,
        from_number=SIM_TWILIO_NUMBER,
        provider="twilio",
        body="wake up",
        conversation_id=None,
        idempotency_key=None,
        request_hash=None,
        request_id=None,
    )
    if notify:
        await conn.execute("NOTIFY sms_outbox_wakeup")
        await conn.commit()


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float) -> None:
    """Poll an async state probe until true; fail after `seconds`."""
    async with asyncio.timeout(seconds):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


async def queued(conn: AsyncConnection[Any], n: int) -> bool:
    cur = await conn.execute("SELECT count(*) FROM sms_messages WHERE delivery_status = 'queued'")
    row = await cur.fetchone()
    await conn.commit()
    return row is not None and row[0] == n


async def with_runner(
    settings: Settings,
    db_url: str,
    scenario: Callable[[Runner, AsyncConnection[Any]], Awaitable[None]],
) -> None:
    async with running(settings) as d, await AsyncConnection.connect(db_url) as conn:
        runner = Runner(d, Wakeup(conninfo_with_app(db_url, LISTENER_APP)))
        task = asyncio.create_task(runner.run())
        try:
            await asyncio.wait_for(runner.wakeup.connected.wait(), 10)
            await scenario(runner, conn)
        finally:
            runner.stop()
            await asyncio.wait_for(task, 15)


def test_notify_wakes_the_loop_long_before_the_poll(
    sim: SimHandle, sim_settings: Settings, db_url: str
) -> None:
    """With a 60 s poll interval, a NOTIFY after each enqueue gets it sent within seconds."""
    settings = dataclasses.replace(sim_settings, dispatch_poll_seconds=60.0)

    async def scenario(runner: Runner, conn: AsyncConnection[Any]) -> None:
        for n in (1, 2):  # the second round can only be woken by its NOTIFY
            await add_message(conn, f"+1415555010{n}", notify=True)
            await eventually(lambda n=n: queued(conn, n), 10)  # type: ignore[misc]

    asyncio.run(with_runner(settings, db_url, scenario))
    assert len(sim.messages()) == 2


def test_dropped_listen_connection_never_stalls_the_queue(
    sim: SimHandle, sim_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> None:
    """When the LISTEN connection dies, polling still sends new work and LISTEN comes back."""
    settings = dataclasses.replace(sim_settings, dispatch_poll_seconds=0.2)

    def listener_pids() -> list[int]:
        rows = db.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (LISTENER_APP,)
        ).fetchall()
        return [r[0] for r in rows]

    async def scenario(runner: Runner, conn: AsyncConnection[Any]) -> None:
        (old,) = listener_pids()
        db.execute("SELECT pg_terminate_backend(%s)", (old,))
        await eventually(lambda: asyncio.sleep(0, not runner.wakeup.connected.is_set()), 5)
        await add_message(conn, "+14155550111", notify=False)
        await eventually(lambda: queued(conn, 1), 10)
        await eventually(lambda: asyncio.sleep(0, runner.wakeup.connected.is_set()), 10)
        assert listener_pids() not in ([], [old])

    asyncio.run(with_runner(settings, db_url, scenario))
    assert len(sim.messages()) == 1
