"""Database down is a clear answer: the API says 503 database_unavailable within seconds and
/readyz says why; the dispatcher logs one line per outage naming DATABASE_URL (never its value),
retries with capped backoff and says when the database is back. Both recover by themselves.

The database is made unreachable for real: a port where nothing listens, or the test's own
database refusing connections (ALLOW_CONNECTIONS false) with our sessions terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import psycopg.errors
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import PoolTimeout
from twilio.request_validator import RequestValidator

from api.app import create_app
from dispatcher.runner import Runner
from dispatcher.service import Dispatcher
from dispatcher.wakeup import Wakeup
from shared.config import Settings, load_settings
from shared.db import (
    POOL_TIMEOUT_REASON,
    Outage,
    conninfo_with_app,
    open_pool,
    probe,
    reconnect_delay,
    unavailable,
)
from shared.errors import ConfigError
from tests.api_support import (  # noqa: F401 - fixtures are used by name
    TO,
    LiveServer,
    api_key_fixture,
    auth_fixture,
)
from tests.dispatch_support import env_for, log_actions, start_dispatcher, stop_all, wait_until

# In every DATABASE_URL here; it must never reach a log line.
SECRET = "pw-never-logged-4711"
OUR_APPS = ["sms-outbox-api", "sms-dispatcher", "sms-dispatcher-listen"]
UNAVAILABLE_PREFIX = "database unreachable ("


def closed_port() -> int:
    """A loopback port with nothing listening on it (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unreachable_url() -> str:
    return f"host=127.0.0.1 port={closed_port()} dbname=sms user=sms password={SECRET}"


def with_secret(url: str) -> str:
    """`url` plus a password (the test server trusts local connections and ignores it)."""
    return make_conninfo(url, password=SECRET)


@contextlib.contextmanager
def refused(db: psycopg.Connection[Any]) -> Iterator[None]:
    """The test's database refuses new sessions and ours are terminated, until the block ends."""
    alter = "ALTER DATABASE {} ALLOW_CONNECTIONS {}"
    name = sql.Identifier(db.info.dbname)
    # A database cannot refuse connections by its own session's command: say it from another.
    other = make_conninfo(db.info.dsn, dbname="postgres")
    with psycopg.connect(other, autocommit=True) as admin:
        admin.execute(sql.SQL(alter).format(name, sql.SQL("false")))
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND application_name = ANY(%s)",
                (db.info.dbname, OUR_APPS),
            )
            yield
        finally:
            admin.execute(sql.SQL(alter).format(name, sql.SQL("true")))


def records(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", None) == action]


# -- pure decisions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "ceiling"),
    [
        (1, 0.5),
        (2, 1.0),
        (3, 2.0),
        (4, 4.0),
        (5, 8.0),
        (6, 16.0),
        (7, 30.0),
        (8, 30.0),
        (10**6, 30.0),
    ],
)
def test_reconnect_delay_doubles_from_half_a_second_to_a_thirty_second_cap(
    failures: int, ceiling: float
) -> None:
    """The n-th failure in a row waits 0.5 s * 2^(n-1), capped at 30 s, less up to a quarter."""
    assert reconnect_delay(failures, 0.0) == ceiling
    assert reconnect_delay(failures, 1.0) == ceiling * 0.75


