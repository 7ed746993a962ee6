"""Pytest fixtures that run the provider simulator over real HTTP, and a callback listener."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn

from shared.config import Settings, load_settings
from simulator.app import create_app
from simulator.config import SimConfig

T = TypeVar("T")

SIM_TWILIO_NUMBER = "+15005550006"
SIM_SIGNALWIRE_NUMBER = "+15005550010"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimHandle:
    """A running simulator: where it is, how to steer it and what it recorded."""

    def __init__(self, port: int, config: SimConfig) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.config = config
        self._http = httpx.Client(base_url=self.base_url, timeout=5.0)

    def configure(self, **faults: Any) -> dict[str, Any]:
        """Change settings at run time (`POST /_sim/config`), e.g. configure(hang_rate=1)."""
        response = self._http.post("/_sim/config", json=faults)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset(self) -> None:
        """Forget every message and restore the start-up settings."""
        self._http.post("/_sim/reset").raise_for_status()

    def report(self) -> dict[str, Any]:
        result: dict[str, Any] = self._http.get("/_sim/messages").json()
        return result

    def messages(self) -> list[dict[str, Any]]:
        """Every message the simulator accepted, with `accepted_count` and `request_count`."""
        rows: list[dict[str, Any]] = self.report()["messages"]
        return rows

    def sends(self, from_number: str | None = None) -> dict[str, Any]:
        """`GET /_sim/sends[?from=]`: accepted sends ({at, segments}, `at` the simulator's
        time.monotonic()), max_window_segments, refused (pace 429s) and rule, per number."""
        params = None if from_number is None else {"from": from_number}
        response = self._http.get("/_sim/sends", params=params)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def max_window_segments(self, from_number: str) -> int:
        """The most segments the simulator accepted from `from_number` in any one-second window."""
        most: int = self.sends(from_number)["max_window_segments"]
        return most

    def twilio_messages_path(self) -> str:
        """Path of the Twilio Messages collection for this simulator's account."""
        return f"/2010-04-01/Accounts/{self.config.twilio_account_sid}/Messages.json"

    def post_twilio(self, timeout: float = 5.0, **form: str) -> httpx.Response:
        """POST a Twilio create with the simulator's credentials (From/To/Body default)."""
        data = {"From": SIM_TWILIO_NUMBER, "To": "+15551230000", "Body": "hi", **form}
        auth = (self.config.twilio_account_sid, self.config.twilio_auth_token)
        return self._http.post(self.twilio_messages_path(), data=data, auth=auth, timeout=timeout)

    def post_signalwire(self, timeout: float = 5.0, **fields: Any) -> httpx.Response:
        """POST a SignalWire create as JSON with the simulator's credentials."""
        data = {"from": SIM_SIGNALWIRE_NUMBER, "to": "+15551230000", "body": "hi", **fields}
        auth = (self.config.signalwire_project, self.config.signalwire_token)
        return self._http.post("/api/messaging/messages", json=data, auth=auth, timeout=timeout)

    def get(self, path: str, provider: str, **params: Any) -> httpx.Response:
        """GET one of a provider's read endpoints (or a paging link) with its credentials."""
        auth = (
            (self.config.twilio_account_sid, self.config.twilio_auth_token)
            if provider == "twilio"
            else (self.config.signalwire_project, self.config.signalwire_token)
        )
        # httpx would replace a query already in `path` (a paging link) with an empty `params`.
        return self._http.get(path, params=params or None, auth=auth)

    def env(self) -> dict[str, str]:
        """The settings environment that points both providers at this simulator."""
        return {
            "TWILIO_ACCOUNT_SID": self.config.twilio_account_sid,
            "TWILIO_AUTH_TOKEN": self.config.twilio_auth_token,
            "TWILIO_API_BASE_URL": self.base_url,
            "SIGNALWIRE_PROJECT_ID": self.config.signalwire_project,
            "SIGNALWIRE_API_TOKEN": self.config.signalwire_token,
            "SIGNALWIRE_SPACE": f"127.0.0.1:{self.port}",  # loopback: the SDK speaks http
            "SIGNALWIRE_SIGNING_KEY": self.config.signalwire_signing_key,
        }

    def close(self) -> None:
        self._http.close()


def wait_until(check: Callable[[], T], timeout: float = 5.0, every: float = 0.02) -> T:
    """Poll `check` until it returns something truthy (returned) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {result!r})")
        time.sleep(every)


@pytest.fixture(scope="session")
def sim_server() -> Iterator[SimHandle]:
    """One simulator for the whole run, served by uvicorn on a free port in a background thread."""
    # The twilio SDK logs query strings (phone numbers) at INFO; production's setup_logging quiets
    # it, and tests that drive the SDK without it must too, or the run-wide leak check fails.
    logging.getLogger("twilio").setLevel(logging.WARNING)
    config = SimConfig(callback_delay=0.01)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    handle = SimHandle(port, config)
    started = threading.Event()
    for _ in range(500):  # wait up to ~5 s for uvicorn to serve
        if server.started:
            started.set()
            break
        started.wait(0.01)
    assert server.started, "simulator did not start"
    yield handle
    server.should_exit = True
    thread.join(timeout=10)
    handle.close()
    sock.close()


@pytest.fixture
def sim(sim_server: SimHandle) -> SimHandle:
    """The session simulator, reset to its start-up state for this test."""
    sim_server.reset()
    return sim_server


@dataclass
class Received:
    """One request the listener got."""

    method: str
    path: str  # path and query string, as sent
    headers: dict[str, str]
    body: bytes


@dataclass
class CallbackListener:
    """A local HTTP server that answers 200 to every POST and records it."""

    url: str
    requests: list[Received] = field(default_factory=list)
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    def record(self, request: Received) -> None:
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until `count` requests arrived (or the timeout passed); return them all."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)


@pytest.fixture
def callback_listener() -> Iterator[CallbackListener]:
    """A recording HTTP listener on a free loopback port, for callbacks and alert webhooks."""
    listener: CallbackListener

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            listener.record(Received("POST", self.path, dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    listener = CallbackListener(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield listener
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def sim_environ(sim: SimHandle, public_base_url: str, **extra: str) -> dict[str, str]:
    """A complete settings environment for talking to the simulator (no database)."""
    return {
        **sim.env(),
        "TWILIO_PHONE_NUMBER": SIM_TWILIO_NUMBER,
        "SIGNALWIRE_PHONE_NUMBER": SIM_SIGNALWIRE_NUMBER,
        "PUBLIC_BASE_URL": public_base_url,
        "PROVIDER_TIMEOUT_SECONDS": "2",
        **extra,
    }


@pytest.fixture
def provider_settings(sim: SimHandle, callback_listener: CallbackListener) -> Settings:
    """Settings for both providers at the simulator, callbacks to the listener, no database."""
    return load_settings(sim_environ(sim, callback_listener.url))


@pytest.fixture
def sim_settings(sim: SimHandle, db_url: str, callback_listener: CallbackListener) -> Settings:
    """Settings for this test's database with both providers at the simulator.

    PUBLIC_BASE_URL is the callback listener; use dataclasses.replace(sim_settings,
    public_base_url=...) to point callbacks at your own app instead.
    """
    return load_settings({**sim_environ(sim, callback_listener.url), "DATABASE_URL": db_url})
