"""Per-key limits on a live server: 429 with Retry-After and nothing written, across both send
paths and across two API processes sharing a key; a key's countries narrow ALLOWED_COUNTRIES.

The minute and day windows are counted in an injected clock (create_app's `clock`), fixed in a
year no other test writes, so no test waits for a window or races a real minute boundary. The
recipient limit counts the database's messages, moved back in time by writing created_at.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import AsyncConnection
from starlette.applications import Starlette

from api.app import create_app
from api.connections import on_demand
from api.limits import Quota
from shared import apikeys, messages
from shared.apikeys import Caller, KeyLimits
from shared.config import Settings
from shared.db import open_pool
from shared.messages import NewMessage
from tests.api_support import SENDER, TO, LiveServer, errors, race

OTHER = "+14155552672"
CANADA = "+16135550123"
BRITAIN = "+447400123456"
# 30 s into a UTC minute, 12 h into a UTC day: Retry-After is 30 s for the minute and
# 11:59:30 (43,170 s) for the day.
FIXED = datetime(2031, 3, 4, 12, 0, 30, tzinfo=UTC)
DAY_LEFT = 12 * 3600 - 30


def _fixed() -> datetime:
    return FIXED


def _app(settings: Settings, clock: Callable[[], datetime | None] = _fixed) -> Starlette:
    return create_app(settings, clock=clock)


@pytest.fixture(name="live")
def live_fixture(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(_app(settings)) as server:
        yield server


@pytest.fixture(name="client")
def client_fixture(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=10) as client:
        yield client


def _key(db: psycopg.Connection[Any], **limits: int) -> tuple[int, dict[str, str]]:
    key_id, key = apikeys.create_key_sync(db, "limited", limits=KeyLimits(**limits))
    return key_id, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _messages(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM sms_messages").fetchone()
    assert row is not None
    return int(row[0])


def _refused(r: httpx.Response, code: str) -> int:
    """The Retry-After of a 429 with `code`, checked to be whole seconds >= 1."""
    assert r.status_code == 429, r.text
    assert {e["code"] for e in r.json()["errors"]} == {code}
    retry_after = r.headers["retry-after"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    return int(retry_after)


def _limited(key_id: int, code: str) -> float:
    """sms_api_key_limited_total of a key and code in this process (the servers run in it)."""
    labels = {"api_key_id": str(key_id), "code": code}
    return REGISTRY.get_sample_value("sms_api_key_limited_total", labels) or 0.0


def _send(client: httpx.Client, headers: dict[str, str], to: str = TO) -> httpx.Response:
    return client.post("/sms/send", json={"to": to, "body": "hi"}, headers=headers)


def _batch(client: httpx.Client, headers: dict[str, str], *to: str) -> httpx.Response:
    payload = {"messages": [{"to": n, "body": "hi"} for n in to]}
    return client.post("/sms/send/batch", json=payload, headers=headers)


def test_the_61st_request_in_a_minute_is_refused(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """A 60/min key gets 60 sends in a minute; the 61st is 429 rate_limited with Retry-After to
    the minute's end, and writes nothing."""
    key_id, headers = _key(db, rate_per_minute=60)
    before = _limited(key_id, "rate_limited")
    for _ in range(60):
        assert _send(client, headers).status_code == 202
    r = _send(client, headers)
    assert 29 <= _refused(r, "rate_limited") <= 30
    assert _messages(db) == 60
    assert db.execute(
        "SELECT kind, window_start, used FROM sms_api_key_usage WHERE api_key_id = %s", (key_id,)
    ).fetchall() == [("minute", FIXED.replace(second=0), 60)]
    # Refused again without asking the database (its refusal holds for the window).
    assert _refused(_send(client, headers), "rate_limited") >= 1
    assert _limited(key_id, "rate_limited") == before + 2
    series = f'sms_api_key_limited_total{{api_key_id="{key_id}",code="rate_limited"}}'
    assert series in client.get("/metrics").text


