"""Customer status webhooks end to end: the fan-out triggers of migration 0008, the webhook loop
(dispatcher/webhooks.py) and a real receiver on 127.0.0.1 that verifies every delivery with the
`standardwebhooks` library itself. The clock is injected; nothing sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from uuid import UUID

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from standardwebhooks import Webhook, WebhookVerificationError

from dispatcher import webhook_loop
from dispatcher.webhook_http import session as webhook_session
from dispatcher.webhook_loop import WebhookLoop
from dispatcher.webhooks import WebhookStats, WebhookWorker
from shared.apikeys import revoke_key
from shared.config import Settings
from shared.db import open_pool
from shared.inbound import receive
from shared.messages import enqueue
from shared.operations import cancel
from shared.providers.base import header
from shared.providers.inbound import InboundMessage
from shared.queries import q
from shared.status import apply_update
from shared.webhook_events import MESSAGE_DATA_FIELDS, envelope, message_data
from shared.webhook_signing import new_secret
from tests.dispatch_support import db_now, ensure_sender, later, running
from tests.fixtures_sim import SIM_TWILIO_NUMBER, CallbackListener, SimHandle
from tests.webhook_support import fan_out

TO = "+14155550123"
HOUR = timedelta(hours=1)


@dataclasses.dataclass
class Delivery:
    """One POST the receiver got, with the secrets (by index) its signature verified with."""

    path: str
    headers: dict[str, str]
    raw: bytes
    verified_with: list[int]

    @property
    def payload(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.raw)
        return loaded

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """A customer's app on 127.0.0.1: verifies each POST with `standardwebhooks.Webhook(secret)`
    for each secret of its path (401 when none verifies), then answers the next scripted status
    of that path (200 once the script is used up)."""

    def __init__(self) -> None:
        self.secrets: dict[str, list[str]] = {}
        self.script: dict[str, list[int]] = {}
        self.got: list[Delivery] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.take(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, raw
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def endpoint(self, path: str, *secrets: str, answers: Sequence[int] = ()) -> str:
        self.secrets[path] = list(secrets)
        self.script[path] = list(answers)
        return self.base + path

    def take(self, path: str, headers: dict[str, str], raw: bytes) -> int:
        verified = []
        for i, secret in enumerate(self.secrets.get(path, [])):
            try:
                Webhook(secret).verify(raw, headers)
            except WebhookVerificationError:
                continue
            verified.append(i)
        with self.lock:
            self.got.append(Delivery(path, headers, raw, verified))
            if not verified:
                return 401
            script = self.script.get(path, [])
            return script.pop(0) if script else 200

    def at(self, path: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.got if d.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def wh_settings(sim_settings: Settings) -> Settings:
    """The simulator's settings, with webhooks allowed to loopback (the receiver)."""
    return dataclasses.replace(sim_settings, webhook_allow_private_urls=True)


