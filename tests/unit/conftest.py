"""The unit tier: pure code (and the provider simulator), no database, seconds for the lot."""

from __future__ import annotations

import pytest

# Every database fixture (db, db_url, settings, sim_settings, api_support's...) reaches these.
_DATABASE = {"postgresql", "postgresql_proc", "_postgresql_template", "embedded_postgresql"}


def _refuse(what: str) -> None:
    pytest.fail(
        f"{what} needs PostgreSQL; unit tests use no database: move it out of tests/unit",
        pytrace=False,
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A unit test that asks for a database, directly or through a fixture, fails before setup."""
    if _DATABASE & set(getattr(item, "fixturenames", ())):
        _refuse(item.nodeid)


@pytest.fixture(scope="session")
def embedded_postgresql() -> None:
    """Stands in for tests/conftest.py's server here, so even a dynamic request never starts one."""
    _refuse("a fixture requested by getfixturevalue")
