"""POST /sms/send's group commit: concurrent requests in one transaction, each with its own answer.

A Gate (the committer's test hooks) holds the first group open before its commit until the
requests of the test are queued behind it, in the order the test sends them: they then form the
next group, deterministically, with no sleep.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import AsyncConnection

from api.app import create_app
from api.group_commit import Hooks
from shared import apikeys
from shared.apikeys import KeyLimits
from shared.config import Settings
from shared.messages import Pending
from tests.api_support import SENDER, TO, LiveServer, api_key_fixture, auth_fixture  # noqa: F401
from tests.webhook_support import offline_resolver

WAIT = 15.0  # seconds: the bound of every wait below (a failure, not a timing)


class Gate:
    """Holds the first group before its commit until `release()`; records every group's request
    ids at its commit; `crash` terminates the second group's server connection there."""

    def __init__(self, db_url: str, *, crash: bool = False) -> None:
        self.db_url = db_url
        self.crash = crash
        self.groups: list[list[str | None]] = []
        self.pids: list[int] = []  # each group's server process
        self._queued = 0
        self._changed = threading.Condition()
        self._held = threading.Event()
        self._released = threading.Event()

    def hooks(self) -> Hooks:
        return Hooks(queued=self._on_queued, before_commit=self._before_commit, writers=1)

    def _on_queued(self, count: int) -> None:
        if not self._held.is_set():
            return  # the first row, taken at once: counting starts behind it
        with self._changed:
            self._queued = count
            self._changed.notify_all()

    async def _before_commit(self, conn: AsyncConnection[Any], rows: Sequence[Pending]) -> None:
        self.groups.append([row.request_id for row in rows])
        self.pids.append(conn.info.backend_pid)
        if len(self.groups) == 1:
            self._held.set()
            assert await asyncio.to_thread(self._released.wait, WAIT), "never released"
        elif self.crash and len(self.groups) == 2:
            await asyncio.to_thread(self._terminate, conn.info.backend_pid)

    def _terminate(self, pid: int) -> None:
        with psycopg.connect(self.db_url, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s, %s)", (pid, int(WAIT * 1000)))

    def wait_held(self) -> None:
        assert self._held.wait(WAIT), "the first group never reached its commit"

    def wait_queued(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self._queued >= count, WAIT), self._queued

    def release(self) -> None:
        self._released.set()


