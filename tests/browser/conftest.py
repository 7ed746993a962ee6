"""Browser tests of the ops console: Playwright drives Debian's chromium (its own browser download
cannot reach the internet here) against the API served by uvicorn on 127.0.0.1, on this test's
database with traffic sent through the API and the dispatcher to the simulator.

Without /usr/bin/chromium every test here is skipped with one line saying how to install it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from shared import apikeys
from shared.config import Settings, load_settings
from tests.api_support import LiveServer
from tests.dispatch_support import running
from tests.fixtures_sim import CallbackListener, SimHandle, sim_environ
from tests.webhook_support import offline_resolver
from tooling.screenshots import CHROMIUM, LAUNCH_ARGS  # the same browser, launched alike

INSTALL_HINT = (
    "chromium not found at /usr/bin/chromium: install it with `sudo apt-get install -y chromium` "
    "to run the ops console's browser tests"
)
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless chromium per module (skips every browser test when it is not installed).
    Not per session: Playwright's sync API keeps an event loop running on this thread until it
    stops, and the modules after this one call asyncio.run."""
    if not CHROMIUM.exists():
        pytest.skip(INSTALL_HINT)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watched:
    """A browser page and what went wrong on it: console errors and failed requests."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return self.console_errors + self.failed_requests


def _failed(watched: Watched, request: Any) -> None:
    """A request that got no answer. One the browser itself gave up on because the page moved on
    (net::ERR_ABORTED: Chromium fetches the icon lazily, after networkidle may already have been
    reached) is not the server's failure; an answer of 400 or more is counted by the "response"
    watcher instead."""
    if request.failure != "net::ERR_ABORTED":
        watched.failed_requests.append(f"{request.method} {request.url}: {request.failure}")


@pytest.fixture
def browser_page(chromium: Any) -> Iterator[Watched]:
    """A fresh browser context (no cookies) at 1280 px, its console and requests watched."""
    context = chromium.new_context(viewport=WIDE)
    page = context.new_page()
    page.set_default_timeout(10_000)
    watched = Watched(page)
    page.on(
        "console",
        lambda m: watched.console_errors.append(m.text) if m.type == "error" else None,
    )
    page.on("requestfailed", lambda r: _failed(watched, r))
    page.on(
        "response",
        lambda r: (
            watched.failed_requests.append(f"{r.request.method} {r.url}: HTTP {r.status}")
            if r.status >= 400
            else None
        ),
    )
    try:
        yield watched
    finally:
        context.close()


@pytest.fixture
def traffic_settings(sim: SimHandle, db_url: str, callback_listener: CallbackListener) -> Settings:
    """Both providers at the simulator, unpaced senders, this test's database."""
    return load_settings(
        {
            **sim_environ(sim, callback_listener.url),
            "DATABASE_URL": db_url,
            "SENDER_DEFAULT_MPS": "10000",
        }
    )


@pytest.fixture
def server(traffic_settings: Settings) -> Iterator[LiveServer]:
    """The API (and so /ops) under uvicorn on a free loopback port."""
    from api.app import create_app

    with LiveServer(create_app(traffic_settings, resolve=offline_resolver)) as live:
        yield live


@pytest.fixture
def operator_key(db: psycopg.Connection[Any]) -> tuple[int, str]:
    """(id, key) of an operator key."""
    return apikeys.create_key_sync(db, "browser tests", role="operator")


@pytest.fixture
def sender_key(db: psycopg.Connection[Any]) -> str:
    _, key = apikeys.create_key_sync(db, "browser sender")
    return key


def run_dispatcher(settings: Settings) -> None:
    """One dispatcher iteration (claim due work, send it to the simulator, record), on a thread
    of its own: Playwright's sync API keeps an event loop running on this one."""
    errors: list[BaseException] = []

    async def go() -> None:
        async with httpx.AsyncClient() as http, running(settings, http=http) as dispatcher:
            await dispatcher.run_once()

    def run() -> None:
        try:
            asyncio.run(go())
        except BaseException as e:  # handed to the test's thread below
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the dispatcher iteration did not finish"
    if errors:
        raise errors[0]


def send(base_url: str, key: str, to: str, body: str = "hello") -> str:
    """POST /sms/send with a sender key; the new message's id."""
    r = httpx.post(
        base_url + "/sms/send",
        json={"to": to, "body": body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def fail(db: psycopg.Connection[Any], message_id: str, sid: str | None = None) -> None:
    """Make a message finally failed as the dispatcher would (its outbox work gone); with `sid`,
    as one the provider had accepted."""
    db.execute("DELETE FROM sms_outbox WHERE message_id = %s", (message_id,))
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'failed', final_at = now(),"
        " provider_sid = %s, error_code = '30008', error_category = 'permanent',"
        " error_message = 'unknown error', attempts = 1 WHERE id = %s",
        (sid, message_id),
    )


@dataclass(frozen=True)
class Seeded:
    """The traffic a browser test looks at."""

    sent: list[str]  # sent through the simulator
    queued: list[str]  # still in the queue
    failed_never_accepted: str
    failed_accepted: str
    recipients: dict[str, str]  # message id -> recipient


@pytest.fixture
def seeded(
    server: LiveServer,
    sender_key: str,
    db: psycopg.Connection[Any],
    traffic_settings: Settings,
) -> Seeded:
    """Messages sent (dispatcher to simulator), queued, failed before and after acceptance."""
    recipients: dict[str, str] = {}

    def message(to: str) -> str:
        message_id = send(server.url, sender_key, to)
        recipients[message_id] = to
        return message_id

    sent = [message(f"+1415555{2600 + i:04d}") for i in range(3)]
    run_dispatcher(traffic_settings)
    queued = [message(f"+1415555{2700 + i:04d}") for i in range(2)]
    never = message("+14155552801")
    accepted = message("+14155552802")
    fail(db, never)
    fail(db, accepted, sid="SM" + "a" * 32)
    return Seeded(sent, queued, never, accepted, recipients)


def sign_in(watched: Watched, base_url: str, key: str) -> Any:
    """Sign in through the form, by keyboard; the response of the form's POST."""
    page = watched.page
    page.goto(base_url + "/ops/sign-in")
    page.get_by_label("Operator API key").fill(key)
    with page.expect_navigation() as navigation:
        page.get_by_label("Operator API key").press("Enter")
    page.wait_for_load_state("networkidle")  # its stylesheet and icon, before the next page
    return navigation.value
