"""API test fixtures: the app under a real uvicorn server, a client, API keys, JSON logs.

Imported by name into the test modules that use them (conftest belongs to the lead).
"""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from starlette.applications import Starlette

from api.app import create_app
from shared import apikeys
from shared.config import Settings
from shared.logs import setup_logging
from tests.webhook_support import offline_resolver

TO = "+14155552671"  # a US number phonenumbers accepts (FIXED_LINE_OR_MOBILE)
SENDER = "+15005550006"  # TWILIO_PHONE_NUMBER of the conftest settings


@pytest.fixture(name="api_key")
def api_key_fixture(db: psycopg.Connection[Any]) -> str:
    """A fresh, active API key."""
    _, key = apikeys.create_key_sync(db, "tests")
    return key


@pytest.fixture(name="auth")
def auth_fixture(api_key: str) -> dict[str, str]:
    """Headers of an authenticated JSON request."""
    return {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}


@pytest.fixture(name="app")
def app_fixture(settings: Settings) -> Starlette:
    # Webhook registrations resolve names with a stub: no test reaches a DNS server.
    return create_app(settings, resolve=offline_resolver)


class LiveServer:
    """uvicorn serving the app on a free loopback port in a background thread."""

    def __init__(self, app: Starlette) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_config=None, lifespan="on", http="h11", loop="asyncio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, args=([self.sock],), daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:  # readiness poll, bounded
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@pytest.fixture(name="live")
def live_fixture(app: Starlette) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server


@pytest.fixture(name="client")
def client_fixture(live: LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client of the live server (starlette's TestClient warns about httpx)."""
    with httpx.Client(base_url=live.url, timeout=10) as client:
        yield client


@pytest.fixture(name="json_logs")
def json_logs_fixture() -> Iterator[io.StringIO]:
    """Every log line of the test as the production JSON formatter writes it."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    setup_logging("DEBUG", unmasked_numbers=False)
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


_HOLD_LOCK = 4242


def _wait_for_lock_waiters(db: psycopg.Connection[Any], count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded poll of pg_stat_activity
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
        if row is not None and row[0] >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"{count} requests never waited together")


def race(
    db: psycopg.Connection[Any],
    base_url: str,
    requests: list[tuple[str, dict[str, Any], dict[str, str]]],
) -> list[httpx.Response]:
    """POST the requests at once, forced to overlap inside their enqueue transactions.

    A trigger made for the test holds every message insert on an advisory lock the test owns, so
    the first request sits in its transaction (conversation row written, nothing committed) while
    the others reach the same rows and wait. Once all of them wait on a lock, the lock goes.
    """
    db.execute(
        f"""
        CREATE FUNCTION test_hold_message() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock_shared({_HOLD_LOCK}); RETURN NEW; END $$;
        CREATE TRIGGER test_hold_message BEFORE INSERT ON sms_messages
            FOR EACH ROW EXECUTE FUNCTION test_hold_message();
        """
    )
    db.execute("SELECT pg_advisory_lock(%s)", (_HOLD_LOCK,))
    results: list[httpx.Response | None] = [None] * len(requests)

    def post(i: int, path: str, payload: dict[str, Any], headers: dict[str, str]) -> None:
        results[i] = httpx.post(base_url + path, json=payload, headers=headers, timeout=30)

    threads = [
        threading.Thread(target=post, args=(i, *request)) for i, request in enumerate(requests)
    ]
    for thread in threads:
        thread.start()
    try:
        _wait_for_lock_waiters(db, len(requests))
    finally:
        db.execute("SELECT pg_advisory_unlock(%s)", (_HOLD_LOCK,))
        for thread in threads:
            thread.join(timeout=30)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def errors(response: httpx.Response) -> set[tuple[str | None, str]]:
    """The (field, code) pairs of a 400's errors list."""
    assert response.status_code == 400, response.text
    return {(e.get("field"), e["code"]) for e in response.json()["errors"]}