class Sender:
    """POSTs in background threads, each answer kept under its request id."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: dict[str, httpx.Response] = {}
        self.threads: list[threading.Thread] = []

    def post(self, rid: str, payload: dict[str, Any], headers: dict[str, str]) -> None:
        def run() -> None:
            self.answers[rid] = httpx.post(
                self.url + "/sms/send",
                json=payload,
                headers={**headers, "X-Request-ID": rid},
                timeout=WAIT * 2,
            )

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def join(self) -> dict[str, httpx.Response]:
        for thread in self.threads:
            thread.join(WAIT * 2)
        return self.answers


@pytest.fixture(name="gate")
def gate_fixture(db_url: str) -> Gate:
    return Gate(db_url)


@pytest.fixture(name="live")
def live_fixture(settings: Settings, gate: Gate) -> Iterator[LiveServer]:
    app = create_app(settings, resolve=offline_resolver, group_commit=gate.hooks())
    with LiveServer(app) as server:
        yield server


def _group(
    live: LiveServer, gate: Gate, first: tuple[dict[str, Any], dict[str, str]], *rest: Any
) -> dict[str, httpx.Response]:
    """POST `first` (request id "first") and hold its group; POST each of `rest` (rid, payload,
    headers) in order once the one before is queued; then let them all go."""
    sender = Sender(live.url)
    sender.post("first", *first)
    try:
        gate.wait_held()
        for count, (rid, payload, headers) in enumerate(rest, start=1):
            sender.post(rid, payload, headers)
            gate.wait_queued(count)
    finally:
        gate.release()
    return sender.join()


def _split_rows(client: httpx.Client) -> float:
    """sms_group_commit_rows_sum{outcome="split"} on GET /metrics: rows of groups written alone."""
    text = client.get("/metrics").text
    found = re.search(r'^sms_group_commit_rows_sum\{outcome="split"\} (\S+)$', text, re.M)
    return 0.0 if found is None else float(found.group(1))


def _key(db: psycopg.Connection[Any], **limits: int) -> dict[str, str]:
    _, key = apikeys.create_key_sync(db, "group", limits=KeyLimits(**limits))
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _count(db: psycopg.Connection[Any], sql: str) -> int:
    row = db.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def test_one_group_is_one_transaction_and_each_request_keeps_its_answer(
    live: LiveServer, gate: Gate, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Rows queued together are written by one transaction (one xmin): twins of one key inside it
    are one message (a replay of the first, 409 for another body), an opted-out recipient is 422
    and a recipient over its key's limit is 429, each alone, while the others are written."""
    blocked = "+14152000003"
    db.execute(
        "INSERT INTO sms_suppressions (phone_number, sender_number, reason) VALUES (%s, %s, 'api')",
        (blocked, SENDER),
    )
    limited = _key(db, recipient_hourly_limit=1)
    twin = {**auth, "Idempotency-Key": "twin"}
    answers = _group(
        live,
        gate,
        ({"to": TO, "body": "first"}, auth),
        ("twin-1", {"to": "+14152000001", "body": "same"}, twin),
        ("twin-2", {"to": "+14152000001", "body": "same"}, twin),
        ("twin-3", {"to": "+14152000001", "body": "another"}, twin),
        ("plain", {"to": "+14152000002", "body": "plain"}, auth),
        ("opted-out", {"to": blocked, "body": "no"}, auth),
        ("limit-1", {"to": "+14152000004", "body": "one"}, limited),
        ("limit-2", {"to": "+14152000004", "body": "two"}, limited),
    )
    status = {rid: r.status_code for rid, r in answers.items()}
    assert status == {
        "first": 202, "twin-1": 202, "twin-2": 202, "twin-3": 409, "plain": 202,
        "opted-out": 422, "limit-1": 202, "limit-2": 429,
    }, {rid: r.text for rid, r in answers.items()}  # fmt: skip
    assert answers["twin-2"].json() == answers["twin-1"].json()
    assert answers["twin-2"].headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in answers["twin-1"].headers
    assert answers["twin-3"].json()["errors"][0]["code"] == "idempotency_key_reused"
    assert answers["opted-out"].json()["errors"][0]["code"] == "recipient_opted_out"
    assert answers["limit-2"].json()["errors"][0]["code"] == "recipient_rate_limited"
    # The second group went to its commit whole (the twins' first only) and wrote one xmin.
    assert gate.groups[1] == ["twin-1", "plain", "opted-out", "limit-1", "limit-2"]
    rows = db.execute(
        "SELECT request_id, xmin::text FROM sms_messages ORDER BY request_id"
    ).fetchall()
    assert [r[0] for r in rows] == ["first", "limit-1", "plain", "twin-1"]
    assert len({r[1] for r in rows if r[0] != "first"}) == 1
    assert _count(db, "SELECT count(*) FROM sms_outbox") == 4


