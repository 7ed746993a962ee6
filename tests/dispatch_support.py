"""Dispatcher test helpers: enqueue through shared.messages, build a Dispatcher, read state."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
from psycopg import AsyncConnection

from dispatcher.service import Dispatcher
from shared.config import Settings
from shared.db import open_pool
from shared.messages import enqueue
from shared.providers.registry import close_providers, open_providers

ROOT = Path(__file__).resolve().parent.parent
TWILIO_FROM = "+15005550006"
# Tests that are not about pacing send from senders fast enough never to be held back by it.
UNPACED_MPS = 10_000

SENDER_SQL = """
    INSERT INTO sms_senders (phone_number, provider, mps, burst)
    VALUES (%(number)s, %(provider)s, %(mps)s, %(burst)s)
    ON CONFLICT (phone_number) DO NOTHING
"""


def ensure_sender(
    db: psycopg.Connection[Any], number: str, provider: str = "twilio", *, mps: float = UNPACED_MPS
) -> None:
    """Register `number` as a sender (the API refuses unknown ones), unpaced unless `mps` says."""
    burst = max(1, int(mps))
    db.execute(SENDER_SQL, {"number": number, "provider": provider, "mps": mps, "burst": burst})


def enqueue_messages(
    db_url: str,
    to_numbers: Sequence[str],
    *,
    from_number: str = TWILIO_FROM,
    provider: str = "twilio",
    body: str = "hello",
    priority: str = "normal",
    send_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> list[UUID]:
    """Enqueue one message per recipient, the way the API does; their ids in order."""

    with psycopg.connect(db_url, autocommit=True) as db:
        ensure_sender(db, from_number, provider)

    async def go() -> list[UUID]:
        async with await AsyncConnection.connect(db_url) as conn:
            ids = []
            for i, to in enumerate(to_numbers):
                created = await enqueue(
                    conn,
                    api_key_id=None,
                    to_number=to,
                    from_number=from_number,
                    provider=provider,
                    body=f"{body} #{i}",
                    conversation_id=None,
                    idempotency_key=None,
                    request_hash=None,
                    request_id=f"req-{i}",
                    priority=priority,
                    send_at=send_at,
                    expires_at=expires_at,
                )
                ids.append(created.id)
            return ids

    return asyncio.run(go())


def recipients(n: int, start: int = 0) -> list[str]:
    """`n` distinct valid US numbers the simulator accepts."""
    return [f"+1415555{(start + i) % 10_000:04d}" for i in range(n)]


def db_now(db: psycopg.Connection[Any]) -> datetime:
    row = db.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def later(db: psycopg.Connection[Any], seconds: float = 1.0) -> datetime:
    """A clock a little after the database's now: everything enqueued so far is due."""
    return db_now(db) + timedelta(seconds=seconds)


@asynccontextmanager
async def running(
    settings: Settings,
    *,
    owner: str = "test-host:1:aaaa",
    rand: Callable[[], float] = lambda: 0.5,
    http: httpx.AsyncClient | None = None,
) -> AsyncIterator[Dispatcher]:
    """A Dispatcher with a real pool and the real provider clients of `settings`."""
    pool = await open_pool(
        settings.database_url, application_name="test-dispatcher", min_size=1, max_size=4
    )
    providers = await open_providers(settings)
    try:
        yield Dispatcher(
            settings=settings, pool=pool, providers=providers, owner=owner, http=http, rand=rand
        )
    finally:
        await close_providers(providers)
        await pool.close()


def statuses(db: psycopg.Connection[Any], ids: Sequence[UUID]) -> dict[UUID, tuple[Any, ...]]:
    """id -> (delivery_status, error_category, error_code, attempts, provider_sid)."""
    rows = db.execute(
        "SELECT id, delivery_status, error_category, error_code, attempts, provider_sid"
        " FROM sms_messages WHERE id = ANY(%s)",
        (list(ids),),
    ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def outbox_rows(db: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM sms_outbox ORDER BY id").fetchall()


def env_for(settings_env: Mapping[str, str], **extra: str) -> dict[str, str]:
    """A subprocess environment: ours (PATH, venv) plus the settings and overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV"))}
    env.update(settings_env)
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT)
    return env


def start_dispatcher(env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m dispatcher` as a child process, its log lines in `log_path`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "dispatcher"],
            cwd=ROOT,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_until(check: Callable[[], bool], *, seconds: float, what: str) -> None:
    """Poll `check` (a state probe, not a timing assumption) until true or fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stop_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Kill whatever a test left running (after its assertions or on failure)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait(timeout=10)


class AlertReceiver:
    """A real local HTTP server standing in for ALERT_WEBHOOK_URL; it checks every signature itself.

    It answers 401 to a bad or stale signature, `fail_first` times 500, and 200 otherwise.
    """

    def __init__(self, secret: str, *, fail_first: int = 0) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.accepted: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.judge(
                    raw,
                    self.headers.get("X-Signature-Timestamp", ""),
                    self.headers.get("X-Signature", ""),
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def judge(self, raw: bytes, timestamp: str, signature: str) -> int:
        # Computed here from the documented recipe, not with our own signing code.
        expected = (
            "sha256="
            + hmac.new(
                self.secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256
            ).hexdigest()
        )
        with self.lock:
            if not hmac.compare_digest(expected, signature):
                self.refused.append("bad signature")
                return 401
            if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
                self.refused.append("stale timestamp")
                return 401
            if self.fail_first > 0:
                self.fail_first -= 1
                self.refused.append("told to fail")
                return 500
            self.accepted.append(json.loads(raw))
            return 200

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def enqueue_bulk(db: psycopg.Connection[Any], n: int, *, from_number: str = TWILIO_FROM) -> None:
    """`n` pending messages (distinct recipients) and their outbox rows in one statement.

    The same rows shared.messages.enqueue writes, made at once so that several dispatchers meet a
    full queue together; then one wake-up.
    """
    ensure_sender(db, from_number)
    db.execute(
        """
        WITH conv AS (
            INSERT INTO sms_conversations (from_number, to_number)
            SELECT %(from)s, '+1415' || lpad(i::text, 7, '0') FROM generate_series(1, %(n)s) i
            RETURNING id, from_number, to_number
        ),
        msg AS (
            INSERT INTO sms_messages
                (conversation_id, from_number, to_number, body, provider, segments, encoding)
            SELECT id, from_number, to_number, 'bulk to ' || to_number, 'twilio', 1, 'GSM-7'
            FROM conv
            RETURNING id, provider
        )
        INSERT INTO sms_outbox (kind, message_id, provider, sender)
        SELECT 'send_sms', id, provider, %(from)s FROM msg
        """,
        {"from": from_number, "n": n},
    )
    db.execute("NOTIFY sms_outbox_wakeup")


def count(db: psycopg.Connection[Any], sql: str, *params: Any) -> int:
    row = db.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def log_actions(path: Path, action: str | None) -> list[dict[str, Any]]:
    """The JSON log lines of a dispatcher process with this `action` (None: every line with one)."""
    found = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("action") is not None and action in (None, record["action"]):
                found.append(record)
    return found
