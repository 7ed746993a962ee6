"""A resolver for webhook URLs that reaches no DNS server (tests talk to 127.0.0.1 only), and the
fan-out of committed events into deliveries that the dispatcher's webhook loop runs."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

import psycopg

from shared.queries import q
from shared.webhook_targets import Resolver

# Names the stub knows; every other name does not resolve. The example.* names stand for the
# public and private hosts of the registration tests: registering one connects to nothing.
KNOWN: Final = {
    "localhost": ["127.0.0.1"],
    "hooks.example.com": ["93.184.215.14"],
    "intranet.example.com": ["10.1.2.3"],
    "mixed.example.com": ["93.184.215.14", "192.168.0.7"],
    "metadata.example.com": ["169.254.169.254"],
}


def stub_resolver(table: Mapping[str, Sequence[str]] = KNOWN) -> Resolver:
    """A resolver that answers from `table` and raises OSError for any other name."""

    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise OSError(f"{host}: not in the test resolver's table")
        return list(table[host])

    return resolve


offline_resolver: Final = stub_resolver()


def fan_out_step(conn: psycopg.Connection[Any], batch: int = 500) -> tuple[bool, int, int]:
    """One fan-out step's statements, as dispatcher.webhooks.fan_out_step runs them: the cursor
    locked when there is something to do, the shared step, one endpoint's catch-up. In a
    transaction of its own on an autocommit `conn`, else in `conn`'s open one (left open, with
    the cursor's lock). (took the cursor, events read, deliveries made)."""
    with conn.transaction() if conn.autocommit else contextlib.nullcontext():
        mark = conn.execute(q("webhook_deliveries_mark")).fetchone()
        if mark is None:
            return False, 0, 0
        shared = conn.execute(q("webhook_deliveries_fan_out"), {"limit": batch}).fetchone()
        behind = (None, 0, 0)
        if mark[1]:
            behind = conn.execute(q("webhook_deliveries_catch_up"), {"limit": batch}).fetchone()
    assert shared is not None and behind is not None
    return True, int(shared[0]) + int(behind[1]), int(shared[1]) + int(behind[2])


def fan_out(db: psycopg.Connection[Any], batch: int = 500) -> int:
    """Fan the committed message events out into deliveries, as the dispatcher's webhook loop
    does after each SMS batch (fan_out_step, each step its own transaction on the autocommit
    `db`, catch-ups of endpoints behind included), until a step finds fewer than `batch`; the
    deliveries made."""
    made = 0
    while True:
        took, events, deliveries = fan_out_step(db, batch)
        made += deliveries
        if not took or events < batch:
            return made