def test_a_failing_row_splits_its_group_and_only_it_gets_the_error(
    live: LiveServer, gate: Gate, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A group with a conversation that is no longer its pair's, a key that the group before
    committed (one replay, one with another body) and a plain row: the group is rolled back and
    each row written alone, so each request gets its own answer (400 naming conversation_id, a
    replay, 409, 202) and the plain row is written."""
    row = db.execute(
        "INSERT INTO sms_conversations (from_number, to_number) VALUES (%s, %s) RETURNING id",
        (SENDER, "+14152000005"),
    ).fetchone()
    assert row is not None
    conversation = str(row[0])
    keyed = {**auth, "Idempotency-Key": "order-7"}
    with httpx.Client(base_url=live.url) as client:
        split_before = _split_rows(client)
    sender = Sender(live.url)
    sender.post("first", {"to": TO, "body": "first"}, keyed)
    try:
        gate.wait_held()
        # Past their checks (the key not yet committed, the conversation still the pair's) ...
        requests = [
            ("conversation", {"to": "+14152000005", "body": "c", "conversation_id": conversation}),
            ("replay", {"to": TO, "body": "first"}),
            ("reused", {"to": TO, "body": "changed"}),
        ]
        for count, (rid, payload) in enumerate(requests, start=1):
            sender.post(rid, payload, keyed if rid != "conversation" else auth)
            gate.wait_queued(count)
        sender.post("plain", {"to": "+14152000006", "body": "plain"}, auth)
        gate.wait_queued(4)
        # ... and then the thread goes (as retention would take it): the pair gets a new one.
        db.execute("DELETE FROM sms_conversations WHERE id = %s", (conversation,))
    finally:
        gate.release()
    answers = sender.join()
    status = {rid: r.status_code for rid, r in answers.items()}
    assert status == {
        "first": 202, "conversation": 400, "replay": 202, "reused": 409, "plain": 202
    }, {rid: r.text for rid, r in answers.items()}  # fmt: skip
    assert answers["conversation"].json()["errors"] == [
        {"field": "conversation_id", "code": "conversation_mismatch",
         "message": "another sender/recipient"}
    ]  # fmt: skip
    assert answers["replay"].json() == answers["first"].json()
    assert answers["replay"].headers["idempotent-replayed"] == "true"
    assert answers["reused"].json()["errors"][0]["code"] == "idempotency_key_reused"
    stored = db.execute("SELECT request_id FROM sms_messages ORDER BY request_id").fetchall()
    assert stored == [("first",), ("plain",)]
    with httpx.Client(base_url=live.url) as client:
        assert _split_rows(client) - split_before == 4  # one group of four, written alone


@pytest.fixture(name="crashing_gate")
def crashing_gate_fixture(db_url: str) -> Gate:
    return Gate(db_url, crash=True)


def test_a_connection_lost_before_the_commit_writes_none_and_answers_each_503(
    settings: Settings, crashing_gate: Gate, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """The server connection of a group terminated between its statements and its commit: none
    of its rows is written, none is written again alone, and each of its requests gets 503."""
    app = create_app(settings, resolve=offline_resolver, group_commit=crashing_gate.hooks())
    with LiveServer(app) as live:
        answers = _group(
            live,
            crashing_gate,
            ({"to": TO, "body": "first"}, auth),
            *[(f"lost-{i}", {"to": f"+1415200001{i}", "body": "x"}, auth) for i in range(3)],
        )
    assert crashing_gate.groups[1] == ["lost-0", "lost-1", "lost-2"]
    assert {rid: r.status_code for rid, r in answers.items()} == {
        "first": 202, "lost-0": 503, "lost-1": 503, "lost-2": 503
    }  # fmt: skip
    assert all(
        answers[f"lost-{i}"].json()["errors"][0]["code"] == "database_unavailable" for i in range(3)
    )
    assert db.execute("SELECT request_id FROM sms_messages").fetchall() == [("first",)]
    assert _count(db, "SELECT count(*) FROM sms_outbox") == 1


def test_a_writer_connection_that_died_idle_fails_no_request(
    live: LiveServer, gate: Gate, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """The writer's server connection terminated while it sat idle: its next group fails before
    any commit, so each row is written alone (202), not answered 503."""
    gate.release()  # nothing is held
    with httpx.Client(base_url=live.url, timeout=WAIT) as client:
        assert (
            client.post("/sms/send", json={"to": TO, "body": "a"}, headers=auth).status_code == 202
        )
        db.execute("SELECT pg_terminate_backend(%s, %s)", (gate.pids[0], int(WAIT * 1000)))
        split_before = _split_rows(client)
        r = client.post("/sms/send", json={"to": TO, "body": "b"}, headers=auth)
        assert r.status_code == 202, r.text
        assert _split_rows(client) - split_before == 1
    assert _count(db, "SELECT count(*) FROM sms_messages") == 2