@given(st.integers(min_value=-3, max_value=10**9), st.floats(min_value=0.0, max_value=1.0))
def test_reconnect_delay_never_spins_and_never_passes_its_cap(failures: int, rand: float) -> None:
    """Any failure count and any draw: between 0.375 s and 30 s, and never shorter than before."""
    delay = reconnect_delay(failures, rand)
    assert 0.375 <= delay <= 30.0
    assert reconnect_delay(failures + 1, rand) >= delay


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (PoolTimeout("couldn't get a connection after 5.00 sec"), POOL_TIMEOUT_REASON),
        (
            psycopg.OperationalError(
                'connection failed: connection to server at "10.1.2.3", port 5432 failed: '
                "Connection refused\n\tIs the server running on that host?"
            ),
            "connection refused",
        ),
        (
            psycopg.OperationalError(
                'connection failed: FATAL:  password authentication failed for user "sms"'
            ),
            "authentication failed",
        ),
        (
            psycopg.OperationalError("failed to resolve host 'db.internal': Name or service"),
            "unknown host",
        ),
        (psycopg.errors.ConnectionTimeout("connection timeout expired"), "connection timed out"),
        (
            psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
            "connection terminated by an administrator",
        ),
        (
            psycopg.OperationalError("consuming input failed: server closed the connection"),
            "connection lost",
        ),
        (
            psycopg.errors.CannotConnectNow("the database system is starting up"),
            "the server is starting up",
        ),
        (
            psycopg.errors.TooManyConnections("sorry, too many clients already"),
            "too many connections",
        ),
        (psycopg.errors.SerializationFailure("could not serialize access"), None),
        (psycopg.errors.DeadlockDetected("deadlock detected"), None),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), None),
        (psycopg.errors.LockNotAvailable("could not obtain lock"), None),
        (psycopg.errors.UniqueViolation("duplicate key"), None),
        (ValueError("connection refused"), None),
    ],
)
def test_only_errors_of_an_unreachable_database_are_translated(
    exc: Exception, reason: str | None
) -> None:
    """Connection failures, losses and shutdowns become DatabaseUnavailable with a short reason
    that quotes nothing of the connection string; a failing statement stays what it is."""
    down = unavailable(exc)
    assert (down.reason if down else None) == reason
    if down is not None:
        assert "10.1.2.3" not in down.reason and "sms" not in down.reason
        assert down.category == type(exc).__name__


def test_an_error_raised_while_cleaning_up_a_lost_connection_is_the_loss() -> None:
    """Resetting or rolling back a connection that just died raises again: the loss counts."""
    try:
        try:
            raise psycopg.errors.AdminShutdown(
                "terminating connection due to administrator command"
            )
        except psycopg.Error:
            raise psycopg.ProgrammingError("can't change 'autocommit' now") from None
    except psycopg.ProgrammingError as e:
        cleanup = e
    assert cleanup.__cause__ is None
    down = unavailable(cleanup)
    assert down is not None and down.category == "AdminShutdown"


def test_connect_timeout_comes_from_the_setting_unless_the_url_sets_one() -> None:
    """Whole seconds, at least libpq's 2; a connect_timeout written in DATABASE_URL wins."""

    def timeout_of(url: str, seconds: float | None) -> str | None:
        params = conninfo_to_dict(conninfo_with_app(url, "test", timeout=seconds))
        assert params["application_name"] == "test"
        return params.get("connect_timeout")

    assert timeout_of("host=h dbname=d", 5.0) == "5"
    assert timeout_of("host=h dbname=d", 4.2) == "5"
    assert timeout_of("host=h dbname=d", 0.5) == "2"
    assert timeout_of("postgresql://u@h/d?connect_timeout=9", 5.0) == "9"
    assert timeout_of("host=h dbname=d", None) is None


def test_database_timeout_setting_defaults_to_five_seconds_and_refuses_nonsense() -> None:
    """DATABASE_TIMEOUT_SECONDS: 5 by default; zero, negative or not a number stops start-up."""
    assert load_settings({}).database_timeout_seconds == 5.0
    assert load_settings({"DATABASE_TIMEOUT_SECONDS": "1.5"}).database_timeout_seconds == 1.5
    for bad in ("0", "-1", "soon", "nan"):
        with pytest.raises(ConfigError, match="DATABASE_TIMEOUT_SECONDS"):
            load_settings({"DATABASE_TIMEOUT_SECONDS": bad})


def test_probe_says_why_a_direct_connection_fails(db_url: str) -> None:
    """The reason a pool timeout hides, asked of the server itself: None when it answers."""

    async def reasons() -> list[str | None]:
        found = []
        for url in (db_url, make_conninfo(db_url, dbname="no_such_db"), unreachable_url()):
            down = await probe(url, 5.0)
            found.append(down.reason if down else None)
        return found

    assert asyncio.run(reasons()) == [
        None,
        "database or role does not exist",
        "connection refused",
    ]


