"""Connections: one async pool per process, built by the composition roots; and the one boundary
where "the database cannot be reached" is recognised (`unavailable`), explained and reported.

Both processes translate psycopg and psycopg_pool errors here, once, into DatabaseUnavailable: the
API answers it with 503 `database_unavailable`, the dispatcher backs off with `reconnect_delay` and
reports each outage once through `Outage`.

Behind a transaction-pooling PgBouncer (1.18 and older keep no prepared statements across
transactions) a connection must not use server-side prepared statements: `behind_pooler` tells,
from the backend pid the server reports against the one the connection was given, and
`open_pool` and `connect` then turn psycopg's prepared statements off for that connection.

The dispatcher's pools run a few fixed statements many times a second over connections the pool
hands out in turn, so they ask for generic plans (`open_pool(generic_plans=True)`): each statement
is prepared on its first execution on a connection and planned once there. With PostgreSQL's
default plan_cache_mode, an outbox that has held a burst (many pages, few live rows) made the SMS
claim choose a fresh custom plan on a third of its executions, 1.4 ms of planning each, and a
grown pool spread the webhook loop's statements so thin that most ran before psycopg's fifth use
prepared them (bench webhooks, a dead endpoint at 150 messages/s: planning 0.3-0.8 s per 10 s
against 0.13 s without it). A generic plan cannot see a parameter's value; the dispatcher's
statements were measured with it side by side: the no-op drain and the drain through the
simulator ran as fast as before. Behind PgBouncer nothing is prepared (and PgBouncer drops the
`options` startup parameter, ignore_startup_parameters), so there it changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout, TooManyRequests

from shared.errors import SmsOutboxError
from shared.plans import Replanner

# Waiting for the database: the default of DATABASE_TIMEOUT_SECONDS.
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
# Reconnection backoff: doubling from the first delay up to the cap, less a random part of at most
# a quarter, so that many processes do not come back in step and none ever spins.
RECONNECT_FIRST_SECONDS: Final = 0.5
RECONNECT_CAP_SECONDS: Final = 30.0
RECONNECT_JITTER: Final = 0.25
# A pool slot that keeps failing to connect gives up after this long; the next request starts a
# fresh attempt at once. With the pool's default (300 s) its own backoff grows to 128 s steps, so a
# database back after a long outage could wait two minutes for the pool to notice.
POOL_GIVE_UP_SECONDS: Final = 30.0

# SQLSTATEs of a server going away or refusing sessions (not of a statement failing): class 08
# (connection exception), admin/crash shutdown, cannot connect now, database dropped, idle session
# timeout, and too many connections.
_GONE_SQLSTATES: Final = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05", "53300"})
# Why, in words that never quote the connection string: the first phrase found in the library's
# message (lower case) gives the reason. libpq's messages name the host, port, user and database.
_REASONS: Final = (
    ("connection refused", "connection refused"),
    ("no such file or directory", "no server listening on the socket"),
    ("timeout expired", "connection timed out"),
    ("password authentication failed", "authentication failed"),
    ("authentication failed", "authentication failed"),
    ("no pg_hba.conf entry", "connection refused by pg_hba.conf"),
    ("failed to resolve host", "unknown host"),
    ("could not translate host name", "unknown host"),
    ("network is unreachable", "network unreachable"),
    ("no route to host", "network unreachable"),
    ("does not exist", "database or role does not exist"),
    ("not currently accepting connections", "the database is not accepting connections"),
    ("shutting down", "the server is shutting down"),
    ("starting up", "the server is starting up"),
    ("too many clients", "too many connections"),
    ("connection slots are reserved", "too many connections"),
    ("administrator command", "connection terminated by an administrator"),
    ("terminating connection", "connection terminated by the server"),
    ("server closed the connection", "connection lost"),
    ("consuming input failed", "connection lost"),
    ("connection is lost", "connection lost"),
    ("connection is closed", "connection closed"),
)
POOL_TIMEOUT_REASON: Final = "no connection from the pool in time"
_SESSION_OPTIONS: Final = {
    # A session of ours left idle in a transaction would hold back vacuum of the outbox. PgBouncer
    # refuses this startup parameter unless its ignore_startup_parameters lists `options`; behind
    # it the roles carry the same setting (smsctl db roles).
    "options": "-c idle_in_transaction_session_timeout=30000"
}
# open_pool(generic_plans=True): one plan per statement and connection (the module's docstring).
GENERIC_PLANS_OPTION: Final = "-c plan_cache_mode=force_generic_plan"


class DatabaseUnavailable(SmsOutboxError):
    """The database cannot be reached: refused, timed out, shutting down, or the connection lost.

    `reason` comes from a fixed vocabulary and never quotes the connection string (it may hold a
    password); `category` is the library's exception class.
    """

    def __init__(self, reason: str, *, category: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


def unavailable(exc: BaseException) -> DatabaseUnavailable | None:
    """`exc` as DatabaseUnavailable when it means the database cannot be reached, else None.

    Looks through the exceptions `exc` was raised from or while handling: cleaning up after a lost
    connection (resetting it, rolling back) raises again, and the loss is what happened.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _translate(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def _translate(exc: BaseException) -> DatabaseUnavailable | None:
    if isinstance(exc, DatabaseUnavailable):
        return exc
    category = type(exc).__name__
    if isinstance(exc, PoolTimeout | TooManyRequests):
        return DatabaseUnavailable(POOL_TIMEOUT_REASON, category=category)
    if isinstance(exc, PoolClosed):
        return DatabaseUnavailable("the connection pool is closed", category=category)
    if not isinstance(exc, psycopg.OperationalError):
        return None
    state = exc.sqlstate
    # With a SQLSTATE, the server answered: only the states of it going away count (a deadlock,
    # a statement timeout or a lock timeout is an OperationalError too, but not an outage).
    if state is not None and not (state.startswith("08") or state in _GONE_SQLSTATES):
        return None
    return DatabaseUnavailable(_reason(exc), category=category)


def _reason(exc: BaseException) -> str:
    text = str(exc).lower()
    found = next((why for phrase, why in _REASONS if phrase in text), None)
    return found or getattr(exc, "sqlstate", None) or type(exc).__name__


def reconnect_delay(failures: int, rand: float) -> float:
    """Seconds to wait after `failures` failed attempts in a row (1, 2, ...), `rand` in [0, 1].

    0.5 s doubling per failure up to 30 s, less at most a quarter at random: always at least
    0.375 s (no busy loop), never more than the cap.
    """
    doublings = min(max(failures, 1) - 1, 32)  # 0.5 * 2**6 is past the cap already
    ceiling = min(RECONNECT_CAP_SECONDS, RECONNECT_FIRST_SECONDS * 2.0**doublings)
    return ceiling * (1.0 - RECONNECT_JITTER * min(max(rand, 0.0), 1.0))


async def probe(conninfo: str, within: float) -> DatabaseUnavailable | None:
    """Connect once, directly, for at most `within` seconds: why the database cannot be reached,
    None when it can."""
    try:
        async with asyncio.timeout(within):
            conn = await psycopg.AsyncConnection.connect(conninfo)
    except TimeoutError:
        return DatabaseUnavailable("connection timed out", category="TimeoutError")
    except psycopg.Error as e:  # any failure to connect is one (e.g. a refused password)
        return DatabaseUnavailable(_reason(e), category=type(e).__name__)
    await conn.close()
    return None


async def explain(
    down: DatabaseUnavailable, pool: AsyncConnectionPool[Any], within: float
) -> DatabaseUnavailable:
    """`down`, or, when the pool only timed out (which says nothing of why), the reason a direct
    connection attempt gives. A pool timeout with the database answering stays as it is (the
    pool was busy)."""
    if down.reason != POOL_TIMEOUT_REASON or not isinstance(pool.conninfo, str):
        return down
    return await probe(pool.conninfo, within) or down


class Outage:
    """Reports database outages once: one line when one starts, naming DATABASE_URL (never its
    value) with the reason, and one when the database answers again; retries in between log at
    DEBUG only. `pool` lets the first line say why a pool timeout happened."""

    def __init__(
        self,
        log: logging.Logger,
        *,
        pool: AsyncConnectionPool[Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.pool = pool
        self.timeout = timeout
        self.clock = clock
        self.failures = 0  # failed attempts in a row; 0 = the database answers
        self.since = 0.0

    async def failed(self, down: DatabaseUnavailable) -> int:
        """Count one failed attempt; the number of failures in a row (1 starts an outage)."""
        self.failures += 1
        if self.failures > 1:
            self.log.debug(
                "database still unreachable: %s",
                down.reason,
                extra={"action": "database_retry", "attempt": self.failures},
            )
            return self.failures
        self.since = self.clock()
        if self.pool is not None:
            down = await explain(down, self.pool, self.timeout)
        self.log.error(
            "database unreachable (check DATABASE_URL): %s; retrying with backoff",
            down.reason,
            extra={"action": "database_unavailable", "error_category": down.category},
        )
        return self.failures

    def recovered(self) -> None:
        """The database answered: ends the outage, if there was one, with one line (a WARNING like
        the outage's, so a LOG_LEVEL that shows one shows both)."""
        if self.failures:
            self.log.warning(
                "database reachable again",
                extra={
                    "action": "database_recovered",
                    "attempt": self.failures,
                    "duration_ms": round((self.clock() - self.since) * 1000, 1),
                },
            )
        self.failures = 0


class _QuietConnectFailures(logging.Filter):
    """Drops psycopg_pool's warnings per failed connection attempt (they repeat at every backoff
    step and quote host, port and user) and per dead connection thrown away (one per pooled
    connection when the server goes). Outage and the API's 503 answers report outages instead."""

    _NOISE: Final = (
        "error connecting in",
        "reconnection attempt in pool",
        "discarding closed connection",
        "discarding broken connection",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._NOISE)


def _quiet_pool_log() -> None:
    pool_log = logging.getLogger("psycopg.pool")
    if not any(isinstance(f, _QuietConnectFailures) for f in pool_log.filters):
        pool_log.addFilter(_QuietConnectFailures())


async def behind_pooler(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether `conn` reaches PostgreSQL through a pooler such as PgBouncer: the pooler hands its
    clients a cancel key of its own, so the backend pid the connection was given is not the pid
    of the server process that answers. One round trip; leaves the connection idle."""
    cur = await conn.execute("SELECT pg_backend_pid()")
    row = await cur.fetchone()
    if not conn.autocommit:
        await conn.rollback()
    return row is None or row[0] != conn.info.backend_pid


async def _no_prepare_behind_pooler(conn: psycopg.AsyncConnection[Any]) -> None:
    """Pool `configure`: a pooled server connection is shared by transactions of many clients, so
    a statement prepared on it by one may be missing (or already there) for the next. Statements
    then go unprepared (a parse per execution); a direct connection keeps psycopg's default."""
    if await behind_pooler(conn):
        conn.prepare_threshold = None


async def _prepare_at_once(conn: psycopg.AsyncConnection[Any]) -> None:
    """Pool `configure` of generic_plans: as _no_prepare_behind_pooler, and on a direct
    connection every statement is prepared on its first execution."""
    conn.prepare_threshold = None if await behind_pooler(conn) else 0


async def connect(conninfo: str, *, autocommit: bool = False) -> psycopg.AsyncConnection[Any]:
    """One connection (smsctl and other one-off callers), with prepared statements off when it
    goes through a pooler, as the pools do."""
    conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=autocommit)
    try:
        await _no_prepare_behind_pooler(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


def conninfo_with_app(conninfo: str, application_name: str, *, timeout: float | None = None) -> str:
    """Add application_name so pg_stat_activity shows which process holds a connection, and with
    `timeout` a connect_timeout (whole seconds, at least libpq's 2) unless `conninfo` sets one."""
    extra = {"application_name": application_name}
    if timeout is not None and "connect_timeout" not in conninfo_to_dict(conninfo):
        extra["connect_timeout"] = str(max(2, math.ceil(timeout)))
    return make_conninfo(conninfo, **extra)


def _session_options(*, generic_plans: bool) -> dict[str, str]:
    """The pool's connection keywords: _SESSION_OPTIONS, plus GENERIC_PLANS_OPTION."""
    options = dict(_SESSION_OPTIONS)
    if generic_plans:
        options["options"] += " " + GENERIC_PLANS_OPTION
    return options


async def open_pool(
    conninfo: str,
    *,
    application_name: str,
    min_size: int = 2,
    max_size: int = 10,
    wait: bool = True,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    generic_plans: bool = False,
    replanner: Replanner | None = None,
) -> AsyncConnectionPool:
    """An opened async pool whose connections never sit idle in a transaction past 30 s, and use
    no server-side prepared statements when they reach the server through a pooler.
    `generic_plans`: statements are prepared on their first execution and planned once
    (plan_cache_mode force_generic_plan), for a few statements run very often (the dispatcher).
    Every pool replans its cached plans once the growing tables have doubled (shared.plans;
    `replanner` is its pool check, a new Replanner unless given).

    `timeout_seconds` bounds both a connection attempt and a wait for a pooled connection, so a
    caller learns within seconds that the database is unreachable (PoolTimeout), not minutes.
    wait=False returns at once and connects in the background (the processes start while the
    database is down and recover by themselves when it is back).
    """
    _quiet_pool_log()
    pool = AsyncConnectionPool(
        conninfo_with_app(conninfo, application_name, timeout=timeout_seconds),
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=timeout_seconds,
        reconnect_timeout=POOL_GIVE_UP_SECONDS,
        kwargs=_session_options(generic_plans=generic_plans),
        configure=_prepare_at_once if generic_plans else _no_prepare_behind_pooler,
        check=replanner if replanner is not None else Replanner(),
    )
    await pool.open(wait=wait, timeout=max(timeout_seconds, 30.0))
    return pool
