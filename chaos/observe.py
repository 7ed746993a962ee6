"""Reading the outcome: the simulator's log and the database's rows as counts.py records, the wait
for quiescence, and the wait for the dispatchers' status sweep once everything is quiet."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
from psycopg.rows import dict_row

from chaos.counts import DbMessage, SimMessage, provider_status
from shared.queries import parse

SQL_FILE = Path(__file__).resolve().parent / "sql" / "chaos.sql"
POLL_SECONDS = 1.0
OPEN = frozenset({"queued", "sending", "sent"})  # accepted, final status not known yet


@cache
def queries() -> dict[str, str]:
    return parse(SQL_FILE.read_text())


def sim_message(row: Mapping[str, Any]) -> SimMessage:
    """One `GET /_sim/messages` row; our message id from `message_id`, else the callback URL
    query (Twilio) or custom_variables (SignalWire) on simulators that predate the field."""
    message_id = row.get("message_id")
    if not message_id:
        variables = row.get("custom_variables") or {}
        message_id = variables.get("message_id")
    if not message_id and row.get("status_callback"):
        found = parse_qs(urlsplit(str(row["status_callback"])).query).get("message_id")
        message_id = found[0] if found else None
    return SimMessage(
        sid=str(row["sid"]),
        provider=str(row["provider"]),
        body=str(row["body"]),
        status=str(row["status"]),
        message_id=str(message_id) if message_id else None,
    )


async def read_sim(sim: httpx.AsyncClient) -> tuple[list[SimMessage], dict[str, Any]]:
    """Every message the simulator accepted, and its totals: requests, outcomes, and how many
    accepted messages were hung or held at ingress (so a run shows its fault really happened)."""
    reply = await sim.get("/_sim/messages", timeout=60)
    reply.raise_for_status()
    report: dict[str, Any] = reply.json()
    totals = {k: v for k, v in report.items() if k != "messages"}
    for flag in ("hung", "ingress_delayed"):
        totals[flag] = sum(1 for r in report["messages"] if r.get(flag))
    return [sim_message(r) for r in report["messages"]], totals


@dataclass(frozen=True)
class DbState:
    messages: list[DbMessage]
    outbox_message_ids: list[str]
    detected_doubles: int


def read_db(database_url: str) -> DbState:
    q = queries()
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(q["chaos_messages"]).fetchall()
        outbox = [str(r[0]) for r in conn.execute(q["chaos_outbox_messages"]).fetchall()]
        found = conn.execute(q["chaos_detected_doubles"]).fetchone()
    return DbState(
        messages=[DbMessage(**r) for r in rows],
        outbox_message_ids=outbox,
        detected_doubles=int(found[0]) if found else 0,
    )


def progress(database_url: str) -> dict[str, Any] | None:
    """Outbox depth, pending count and last change; None while the database does not answer."""
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
            with conn.cursor(row_factory=dict_row) as cur:
                row = cur.execute(queries()["chaos_progress"]).fetchone()
    except psycopg.Error:
        return None
    return dict(row) if row else None


def stale_statuses(db: list[DbMessage], sim: list[SimMessage]) -> int:
    """Accepted messages whose recorded status lags the provider's (what the sweep would fix)."""
    remote = {(m.provider, m.sid): provider_status(m.status) for m in sim}
    return sum(
        1
        for m in db
        if m.status in OPEN
        and m.provider_sid is not None
        and remote.get((m.provider, m.provider_sid), m.status) != m.status
    )


async def wait_quiet(
    database_url: str,
    sim: httpx.AsyncClient,
    *,
    not_before: float,
    max_wait: float,
    stable_for: float = 3.0,
) -> tuple[bool, float]:
    """Until no send work is left, nothing is pending, and neither the database nor the simulator
    changed for `stable_for` seconds (and not before the monotonic `not_before`); bounded by
    `max_wait`. Returns (quiet, seconds waited)."""
    t0 = time.monotonic()
    deadline = t0 + max_wait
    last: tuple[Any, ...] | None = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        state = await asyncio.to_thread(progress, database_url)
        snapshot: tuple[Any, ...] | None = None
        with contextlib.suppress(httpx.HTTPError):
            rows, _ = await read_sim(sim)
            sim_state = sorted((m.sid, m.status) for m in rows)
            if state is not None:
                snapshot = (state["messages"], state["last_update"], tuple(sim_state))
        now = time.monotonic()
        if snapshot is None or snapshot != last:
            last, since = snapshot, now
        busy = state is None or state["outbox"] or state["pending"]
        if not busy and now - since >= stable_for and now >= not_before:
            return True, now - t0
        await asyncio.sleep(POLL_SECONDS)
    return False, time.monotonic() - t0


async def wait_swept(
    database_url: str, sim: httpx.AsyncClient, *, max_wait: float
) -> tuple[int, float]:
    """Until no accepted message's status lags the provider's, bounded by `max_wait`: the
    dispatchers' own status sweep (STATUS_SWEEP_AFTER_SECONDS) asks the provider about them.
    Returns (messages still lagging, seconds waited)."""
    t0 = time.monotonic()
    while True:
        rows, _ = await read_sim(sim)
        db = await asyncio.to_thread(read_db, database_url)
        stale = stale_statuses(db.messages, rows)
        if not stale or time.monotonic() - t0 >= max_wait:
            return stale, time.monotonic() - t0
        await asyncio.sleep(POLL_SECONDS)