# -- the API ---------------------------------------------------------------------------------

ANY_KEY = {"Authorization": "Bearer any-key-at-all"}


def assert_database_unavailable(r: httpx.Response) -> str:
    """A 503 in the error shape with code database_unavailable and Retry-After; its message."""
    assert r.status_code == 503, r.text
    (error,) = r.json()["errors"]
    assert error["code"] == "database_unavailable"
    assert error["message"].startswith(UNAVAILABLE_PREFIX)
    assert r.headers["retry-after"] == "5"
    assert r.headers["x-request-id"]
    return str(error["message"])


def test_send_answers_503_within_seconds_when_nothing_listens(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """With nothing listening at DATABASE_URL the API starts anyway, and POST /sms/send answers
    503 database_unavailable after the 5 s default wait (not a 500 after 30 s)."""
    down = dataclasses.replace(settings, database_url=unreachable_url())
    assert down.database_timeout_seconds == 5.0
    with (
        LiveServer(create_app(down)) as live,
        httpx.Client(base_url=live.url, timeout=60) as client,
    ):
        started = time.monotonic()
        r = client.post("/sms/send", json={"to": TO, "body": "hello"}, headers=ANY_KEY)
        elapsed = time.monotonic() - started
        assert client.get("/healthz").status_code == 200
    assert_database_unavailable(r)
    assert elapsed < 10, f"took {elapsed:.1f} s"
    # Start-up said once what is wrong and where to look, without the URL itself.
    (line,) = records(caplog, "database_unavailable")
    assert "check DATABASE_URL" in line.getMessage()
    assert "connection refused" in line.getMessage()
    assert SECRET not in caplog.text and down.database_url not in caplog.text


def test_every_database_route_answers_503_and_readyz_says_why(settings: Settings) -> None:
    """The batch, the reads, cancel, retry and status callbacks answer the same 503; /readyz
    names the reason."""
    down = dataclasses.replace(
        settings, database_url=unreachable_url(), database_timeout_seconds=1.0
    )
    some_id = uuid.uuid4()
    requests: list[tuple[str, str, Any]] = [
        ("POST", "/sms/send/batch", {"messages": [{"to": TO, "body": "hello"}]}),
        ("GET", "/sms/messages", None),
        ("GET", f"/sms/messages/{some_id}", None),
        ("POST", f"/sms/messages/{some_id}/cancel", None),
        ("POST", f"/sms/messages/{some_id}/retry", None),
    ]
    with (
        LiveServer(create_app(down)) as live,
        httpx.Client(base_url=live.url, timeout=30) as client,
    ):
        for method, path, body in requests:
            assert_database_unavailable(client.request(method, path, json=body, headers=ANY_KEY))
        # A provider's signed status callback too: the provider tries again later.
        callback = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"}
        signature = RequestValidator("test-auth-token").compute_signature(
            "http://testserver/webhook/twilio/status", callback
        )
        assert_database_unavailable(
            client.post(
                "/webhook/twilio/status", data=callback, headers={"X-Twilio-Signature": signature}
            )
        )
        ready = client.get("/readyz")
    assert "connection refused" in assert_database_unavailable(ready)


def test_api_answers_503_while_the_database_refuses_and_recovers_by_itself(
    settings: Settings,
    db: psycopg.Connection[Any],
    auth: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Sessions killed and new ones refused: 503 database_unavailable (never a 500) within the
    1 s setting; once the database takes sessions again the same server answers 202 and ready."""
    fast = dataclasses.replace(
        settings, database_url=with_secret(settings.database_url), database_timeout_seconds=1.0
    )
    payload = {"to": TO, "body": "hello"}
    with (
        LiveServer(create_app(fast)) as live,
        httpx.Client(base_url=live.url, timeout=30) as client,
    ):
        assert client.post("/sms/send", json=payload, headers=auth).status_code == 202
        with refused(db):
            for _ in range(3):  # killed pooled sessions first, then the wait for a new one
                started = time.monotonic()
                assert_database_unavailable(client.post("/sms/send", json=payload, headers=auth))
                assert time.monotonic() - started < 10
            assert_database_unavailable(client.get("/readyz"))
        # The pool reconnects by itself: a bounded wait for its next attempt.
        wait_until(
            lambda: client.get("/readyz").status_code == 200, seconds=45, what="readyz back to 200"
        )
        assert client.post("/sms/send", json=payload, headers=auth).status_code == 202
    failed = records(caplog, "request_failed")  # the boundary's line per refused request
    assert len(failed) >= 4
    assert {getattr(r, "error_code", None) for r in failed} == {"database_unavailable"}
    assert SECRET not in caplog.text


# -- the dispatcher --------------------------------------------------------------------------


async def eventually(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll a state probe until true; fail after `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                if check():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_dispatcher_logs_one_line_per_outage_and_one_when_the_database_is_back(
    settings: Settings, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Through many failed claims: one WARNING+ line naming DATABASE_URL (never its value) when
    the outage starts, one when it ends, nothing per retry; the loop keeps running throughout."""
    url = with_secret(settings.database_url)

    async def scenario() -> Outage:
        pool = await open_pool(url, application_name="sms-dispatcher", min_size=1, max_size=2,
                               timeout_seconds=1.0)  # fmt: skip
        dispatcher = Dispatcher(settings=settings, pool=pool, providers={}, owner="test:1:down")
        outage = Outage(logging.getLogger("dispatcher.runner"), pool=pool, timeout=1.0)
        listen = Wakeup(conninfo_with_app(url, "sms-dispatcher-listen", timeout=1.0))
        # Backoff is tested as a pure function above; here it is short so retries pile up.
        runner = Runner(dispatcher, listen, outage=outage, backoff=lambda failures, rand: 0.05)
        task = asyncio.create_task(runner.run())
        try:
            await asyncio.wait_for(listen.connected.wait(), 10)
            with refused(db):
                await eventually(lambda: outage.failures >= 4, 30, "four failed claims")
                assert not task.done()
            await eventually(lambda: outage.failures == 0, 45, "a claim to succeed again")
        finally:
            runner.stop()
            await asyncio.wait_for(task, 15)
            await pool.close()
        return outage

    caplog.set_level(logging.DEBUG, logger="dispatcher")
    asyncio.run(scenario())
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [getattr(r, "action", None) for r in loud] == [
        "database_unavailable",
        "database_recovered",
    ], [r.getMessage() for r in loud]
    assert "(check DATABASE_URL)" in loud[0].getMessage()
    assert len(records(caplog, "database_retry")) >= 3  # the retries, at DEBUG only
    assert SECRET not in caplog.text and url not in caplog.text


def test_dispatcher_process_starts_with_the_database_down_and_keeps_retrying(
    tmp_path: Path,
) -> None:
    """`python -m dispatcher` with nothing listening at DATABASE_URL: no crash, one ERROR line
    that names DATABASE_URL and the reason, retries with backoff, and a clean exit on SIGTERM."""
    log = tmp_path / "dispatcher.log"
    env = env_for(
        {
            "DATABASE_URL": unreachable_url(),
            "DATABASE_TIMEOUT_SECONDS": "0.5",
            "LOG_LEVEL": "DEBUG",
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_AUTH_TOKEN": "test-auth-token",
            "TWILIO_PHONE_NUMBER": "+15005550006",
        }
    )
    proc = start_dispatcher(env, log)
    try:
        wait_until(
            lambda: any(r.get("attempt", 0) >= 3 for r in log_actions(log, "database_retry")),
            seconds=60,
            what="three failed claims",
        )
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        stop_all([proc])
    (line,) = log_actions(log, "database_unavailable")
    assert line["level"] == "ERROR"
    assert line["message"].startswith("database unreachable (check DATABASE_URL): ")
    assert "connection refused" in line["message"]
    text = log.read_text()
    assert SECRET not in text and "Traceback" not in text