def api_key(db: psycopg.Connection[Any], name: str = "app") -> int:
    row = db.execute(
        "INSERT INTO sms_api_keys (name, key_sha256) VALUES (%s, md5(%s) || md5(%s)) RETURNING id",
        (name, name, name + "!"),
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_endpoint(
    db: psycopg.Connection[Any],
    key: int,
    url: str,
    secret: str,
    *,
    events: Sequence[str] = (),
    previous: tuple[str, datetime] | None = None,
) -> int:
    row = db.execute(
        "INSERT INTO sms_webhook_endpoints"
        " (api_key_id, url, secret, events, previous_secret, previous_secret_expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (key, url, secret, list(events), *(previous or (None, None))),
    ).fetchone()
    assert row is not None
    return int(row[0])


def send_as(db_url: str, key: int, to: str = TO, from_number: str = SIM_TWILIO_NUMBER) -> UUID:
    """Enqueue one message the way POST /sms/send does for API key `key`."""
    with psycopg.connect(db_url, autocommit=True) as db:
        ensure_sender(db, from_number)

    async def go() -> UUID:
        async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
            created = await enqueue(
                conn,
                api_key_id=key,
                to_number=to,
                from_number=from_number,
                provider="twilio",
                body="hello",
                conversation_id=None,
                idempotency_key=None,
                request_hash=None,
                request_id="req-webhook",
            )
            return created.id

    return asyncio.run(go())


def record(db: psycopg.Connection[Any], message_id: UUID, before: str, after: str) -> None:
    """A status change's event, as every guarded UPDATE records it; no delivery yet."""
    db.execute(
        "INSERT INTO sms_message_events (message_id, event_type, from_status, to_status)"
        " VALUES (%s, 'transition', %s, %s)",
        (message_id, before, after),
    )


def transition(db: psycopg.Connection[Any], message_id: UUID, before: str, after: str) -> None:
    """A status change's event, then the fan-out that the webhook loop runs once it committed."""
    record(db, message_id, before, after)
    fan_out(db)


@asynccontextmanager
async def webhook_worker(settings: Settings, **kwargs: Any) -> AsyncIterator[WebhookWorker]:
    pool = await open_pool(settings.database_url, application_name="test-webhooks", max_size=4)
    async with webhook_session(16, settings.webhook_timeout_seconds) as http:
        try:
            yield WebhookWorker(pool, settings, "test-host:2:bbbb", http=http, **kwargs)
        finally:
            await pool.close()


def deliver(settings: Settings, *clocks: datetime, **kwargs: Any) -> list[WebhookStats]:
    """One webhook-loop iteration at each injected clock, in order."""

    async def go() -> list[WebhookStats]:
        async with webhook_worker(settings, **kwargs) as worker:
            return [await worker.run_once(now=clock) for clock in clocks]

    return asyncio.run(go())


def rows(db: psycopg.Connection[Any], sql: str, *params: Any) -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()


async def eventually(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Poll a state probe (not a timing assumption) until true; fail after `seconds`."""
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def types(got: Sequence[Delivery]) -> list[str]:
    return [d.payload["type"] for d in got]


# -- the whole path: API enqueue, dispatcher, simulator, callbacks, webhooks ---------------------


def test_each_status_change_arrives_once_per_endpoint_signed_with_the_design_body(
    wh_settings: Settings,
    db_url: str,
    db: psycopg.Connection[Any],
    sim: SimHandle,
    callback_listener: CallbackListener,
    receiver: Receiver,
) -> None:
    """queued, sent, delivered each reach both endpoints of the sending key exactly once, each
    verified by standardwebhooks with that endpoint's secret, with the body of DESIGN 13."""
    key = api_key(db)
    secrets = {path: new_secret() for path in ("/a", "/b")}
    for path, secret in secrets.items():
        add_endpoint(db, key, receiver.endpoint(path, secret), secret)
    mid = send_as(db_url, key)

    async def scenario() -> None:
        async with running(wh_settings) as dispatcher:
            await dispatcher.run_once(now=later(db))
            callbacks = await asyncio.to_thread(callback_listener.wait_for, 2)
            for r in callbacks:
                query = dict(parse_qsl(urlsplit(r.path).query))
                update = dispatcher.providers["twilio"].parse_callback(
                    r.body, header(r.headers, "Content-Type"), query
                )
                async with await AsyncConnection.connect(db_url) as conn:
                    await apply_update(conn, update, settings=wh_settings)

    asyncio.run(scenario())
    (stats,) = deliver(wh_settings, later(db))
    assert stats.outcomes == {"delivered": 6}
    (msg,) = rows(db, "SELECT * FROM sms_messages WHERE id = %s", mid)
    assert msg["delivery_status"] == "delivered"
    for path in secrets:
        got = sorted(
            receiver.at(path),
            key=lambda d: ["queued", "sent", "delivered"].index(d.payload["data"]["status"]),
        )
        assert types(got) == ["message.queued", "message.sent", "message.delivered"]
        assert all(d.verified_with == [0] for d in got)
        assert len({d.webhook_id for d in got}) == 3
        assert all(d.headers["content-type"] == "application/json" for d in got)
        previous = [d.payload["data"]["previous_status"] for d in got]
        assert previous == ["pending", "queued", "sent"]
        for d in got:
            assert set(d.payload) == {"type", "timestamp", "data"}
            assert tuple(d.payload["data"]) == tuple(sorted(MESSAGE_DATA_FIELDS))
            data = d.payload["data"]
            assert data["id"] == str(mid) and data["to"] == TO
            assert data["from"] == SIM_TWILIO_NUMBER and data["direction"] == "outbound"
            assert data["segments"] == 1 and data["attempts"] == 1
    # The body is the message as the status change left it (DESIGN 13), stamped with the time
    # of the event that recorded the change.
    changes = rows(
        db,
        "SELECT from_status, to_status, occurred_at FROM sms_message_events"
        " WHERE message_id = %s AND event_type = 'transition'",
        mid,
    )
    (last,) = [c for c in changes if c["to_status"] == "delivered"]
    (delivered,) = [d for d in receiver.at("/a") if d.payload["type"] == "message.delivered"]
    assert delivered.payload == envelope(
        "message.delivered",
        last["occurred_at"],
        message_data(msg, status="delivered", previous_status="sent"),
    )
    assert rows(db, "SELECT state, count(*) FROM sms_webhook_deliveries GROUP BY state") == [
        {"state": "delivered", "count": 6}
    ]
    assert rows(db, "SELECT * FROM sms_outbox") == []


def test_the_sms_claim_never_takes_webhook_work(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """deliver_webhook rows are the webhook loop's alone: the dispatcher's claim leaves them."""
    key = api_key(db)
    secret = new_secret()
    add_endpoint(db, key, receiver.endpoint("/a", secret), secret)
    mid = send_as(db_url, key)
    db.execute("DELETE FROM sms_outbox WHERE message_id = %s", (mid,))
    transition(db, mid, "pending", "queued")

    async def claim() -> int:
        async with running(wh_settings) as dispatcher:
            return len(await dispatcher.claim(now=later(db)))

    assert asyncio.run(claim()) == 0
    (row,) = rows(db, "SELECT kind, state FROM sms_outbox")
    assert row == {"kind": "deliver_webhook", "state": "ready"}


# -- retries, 410, give up ---------------------------------------------------------------------


def test_a_receiver_failing_three_times_gets_the_same_webhook_id_and_bytes_on_the_fourth(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """500, 500, 500, then 200: four POSTs of one delivery, one webhook-id, the same body; the
    endpoint is healthy again after the success."""
    key = api_key(db)
    secret = new_secret()
    endpoint = add_endpoint(
        db, key, receiver.endpoint("/a", secret, answers=[500, 500, 500]), secret
    )
    mid = send_as(db_url, key)
    transition(db, mid, "pending", "queued")
    t0 = later(db)
    stats = deliver(wh_settings, t0, t0 + HOUR, t0 + 2 * HOUR, t0 + 3 * HOUR, t0 + 4 * HOUR)
    assert [s.outcomes for s in stats] == [
        {"retry": 1},
        {"retry": 1},
        {"retry": 1},
        {"delivered": 1},
        {},
    ]
    got = receiver.at("/a")
    assert len(got) == 4 and len({d.webhook_id for d in got}) == 1
    assert len({d.raw for d in got}) == 1
    (delivery,) = rows(db, "SELECT * FROM sms_webhook_deliveries")
    assert got[0].webhook_id == "msg_" + delivery["id"].hex
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == (
        "delivered",
        4,
        200,
    )
    (health,) = rows(db, "SELECT * FROM sms_webhook_health WHERE endpoint_id = %s", endpoint)
    assert health["failing_since"] is None and health["last_success_at"] == t0 + 3 * HOUR
    assert health["last_error"] == "answered HTTP 500" and health["pending"] == 0
    assert "secret" not in health


def test_410_disables_the_endpoint_at_once_and_drops_its_pending_deliveries(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """The first 410 fails its delivery, disables the endpoint with the reason, drops the other
    pending delivery (and its outbox row), and later events are not fanned out to it."""
    key = api_key(db)
    secret = new_secret()
    endpoint = add_endpoint(db, key, receiver.endpoint("/a", secret, answers=[410]), secret)
    mid = send_as(db_url, key)
    transition(db, mid, "pending", "queued")
    transition(db, mid, "queued", "sent")
    one_at_a_time = dataclasses.replace(wh_settings, webhook_concurrency=1)
    (stats,) = deliver(one_at_a_time, later(db))
    assert stats.outcomes == {"gone": 1} and stats.disabled == 1
    (ep,) = rows(db, "SELECT * FROM sms_webhook_endpoints WHERE id = %s", endpoint)
    assert not ep["enabled"] and "410" in ep["disabled_reason"]
    states = rows(
        db, "SELECT state, last_status, last_error FROM sms_webhook_deliveries ORDER BY created_at"
    )
    assert [s["state"] for s in states] == ["failed", "failed"]
    assert sorted(str(s["last_status"]) for s in states) == ["410", "None"]
    assert rows(db, "SELECT * FROM sms_outbox WHERE kind = 'deliver_webhook'") == []
    transition(db, mid, "sent", "delivered")
    assert len(rows(db, "SELECT id FROM sms_webhook_deliveries")) == 2
    assert len(receiver.at("/a")) == 1


def test_three_days_of_failure_fail_the_delivery_disable_the_endpoint_and_alert(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """A receiver that never answers 2xx: retried until WEBHOOK_RETRY_HOURS after the delivery
    was made, then failed; the endpoint, failing as long, is disabled and the operator alerted."""
    key = api_key(db)
    secret = new_secret()
    endpoint = add_endpoint(db, key, receiver.endpoint("/a", secret, answers=[503] * 10), secret)
    mid = send_as(db_url, key)
    transition(db, mid, "pending", "queued")
    (made,) = rows(db, "SELECT created_at FROM sms_webhook_deliveries")
    # First tried as it is made (the endpoint fails from then on), last at the window's end.
    t0 = made["created_at"]
    stats = deliver(wh_settings, t0, t0 + 71 * HOUR, t0 + 72 * HOUR)
    assert [s.outcomes for s in stats] == [{"retry": 1}, {"retry": 1}, {"failed": 1}]
    assert stats[-1].disabled == 1
    (delivery,) = rows(db, "SELECT state, attempts, last_error FROM sms_webhook_deliveries")
    assert delivery["state"] == "failed" and delivery["attempts"] == 3
    assert "gave up after 72 h" in delivery["last_error"]
    (ep,) = rows(db, "SELECT enabled, disabled_reason FROM sms_webhook_endpoints")
    assert not ep["enabled"] and ep["disabled_reason"].startswith("failing for 72 h")
    (alert,) = rows(db, "SELECT kind, message_id, payload FROM sms_alerts")
    assert alert["kind"] == "webhook_endpoint_disabled" and alert["message_id"] is None
    assert alert["payload"]["endpoint_id"] == endpoint and alert["payload"]["api_key_id"] == key
    assert "secret" not in json.dumps(alert["payload"]) and secret not in json.dumps(alert)


def test_a_failing_endpoint_is_parked_behind_one_probe(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """The first failed attempt parks the endpoint for an hour: its other deliveries wait out of
    the outbox (migration 0020: only the probe is there), and an event after it is not made into
    a delivery at all (0021: the endpoint falls behind the fan-out); meanwhile nothing else is
    POSTed, at the retry only the probe is, and a failing probe leaves the parked backlog as it
    is."""
    key = api_key(db)
    secret = new_secret()
    endpoint = add_endpoint(db, key, receiver.endpoint("/a", secret, answers=[503] * 5), secret)
    mid = send_as(db_url, key)
    transition(db, mid, "pending", "queued")
    transition(db, mid, "queued", "sent")
    transition(db, mid, "sent", "delivered")
    one = dataclasses.replace(wh_settings, webhook_concurrency=1)
    t0 = later(db)
    # rand 0: the first retry is 5 s later exactly; the others wait an hour.
    (first,) = deliver(one, t0, rand=lambda: 0.0)
    assert first.outcomes == {"retry": 1}
    hour = timedelta(seconds=3600)
    (ep,) = rows(db, "SELECT parked_until FROM sms_webhook_endpoints WHERE id = %s", endpoint)
    assert ep["parked_until"] == t0 + hour
    transition(db, mid, "delivered", "read")  # made while parked: born waiting

    def due() -> list[timedelta]:
        got = rows(
            db,
            "SELECT next_attempt_at, updated_at FROM sms_outbox"
            " WHERE kind = 'deliver_webhook' ORDER BY next_attempt_at",
        )
        return [d["next_attempt_at"] - t0 for d in got]

    def backlog() -> dict[str, Any]:
        (got,) = rows(
            db,
            "SELECT count(*) FILTER (WHERE d.state = 'pending') AS pending,"
            " bool_and(w.parked_backlog) AS marked, bool_and(w.behind_xact IS NOT NULL) AS behind"
            " FROM sms_webhook_deliveries d JOIN sms_webhook_endpoints w ON w.id = d.endpoint_id",
        )
        return got

    assert due() == [timedelta(seconds=5)]
    assert backlog() == {"pending": 3, "marked": True, "behind": True}
    stats = deliver(one, t0 + timedelta(seconds=1), t0 + timedelta(seconds=5), rand=lambda: 0.0)
    assert [s.outcomes for s in stats] == [{}, {"retry": 1}]
    assert len(receiver.at("/a")) == 2  # the probe, twice; the others never left
    # The probe's next retry (15 s) is answered long before the hour: nothing more is parked.
    assert due() == [timedelta(seconds=15)]
    assert backlog() == {"pending": 3, "marked": True, "behind": True}
    (ep,) = rows(db, "SELECT parked_until FROM sms_webhook_endpoints WHERE id = %s", endpoint)
    assert ep["parked_until"] == t0 + hour


def test_deliveries_in_flight_when_the_endpoint_parks_join_its_backlog(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """Of the deliveries in flight when an endpoint fails, the first failure's is the probe; the
    others' retries join the parked backlog (out of the outbox) instead of each retrying on its
    own, so a dead endpoint is probed once per backoff step, not once per delivery in flight."""
    key = api_key(db)
    secret = new_secret()
    endpoint = add_endpoint(db, key, receiver.endpoint("/a", secret, answers=[503] * 9), secret)
    mid = send_as(db_url, key)
    transition(db, mid, "pending", "queued")
    transition(db, mid, "queued", "sent")
    transition(db, mid, "sent", "delivered")
    t0 = later(db)

    async def go() -> tuple[WebhookStats, UUID]:
        async with webhook_worker(wh_settings, rand=lambda: 0.0) as worker:
            works = await worker.claim(3, now=t0)
            assert len(works) == 3
            stats = WebhookStats()
            for work in works:  # all three in flight; they fail one after the other
                await worker.deliver(work, stats, now=t0)
            return stats, works[0].delivery_id

    stats, first = asyncio.run(go())
    assert stats.outcomes == {"retry": 3}
    (ep,) = rows(
        db,
        "SELECT probe_delivery_id, parked_backlog FROM sms_webhook_endpoints WHERE id = %s",
        endpoint,
    )
    assert ep == {"probe_delivery_id": first, "parked_backlog": True}
    left = rows(
        db,
        "SELECT webhook_delivery_id, next_attempt_at FROM sms_outbox"
        " WHERE kind = 'deliver_webhook'",
    )
    assert left == [{"webhook_delivery_id": first, "next_attempt_at": t0 + timedelta(seconds=5)}]
    pending = rows(db, "SELECT attempts FROM sms_webhook_deliveries WHERE state = 'pending'")
    assert [p["attempts"] for p in pending] == [1, 1, 1]
    (again,) = deliver(wh_settings, t0 + timedelta(seconds=5), rand=lambda: 0.0)
    assert again.outcomes == {"retry": 1}
    assert len(receiver.at("/a")) == 4  # three in flight, then the probe alone


def test_a_parked_endpoint_falls_behind_and_catches_up_when_released(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """While an endpoint is parked the fan-out makes no delivery for it (migration 0021): it
    falls behind, and the key's other endpoint keeps getting its events. Once its probe
    succeeds it catches up by itself: every event it missed, once, and only its key's;
    then it follows the fan-out again."""
    key, other = api_key(db, "mine"), api_key(db, "theirs")
    sa, sb, sc = new_secret(), new_secret(), new_secret()
    a = add_endpoint(db, key, receiver.endpoint("/a", sa, answers=[503]), sa)
    add_endpoint(db, key, receiver.endpoint("/b", sb), sb)
    add_endpoint(db, other, receiver.endpoint("/c", sc), sc)
    mine = send_as(db_url, key)
    transition(db, mine, "pending", "queued")
    t0 = later(db)
    (first,) = deliver(wh_settings, t0, rand=lambda: 0.0)
    assert first.outcomes == {"retry": 1, "delivered": 1}  # /a failed and is parked
    transition(db, mine, "queued", "sent")
    theirs = send_as(db_url, other)
    transition(db, theirs, "pending", "queued")
    transition(db, mine, "sent", "delivered")

    def endpoint_a() -> dict[str, Any]:
        (got,) = rows(
            db,
            "SELECT w.behind_xact IS NOT NULL AS behind, h.behind_seconds IS NOT NULL AS seen,"
            " (SELECT count(*) FROM sms_webhook_deliveries d WHERE d.endpoint_id = w.id)"
            " AS deliveries"
            " FROM sms_webhook_endpoints w JOIN sms_webhook_health h ON h.endpoint_id = w.id"
            " WHERE w.id = %s",
            a,
        )
        return got

    assert endpoint_a() == {"behind": True, "seen": True, "deliveries": 1}  # the probe alone
    at = t0 + timedelta(seconds=6)
    stats = deliver(wh_settings, at, at, at, rand=lambda: 0.0)
    assert [s.outcomes for s in stats] == [
        {"delivered": 4},  # /a's probe, and /b's and /c's new events
        {"delivered": 2},  # /a caught up: its key's two events it missed
        {},
    ]
    # What one iteration delivers goes out side by side, in any order.
    got_a, got_b = types(receiver.at("/a")), types(receiver.at("/b"))
    assert got_a[:2] == ["message.queued", "message.queued"]  # failed, then the probe
    assert sorted(got_a[2:]) == ["message.delivered", "message.sent"]
    assert got_b[0] == "message.queued"
    assert sorted(got_b[1:]) == ["message.delivered", "message.sent"]
    assert types(receiver.at("/c")) == ["message.queued"]
    assert endpoint_a() == {"behind": False, "seen": False, "deliveries": 3}
    transition(db, mine, "delivered", "read")  # following the fan-out again
    (last,) = deliver(wh_settings, at)
    assert last.outcomes == {"delivered": 2}
    assert types(receiver.at("/a"))[-1] == "message.read"


def test_events_an_endpoint_missed_while_behind_are_failed_when_it_is_disabled(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """Disabled while behind the fan-out (here: its key revoked), an endpoint gets the events it
    missed as failed deliveries, as its pending ones are dropped, so that after it is enabled
    again `replay --since` sends them all."""
    key = api_key(db)
    secret = new_secret()
    endpoint = add_endpoint(db, key, receiver.endpoint("/a", secret, answers=[503]), secret)
    mid = send_as(db_url, key)
    transition(db, mid, "pending", "queued")
    t0 = later(db)
    (first,) = deliver(wh_settings, t0, rand=lambda: 0.0)
    assert first.outcomes == {"retry": 1}
    transition(db, mid, "queued", "sent")  # /a falls behind here
    record(db, mid, "sent", "delivered")
    # With no endpoint following the fan-out, its cursor moves on at most once a second.
    db.execute("UPDATE sms_webhook_fanout SET updated_at = now() - interval '1 minute'")
    fan_out(db)

    async def revoke() -> bool:
        async with await AsyncConnection.connect(db_url) as conn:
            return await revoke_key(conn, key)

    assert asyncio.run(revoke())
    got = rows(
        db,
        "SELECT event_type, state, last_error FROM sms_webhook_deliveries ORDER BY occurred_at",
    )
    assert [(d["event_type"], d["state"]) for d in got] == [
        ("message.queued", "failed"),
        ("message.sent", "failed"),
        ("message.delivered", "failed"),
    ]
    assert all(d["last_error"] == "endpoint disabled: API key revoked" for d in got)
    (ep,) = rows(db, "SELECT behind_xact FROM sms_webhook_endpoints WHERE id = %s", endpoint)
    assert ep["behind_xact"] is None
    db.execute("UPDATE sms_api_keys SET revoked_at = NULL WHERE id = %s", (key,))
    db.execute(q("webhook_endpoints_enable"), {"id": endpoint, "owner": None})
    replayed = db.execute(
        q("webhook_deliveries_replay"),
        {"endpoint_id": endpoint, "since": t0 - HOUR, "delivered": False},
    ).fetchall()
    assert len(replayed) == 3
    (again,) = deliver(wh_settings, t0 + timedelta(seconds=6))
    assert again.outcomes == {"delivered": 3}
    first_try, *replays = types(receiver.at("/a"))  # the replays go out side by side
    assert first_try == "message.queued"
    assert sorted(replays) == ["message.delivered", "message.queued", "message.sent"]


def test_a_parked_backlog_comes_back_by_itself_when_the_parking_ends(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """A probe that is never answered (its dispatcher gone) does not strand the deliveries kept
    out of the outbox: once parked_until has passed they are queued again, each once, and sent."""
    key = api_key(db)
    secret = new_secret()
    endpoint = add_endpoint(db, key, receiver.endpoint("/a", secret, answers=[503]), secret)
    mid = send_as(db_url, key)
    transition(db, mid, "pending", "queued")
    transition(db, mid, "queued", "sent")
    one = dataclasses.replace(wh_settings, webhook_concurrency=1)
    t0 = later(db)
    (first,) = deliver(one, t0, rand=lambda: 0.0)
    assert first.outcomes == {"retry": 1}
    # The probe is lost: its outbox row goes (as if given up), the endpoint stays parked.
    db.execute("DELETE FROM sms_outbox WHERE kind = 'deliver_webhook'")
    (still,) = deliver(one, t0 + timedelta(minutes=59))
    assert still.claimed == 0
    woke = t0 + timedelta(seconds=3601)
    stats = deliver(wh_settings, woke, woke)
    assert [s.outcomes for s in stats] == [{"delivered": 2}, {}]
    first_try, *woken = types(receiver.at("/a"))  # the two woken go out side by side
    assert first_try == "message.queued"
    assert sorted(woken) == ["message.queued", "message.sent"]
    (ep,) = rows(db, "SELECT parked_backlog FROM sms_webhook_endpoints WHERE id = %s", endpoint)
    assert ep["parked_backlog"] is False


def test_enabling_an_endpoint_again_unparks_it(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """An endpoint disabled while parked (its last probe set parked_until an hour ahead) and
    enabled again gets its next event at once, not when the old parking would have ended."""
    key = api_key(db)
    secret = new_secret()
    endpoint = add_endpoint(db, key, receiver.endpoint("/a", secret), secret)
    db.execute(
        "UPDATE sms_webhook_endpoints SET enabled = false, disabled_reason = 'test',"
        " disabled_at = now(), parked_until = now() + interval '1 hour' WHERE id = %s",
        (endpoint,),
    )
    db.execute(q("webhook_endpoints_enable"), {"id": endpoint, "owner": None})
    mid = send_as(db_url, key)
    transition(db, mid, "pending", "queued")
    (row,) = rows(
        db,
        "SELECT o.next_attempt_at <= now() AS due, w.parked_until FROM sms_outbox o"
        " JOIN sms_webhook_deliveries d ON d.id = o.webhook_delivery_id"
        " JOIN sms_webhook_endpoints w ON w.id = d.endpoint_id",
    )
    assert row["due"] and row["parked_until"] is None


def test_a_probe_that_succeeds_releases_the_parked_deliveries(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """The endpoint answers again: the probe's success makes every parked delivery due at once
    (not at parked_until), and the endpoint is no longer parked."""
    key = api_key(db)
    secret = new_secret()
    endpoint = add_endpoint(db, key, receiver.endpoint("/a", secret, answers=[503]), secret)
    mid = send_as(db_url, key)
    transition(db, mid, "pending", "queued")
    transition(db, mid, "queued", "sent")
    transition(db, mid, "sent", "delivered")
    one = dataclasses.replace(wh_settings, webhook_concurrency=1)
    t0 = later(db)
    at = t0 + timedelta(seconds=6)  # after the probe's retry (5 s), long before parked_until
    stats = deliver(one, t0, at, at, at, at, rand=lambda: 0.0)
    assert [s.outcomes for s in stats] == [
        {"retry": 1},
        {"delivered": 1},
        {"delivered": 1},
        {"delivered": 1},
        {},
    ]
    assert types(receiver.at("/a")) == [
        "message.queued",
        "message.queued",
        "message.sent",
        "message.delivered",
    ]
    (ep,) = rows(db, "SELECT parked_until FROM sms_webhook_endpoints WHERE id = %s", endpoint)
    assert ep["parked_until"] is None


# -- who gets what ---------------------------------------------------------------------------


def test_a_messages_events_never_reach_another_keys_endpoint(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """Deliveries go to the endpoints of the key that created the message, and no other."""
    mine, theirs = api_key(db, "mine"), api_key(db, "theirs")
    s1, s2 = new_secret(), new_secret()
    add_endpoint(db, mine, receiver.endpoint("/mine", s1), s1)
    add_endpoint(db, theirs, receiver.endpoint("/theirs", s2), s2)
    mid = send_as(db_url, mine)
    transition(db, mid, "pending", "queued")
    deliver(wh_settings, later(db))
    assert types(receiver.at("/mine")) == ["message.queued"]
    assert receiver.at("/theirs") == []


def test_a_rotated_secret_signs_beside_the_new_one_until_the_overlap_ends(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """During the overlap a delivery verifies with the old and with the new secret; after it,
    with the new one only."""
    key = api_key(db)
    old, new = new_secret(), new_secret()
    url = receiver.endpoint("/a", old, new)
    endpoint = add_endpoint(db, key, url, new, previous=(old, db_now(db) + 24 * HOUR))
    mid = send_as(db_url, key)
    transition(db, mid, "pending", "queued")
    deliver(wh_settings, later(db))
    (during,) = receiver.at("/a")
    assert during.verified_with == [0, 1]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    db.execute(
        "UPDATE sms_webhook_endpoints SET previous_secret_expires_at = now() - interval '1 s'"
        " WHERE id = %s",
        (endpoint,),
    )
    transition(db, mid, "queued", "sent")
    deliver(wh_settings, later(db))
    after = receiver.at("/a")[1]
    assert after.verified_with == [1]


def test_an_endpoint_gets_only_the_event_types_it_chose(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """events = ['message.failed'] gets the failure only; an empty list gets every event."""
    key = api_key(db)
    s1, s2 = new_secret(), new_secret()
    add_endpoint(db, key, receiver.endpoint("/failed", s1), s1, events=["message.failed"])
    add_endpoint(db, key, receiver.endpoint("/all", s2), s2)
    mid = send_as(db_url, key)
    transition(db, mid, "pending", "queued")
    transition(db, mid, "queued", "failed")
    deliver(wh_settings, later(db))
    assert types(receiver.at("/failed")) == ["message.failed"]
    assert sorted(types(receiver.at("/all"))) == ["message.failed", "message.queued"]


def test_a_cancel_is_one_message_canceled_event(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """messages_cancel records pending -> canceled as a 'canceled' event: one webhook, with
    previous_status pending; `sending` and `created` raise none."""
    key = api_key(db)
    secret = new_secret()
    add_endpoint(db, key, receiver.endpoint("/a", secret), secret)
    mid = send_as(db_url, key)

    async def go() -> None:
        async with await AsyncConnection.connect(db_url) as conn:
            await cancel(conn, mid, actor="test")

    asyncio.run(go())
    deliver(wh_settings, later(db))
    (only,) = receiver.at("/a")
    assert only.payload["type"] == "message.canceled"
    assert only.payload["data"]["previous_status"] == "pending"


def test_replies_and_opt_outs_go_to_the_key_that_sent_last_to_the_recipient(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """An inbound STOP raises message.received and recipient.opted_out, START opted_in, to the
    key whose message was the latest to that recipient from that number; an every-sender
    suppression goes to the key that sent last from any number."""
    first, last = api_key(db, "first"), api_key(db, "last")
    s1, s2 = new_secret(), new_secret()
    add_endpoint(db, first, receiver.endpoint("/first", s1), s1)
    add_endpoint(db, last, receiver.endpoint("/last", s2), s2)
    send_as(db_url, first)
    send_as(db_url, last)

    async def text(body: str, sid: str) -> None:
        async with await AsyncConnection.connect(db_url) as conn:
            inbound = InboundMessage("twilio", sid, TO, SIM_TWILIO_NUMBER, body)
            await receive(conn, inbound, request_id=None)

    asyncio.run(text("STOP", "SM" + "1" * 32))
    asyncio.run(text("start", "SM" + "2" * 32))
    db.execute(
        "INSERT INTO sms_suppressions (phone_number, sender_number, reason)"
        " VALUES (%s, NULL, 'operator')",
        (TO,),
    )
    deliver(wh_settings, later(db), later(db, 2))
    assert receiver.at("/first") == []
    got = receiver.at("/last")
    assert sorted(types(got)) == [
        "message.received",
        "message.received",
        "recipient.opted_in",
        "recipient.opted_out",
        "recipient.opted_out",
    ]
    opt = [d.payload["data"] for d in got if d.payload["type"].startswith("recipient.")]
    assert {"phone_number": TO, "sender_number": SIM_TWILIO_NUMBER, "reason": "stop_keyword"} in opt
    assert {"phone_number": TO, "sender_number": None, "reason": "operator"} in opt
    received = [d.payload["data"] for d in got if d.payload["type"] == "message.received"]
    assert {r["direction"] for r in received} == {"inbound"}
    assert {r["status"] for r in received} == {"received"}


def test_a_private_address_is_refused_at_delivery_and_retried_without_traffic(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str
) -> None:
    """Without WEBHOOK_ALLOW_PRIVATE_URLS, a host that resolves to 10.0.0.0/8 is not contacted:
    the attempt fails with the reason and is retried (DNS answers change)."""
    key = api_key(db)
    secret = new_secret()
    add_endpoint(db, key, "https://hooks.example.com/in", secret)
    mid = send_as(db_url, key)
    transition(db, mid, "pending", "queued")
    asked: list[str] = []

    async def stub(host: str, port: int) -> list[str]:
        asked.append(f"{host}:{port}")
        return ["10.0.0.5"]

    strict = dataclasses.replace(wh_settings, webhook_allow_private_urls=False)
    (stats,) = deliver(strict, later(db), resolve=stub)
    assert stats.outcomes == {"retry": 1} and asked == ["hooks.example.com:443"]
    (delivery,) = rows(db, "SELECT state, last_error FROM sms_webhook_deliveries")
    assert delivery["state"] == "pending"
    assert delivery["last_error"] == (
        "address refused: hooks.example.com resolves to a private address (10.0.0.5)"
    )


def test_without_endpoints_no_delivery_is_made(db: psycopg.Connection[Any], db_url: str) -> None:
    """No endpoint: status changes write no delivery and no outbox work."""
    key = api_key(db)
    mid = send_as(db_url, key)
    transition(db, mid, "pending", "queued")
    assert rows(db, "SELECT * FROM sms_webhook_deliveries") == []
    assert [r["kind"] for r in rows(db, "SELECT kind FROM sms_outbox")] == ["send_sms"]


# -- the loop in the dispatcher process ----------------------------------------------------------


def test_the_loop_delivers_and_stops_when_told(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str, receiver: Receiver
) -> None:
    """WebhookLoop.run fans out a committed event and delivers it by itself, and returns once
    stopped."""
    key = api_key(db)
    secret = new_secret()
    add_endpoint(db, key, receiver.endpoint("/a", secret), secret)
    mid = send_as(db_url, key)
    record(db, mid, "pending", "queued")

    async def go() -> None:
        async with webhook_worker(wh_settings) as worker:
            stop = asyncio.Event()
            task = asyncio.create_task(WebhookLoop(worker).run(stop))
            await eventually(lambda: bool(receiver.at("/a")), "the delivery")
            stop.set()
            await asyncio.wait_for(task, 10)

    asyncio.run(go())
    assert types(receiver.at("/a")) == ["message.queued"]
    (delivery,) = rows(db, "SELECT state FROM sms_webhook_deliveries")
    assert delivery["state"] == "delivered"


def test_a_nudge_claims_at_once_instead_of_at_the_next_poll(
    wh_settings: Settings,
    db: psycopg.Connection[Any],
    db_url: str,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SMS loop nudges the webhook loop when a batch ends: an idle loop fans the batch's events
    out and claims then, without waiting for its poll (an hour here, so only the nudge can
    deliver in time)."""
    monkeypatch.setattr(webhook_loop, "POLL_SECONDS", 3600.0)
    key = api_key(db)
    secret = new_secret()
    add_endpoint(db, key, receiver.endpoint("/a", secret), secret)
    mid = send_as(db_url, key)

    async def go() -> None:
        async with webhook_worker(wh_settings) as worker:
            claims = 0
            claim = worker.claim

            async def counted(limit: int, *, now: datetime | None = None) -> list[Any]:
                nonlocal claims
                got = await claim(limit, now=now)
                claims += 1
                return got

            worker.claim = counted  # type: ignore[method-assign]
            stop = asyncio.Event()
            loop = WebhookLoop(worker)
            task = asyncio.create_task(loop.run(stop))
            await eventually(lambda: claims == 1, "the first (empty) claim")
            record(db, mid, "pending", "queued")
            loop.nudge()
            await eventually(lambda: bool(receiver.at("/a")), "the delivery")
            stop.set()
            await asyncio.wait_for(task, 10)

    asyncio.run(go())
    assert types(receiver.at("/a")) == ["message.queued"]


def test_a_nudge_right_after_a_claim_waits_out_the_nudge_interval(
    wh_settings: Settings,
    db: psycopg.Connection[Any],
    db_url: str,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nudges come after every SMS batch: one that follows an empty claim closely claims only
    once `nudge_every` has passed since it (1 s here; the poll is an hour), then delivers."""
    monkeypatch.setattr(webhook_loop, "POLL_SECONDS", 3600.0)
    key = api_key(db)
    secret = new_secret()
    add_endpoint(db, key, receiver.endpoint("/a", secret), secret)
    mid = send_as(db_url, key)
    started: list[float] = []

    async def go() -> None:
        async with webhook_worker(wh_settings) as worker:
            claim = worker.claim

            async def timed(limit: int, *, now: datetime | None = None) -> list[Any]:
                started.append(asyncio.get_running_loop().time())
                return await claim(limit, now=now)

            worker.claim = timed  # type: ignore[method-assign]
            stop = asyncio.Event()
            loop = WebhookLoop(worker, nudge_every=1.0)
            task = asyncio.create_task(loop.run(stop))
            await eventually(lambda: len(started) == 1, "the first (empty) claim")
            record(db, mid, "pending", "queued")
            loop.nudge()
            await eventually(lambda: bool(receiver.at("/a")), "the delivery")
            stop.set()
            await asyncio.wait_for(task, 10)

    asyncio.run(go())
    assert types(receiver.at("/a")) == ["message.queued"]
    assert len(started) == 2
    assert started[1] - started[0] >= 1.0


def test_a_delivery_in_flight_at_stop_is_handed_back_with_its_attempt(
    wh_settings: Settings, db: psycopg.Connection[Any], db_url: str
) -> None:
    """An endpoint that never answers: at stop, past the grace period, the POST is cut off and
    the row goes back to ready, due at once, its attempt returned (it will be sent again)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (backlog) and never answers
    try:
        key = api_key(db)
        secret = new_secret()
        add_endpoint(db, key, f"http://127.0.0.1:{silent.getsockname()[1]}/", secret)
        mid = send_as(db_url, key)
        transition(db, mid, "pending", "queued")
        quick = dataclasses.replace(wh_settings, dispatch_grace_seconds=0.5)

        async def go() -> None:
            async with webhook_worker(quick) as worker:
                stop = asyncio.Event()
                task = asyncio.create_task(WebhookLoop(worker).run(stop))
                await eventually(lambda: bool(worker.held), "a delivery in flight")
                stop.set()
                await asyncio.wait_for(task, 10)

        asyncio.run(go())
    finally:
        silent.close()
    (row,) = rows(
        db, "SELECT state, attempts, lease_owner FROM sms_outbox WHERE kind = 'deliver_webhook'"
    )
    assert row == {"state": "ready", "attempts": 0, "lease_owner": None}