def test_a_key_without_limits_never_touches_the_usage_table(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """Sends and batches of an unlimited key write no sms_api_key_usage row."""
    _, headers = _key(db)
    assert _send(client, headers).status_code == 202
    assert _batch(client, headers, TO, OTHER).status_code == 202
    assert db.execute("SELECT count(*) FROM sms_api_key_usage").fetchone() == (0,)


def test_invalid_requests_spend_no_quota(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    """A 400 is answered before the limits are asked: it spends nothing."""
    _, headers = _key(db, rate_per_minute=1)
    assert _send(client, headers, to="nope").status_code == 400
    assert _send(client, headers).status_code == 202
    _refused(_send(client, headers), "rate_limited")


def _hammer(urls: list[str], headers: dict[str, str], total: int, threads: int) -> Counter[int]:
    """`total` sends spread over `urls` by `threads` threads released at once; status counts."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def work(index: int) -> None:
        with httpx.Client(base_url=urls[index % len(urls)], timeout=30) as client:
            start.wait()
            for _ in range(index, total, threads):
                status = _send(client, headers).status_code
                with lock:
                    statuses[status] += 1

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    return statuses


def test_two_processes_sharing_a_key_stay_within_its_limit(
    settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Two API processes (separate apps, pools and quota shares) hammered at once accept exactly
    60 requests of a 60/min key between them; the rest are 429 and wrote nothing."""
    _, headers = _key(db, rate_per_minute=60)
    with LiveServer(_app(settings)) as one, LiveServer(_app(settings)) as two:
        statuses = _hammer([one.url, two.url], headers, total=100, threads=8)
    assert statuses == Counter({202: 60, 429: 40})
    assert _messages(db) == 60


def test_two_processes_with_chunked_shares_never_exceed_the_limit(
    settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """With a limit of 300/min each process reserves 3 at a time: together they never pass 300,
    and refuse early by at most 2 x (3 - 1) (what each may hold unspent)."""
    key_id, headers = _key(db, rate_per_minute=300)
    with LiveServer(_app(settings)) as one, LiveServer(_app(settings)) as two:
        statuses = _hammer([one.url, two.url], headers, total=360, threads=8)
    assert 300 - 4 <= statuses[202] <= 300
    assert statuses[202] + statuses[429] == 360
    assert _messages(db) == statuses[202]
    used = db.execute(
        "SELECT used FROM sms_api_key_usage WHERE api_key_id = %s", (key_id,)
    ).fetchone()
    assert used is not None and statuses[202] <= used[0] <= 300


def test_daily_limit_counts_the_messages_of_a_batch(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """A 10/day key: a batch of 6 fits, then one of 5 does not (429 daily_limit_reached, nothing
    written), one of 4 does, and then a single send does not."""
    _, headers = _key(db, daily_message_limit=10)
    assert _batch(client, headers, *[TO] * 6).status_code == 202
    assert 1 <= _refused(_batch(client, headers, *[TO] * 5), "daily_limit_reached") <= DAY_LEFT
    assert _messages(db) == 6
    assert _batch(client, headers, *[TO] * 4).status_code == 202
    assert DAY_LEFT - 1 <= _refused(_send(client, headers), "daily_limit_reached") <= DAY_LEFT
    assert _messages(db) == 10


def test_a_batch_is_one_request_and_a_refused_request_spends_nothing(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """rate_per_minute counts a batch once; a request refused by the daily limit does not use
    up a request of the minute."""
    key_id, headers = _key(db, rate_per_minute=3, daily_message_limit=5)
    assert _batch(client, headers, TO, TO, TO).status_code == 202  # request 1, messages 3
    _refused(_batch(client, headers, TO, TO, TO), "daily_limit_reached")  # spends nothing
    _refused(_batch(client, headers, TO, TO, TO), "daily_limit_reached")
    assert _batch(client, headers, TO, TO).status_code == 202  # request 2, messages 5
    db.execute("UPDATE sms_api_keys SET daily_message_limit = 100 WHERE id = %s", (key_id,))
    assert _send(client, headers).status_code == 202  # request 3: the new limit applies at once
    _refused(_send(client, headers), "rate_limited")
    assert _messages(db) == 6


def test_recipient_limit_holds_across_send_and_batch(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """3 messages an hour to one recipient, counted over /sms/send and the batch together; over
    it 429 recipient_rate_limited names the field, with Retry-After until the oldest counted
    message leaves the hour; other recipients are not held back."""
    _, headers = _key(db, recipient_hourly_limit=3)
    assert _send(client, headers).status_code == 202
    assert _send(client, headers).status_code == 202
    r = _batch(client, headers, OTHER, TO, TO)
    assert 3590 <= _refused(r, "recipient_rate_limited") <= 3600
    assert [e.get("field") for e in r.json()["errors"]] == ["messages[1].to"]
    assert _messages(db) == 2
    assert _batch(client, headers, OTHER, TO).status_code == 202
    r = _send(client, headers)
    _refused(r, "recipient_rate_limited")
    assert [e.get("field") for e in r.json()["errors"]] == ["to"]
    assert _messages(db) == 4
    # The oldest leaves the hour in 10 s: that is the wait; once it left, one more fits.
    db.execute(
        "UPDATE sms_messages SET created_at = now() - interval '59 minutes 50 seconds'"
        " WHERE id = (SELECT id FROM sms_messages WHERE to_number = %s ORDER BY created_at"
        " LIMIT 1)",
        (TO,),
    )
    assert 1 <= _refused(_send(client, headers), "recipient_rate_limited") <= 10
    db.execute(
        "UPDATE sms_messages SET created_at = created_at - interval '15 seconds'"
        " WHERE created_at < now() - interval '59 minutes'"
    )
    assert _send(client, headers).status_code == 202
    _refused(_send(client, headers), "recipient_rate_limited")
    # Another key's messages to the same recipient are its own business.
    _, other_key = _key(db, recipient_hourly_limit=3)
    assert _send(client, other_key).status_code == 202


def test_a_batch_alone_over_the_recipient_limit_is_refused(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """More messages to one recipient in one batch than the limit: 429, an hour's Retry-After."""
    _, headers = _key(db, recipient_hourly_limit=2)
    r = _batch(client, headers, TO, TO, TO)
    assert _refused(r, "recipient_rate_limited") == 3600
    assert _messages(db) == 0


def test_concurrent_requests_never_pass_the_recipient_limit(
    live: LiveServer, db: psycopg.Connection[Any]
) -> None:
    """Eight sends to one recipient, forced to overlap inside their enqueue transactions: the
    per-(key, recipient) lock lets exactly the limit's 3 through."""
    _, headers = _key(db, recipient_hourly_limit=3)
    requests = [("/sms/send", {"to": TO, "body": f"m{i}"}, headers) for i in range(8)]
    statuses = Counter(r.status_code for r in race(db, live.url, requests))
    assert statuses == Counter({202: 3, 429: 5})
    assert _messages(db) == 3


def _round_trips(
    db_url: str, tmp_path: Path, work: Callable[[AsyncConnection[Any]], Awaitable[object]]
) -> tuple[int, object]:
    """Run `work` on a fresh autocommit connection: the round trips it made (the server's
    ReadyForQuery answers, from libpq's trace) and what it returned or raised."""
    trace = tmp_path / "trace.txt"

    async def run() -> object:
        async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
            with trace.open("w") as out:
                conn.pgconn.trace(out.fileno())
                try:
                    return await work(conn)
                except messages.SmsOutboxError as e:
                    return e
                finally:
                    conn.pgconn.untrace()

    outcome = asyncio.run(run())
    return trace.read_text().count("\tReadyForQuery"), outcome


def _advisory_locks(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
    assert row is not None
    return int(row[0])


def test_a_limited_enqueue_is_one_round_trip(
    db_url: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """With a recipient limit, the locks and the enqueue of a send or of a batch go out in one
    round trip and commit together; a refusal costs the same, names the first item to each
    recipient over the limit, writes nothing and leaves no lock held."""
    key_id, _ = _key(db, recipient_hourly_limit=2)

    def send(to: str) -> Callable[[AsyncConnection[Any]], Awaitable[object]]:
        return lambda conn: messages.enqueue(
            conn, api_key_id=key_id, to_number=to, from_number=SENDER, provider="twilio",
            body="hi", conversation_id=None, idempotency_key=None, request_hash=None,
            request_id="t", recipient_limit=2,
        )  # fmt: skip

    def batch(*to: str) -> Callable[[AsyncConnection[Any]], Awaitable[object]]:
        items = [NewMessage(n, SENDER, "twilio", "hi") for n in to]
        return lambda conn: messages.enqueue_many(
            conn, items, api_key_id=key_id, request_id="t", recipient_limit=2
        )

    trips, sent = _round_trips(db_url, tmp_path, send(TO))
    assert trips == 1 and isinstance(sent, messages.EnqueueResult)
    trips, created = _round_trips(db_url, tmp_path, batch(OTHER, TO))
    assert trips == 1 and isinstance(created, list) and len(created) == 2
    assert _messages(db) == 3
    trips, refused = _round_trips(db_url, tmp_path, batch(OTHER, CANADA, TO, OTHER))
    assert trips == 1 and isinstance(refused, messages.RecipientLimitReached)
    assert refused.ordinals == [0, 2]  # OTHER: 1 + 2 > 2 (first at 0); TO: 2 + 1 > 2; not CANADA
    trips, refused = _round_trips(db_url, tmp_path, batch(CANADA, TO))
    assert trips == 1 and isinstance(refused, messages.RecipientLimitReached)
    assert refused.ordinals == [1]
    assert _messages(db) == 3
    assert _advisory_locks(db) == 0


def test_a_limited_enqueue_keeps_its_other_answers(
    db_url: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Under a recipient limit, a repeated idempotency key (a unique violation inside the
    pipeline) still replays or conflicts, an opted-out recipient is still RecipientsOptedOut and a
    named conversation of another pair still ConversationMismatch (batch: its index); none of
    them writes anything or leaves a lock held."""
    key_id, _ = _key(db, recipient_hourly_limit=5)
    row = db.execute(
        "INSERT INTO sms_conversations (from_number, to_number) VALUES (%s, %s) RETURNING id",
        (SENDER, OTHER),
    ).fetchone()
    assert row is not None
    elsewhere: UUID = row[0]
    db.execute(
        "INSERT INTO sms_suppressions (phone_number, sender_number, reason) VALUES (%s, %s, 'api')",
        (CANADA, SENDER),
    )

    def send(
        to: str, key: str | None = None, digest: str | None = None, thread: UUID | None = None
    ) -> Callable[[AsyncConnection[Any]], Awaitable[object]]:
        return lambda conn: messages.enqueue(
            conn, api_key_id=key_id, to_number=to, from_number=SENDER, provider="twilio",
            body="hi", conversation_id=thread, idempotency_key=key, request_hash=digest,
            request_id="t", recipient_limit=5,
        )  # fmt: skip

    _, first = _round_trips(db_url, tmp_path, send(TO, "k1", "h1"))
    _, again = _round_trips(db_url, tmp_path, send(TO, "k1", "h1"))
    assert isinstance(first, messages.EnqueueResult) and isinstance(again, messages.EnqueueResult)
    assert (again.id, again.replayed) == (first.id, True)
    _, reused = _round_trips(db_url, tmp_path, send(TO, "k1", "h2"))
    assert isinstance(reused, messages.IdempotencyKeyReused)
    _, opted = _round_trips(db_url, tmp_path, send(CANADA))
    assert isinstance(opted, messages.RecipientsOptedOut) and opted.ordinals == [0]
    _, mismatch = _round_trips(db_url, tmp_path, send(TO, thread=elsewhere))
    assert type(mismatch) is messages.ConversationMismatch
    items = [
        NewMessage(TO, SENDER, "twilio", "a"),
        NewMessage(TO, SENDER, "twilio", "b", elsewhere),
    ]
    _, in_batch = _round_trips(
        db_url,
        tmp_path,
        lambda conn: messages.enqueue_many(
            conn, items, api_key_id=key_id, request_id="t", recipient_limit=5
        ),
    )
    assert isinstance(in_batch, messages.BatchConversationMismatch) and in_batch.index == 1
    assert _messages(db) == 1
    assert _advisory_locks(db) == 0


@pytest.fixture(name="us_and_canada")
def us_and_canada_fixture(settings: Settings) -> Iterator[httpx.Client]:
    """A live server whose ALLOWED_COUNTRIES is US,CA."""
    narrowed = replace(settings, allowed_countries=frozenset({"US", "CA"}))
    with LiveServer(_app(narrowed)) as server, httpx.Client(base_url=server.url) as client:
        yield client


def _countries_key(db: psycopg.Connection[Any], *regions: str) -> dict[str, str]:
    _, key = apikeys.create_key_sync(db, "regional", countries=frozenset(regions))
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def test_key_countries_narrow_allowed_countries(
    us_and_canada: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """A key limited to US may not text Canada, though ALLOWED_COUNTRIES does (send and batch)."""
    headers = _countries_key(db, "US")
    assert _send(us_and_canada, headers, to=TO).status_code == 202
    assert errors(_send(us_and_canada, headers, to=CANADA)) == {("to", "country_not_allowed")}
    r = _batch(us_and_canada, headers, TO, CANADA)
    assert errors(r) == {("messages[1].to", "country_not_allowed")}
    everyone = _countries_key(db, "US", "CA")
    assert _send(us_and_canada, everyone, to=CANADA).status_code == 202


def test_key_countries_never_widen_allowed_countries(
    us_and_canada: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """A key listing Britain still cannot text it when ALLOWED_COUNTRIES leaves it out; a key
    listing only countries outside it can text nowhere."""
    wider = _countries_key(db, "US", "GB")
    assert errors(_send(us_and_canada, wider, to=BRITAIN)) == {("to", "country_not_allowed")}
    assert _send(us_and_canada, wider, to=TO).status_code == 202
    outside = _countries_key(db, "GB")
    assert errors(_send(us_and_canada, outside, to=TO)) == {("to", "country_not_allowed")}
    assert errors(_send(us_and_canada, outside, to=BRITAIN)) == {("to", "country_not_allowed")}


def test_key_countries_apply_without_allowed_countries(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """With ALLOWED_COUNTRIES empty (any), a key's own list is the whole list."""
    headers = _countries_key(db, "CA")
    assert _send(client, headers, to=CANADA).status_code == 202
    assert errors(_send(client, headers, to=TO)) == {("to", "country_not_allowed")}


def test_a_refill_never_waits_for_a_connection_while_it_holds_the_key_s_lock(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """A request that needs a refill takes its connection before the key's refill lock: one
    that waited for a connection while holding the lock would wait on a request that holds the
    pool's only connection and waits for that lock (both then end on the pool's timeout)."""
    key_id, _ = _key(db, rate_per_minute=1000)
    caller = Caller(key_id, "sender", KeyLimits(rate_per_minute=1000), None)

    async def go() -> None:
        pool = await open_pool(
            db_url, application_name="test-refill", min_size=1, max_size=1, timeout_seconds=2
        )
        quota = Quota(_fixed)
        try:
            async with on_demand(pool) as holder:
                await holder()  # the pool's one connection, as a replay's read takes it

                asked = asyncio.Event()

                async def other() -> None:
                    async with on_demand(pool) as connect:

                        async def noted() -> AsyncConnection[Any]:
                            asked.set()  # it goes on into the pool's wait at once
                            return await connect()

                        with await quota.admit(noted, caller, messages=1):
                            pass

                waiting = asyncio.create_task(other())
                await asked.wait()
                with await quota.admit(holder, caller, messages=1):
                    pass
            await waiting
        finally:
            await pool.close()

    asyncio.run(asyncio.wait_for(go(), 15))
