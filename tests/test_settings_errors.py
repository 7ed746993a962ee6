"""A bad setting stops the API and the dispatcher with one line naming it: no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

API = [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port", "0"]
DISPATCHER = [sys.executable, "-m", "dispatcher"]


@pytest.mark.parametrize(
    ("argv", "variable", "value"),
    [
        (API, "LOG_LEVEL", "LOUD"),
        (DISPATCHER, "LOG_LEVEL", "LOUD"),
        (API, "RETRY_DELAY_SECONDS", "soon"),
        (DISPATCHER, "RETRY_DELAY_SECONDS", "soon"),
        (API, "TWILIO_PHONE_NUMBER", "not a number"),
    ],
)
def test_bad_setting_is_one_line_and_exit_2(argv: list[str], variable: str, value: str) -> None:
    """The process exits 2 before serving, its stderr one line that names the variable."""
    env = {**os.environ, variable: value, "DATABASE_URL": "host=127.0.0.1 port=1 dbname=x"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and variable in done.stderr, done.stderr


@pytest.mark.parametrize("argv", [API, DISPATCHER])
def test_missing_database_url_is_one_line_and_exit_2(argv: list[str]) -> None:
    """Without DATABASE_URL both processes say so in one line and exit 2, with no traceback."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "DATABASE_URL" in done.stderr, done.stderr
