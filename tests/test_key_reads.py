"""The send paths' grouped key reads (api/key_reads.py): the keys of concurrent requests in one
statement, each request with its own answer, and never an answer read before the request asked.

The first read is held in a hook (before or after its statement) until the test's other requests
are queued behind it, so they form the next read, deterministically, with no sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from api.app import create_app
from api.key_reads import Hooks, KeyReads
from shared import apikeys
from shared.apikeys import KeyLimits, KeyRead
from shared.config import Settings
from shared.db import DatabaseUnavailable, open_pool
from shared.senders import Sender
from tests.api_support import TO, LiveServer
from tests.webhook_support import offline_resolver

WAIT = 15.0  # seconds: the bound of every wait below (a failure, not a timing)
DEFAULT = Sender("+15005550006", "twilio", True, True)


class Held:
    """Holds the first read at its hook until the test's requests are queued; records each read's
    key hashes."""

    def __init__(self, queued: int) -> None:
        self.reads: list[list[str]] = []
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.full = asyncio.Event()
        self._queued = queued

    async def hold(self, hashes: list[str]) -> None:
        self.reads.append(hashes)
        if len(self.reads) == 1:
            self.held.set()
            await asyncio.wait_for(self.release.wait(), WAIT)

    async def record(self, hashes: list[str]) -> None:
        self.reads.append(hashes)

    def on_queued(self, count: int) -> None:
        if self.held.is_set() and count >= self._queued:
            self.full.set()


@pytest.fixture(name="keys")
def keys_fixture(db: psycopg.Connection[Any]) -> dict[str, tuple[int, str]]:
    """Two active keys, one revoked, and the default sender."""
    db.execute(
        "INSERT INTO sms_senders (phone_number, provider, is_default) VALUES (%s, 'twilio', true)",
        (DEFAULT.phone_number,),
    )
    made = {name: apikeys.create_key_sync(db, name) for name in ("a", "b", "revoked")}
    db.execute("UPDATE sms_api_keys SET revoked_at = now() WHERE name = 'revoked'")
    return made


Body = Callable[[KeyReads, Held, psycopg.Connection[Any]], Awaitable[Any]]


def _run(db_url: str, db: psycopg.Connection[Any], hooks: Callable[[Held], Hooks], body: Body,
         queued: int = 0) -> tuple[Any, Held]:  # fmt: skip
    async def go() -> Any:
        held = Held(queued)
        pool = await open_pool(db_url, application_name="test-key-reads", min_size=1)
        reads = KeyReads(pool, hooks=hooks(held))
        reads.start()
        try:
            return await asyncio.wait_for(body(reads, held, db), WAIT), held
        finally:
            await reads.stop()
            await pool.close()

    result: tuple[Any, Held] = asyncio.run(go())
    return result


def _ids(found: list[KeyRead]) -> list[tuple[int | None, Sender | None]]:
    return [(None if caller is None else caller.id, sender) for caller, sender in found]


def test_keys_asked_during_a_read_are_read_together_each_with_its_own_answer(
    db_url: str, db: psycopg.Connection[Any], keys: dict[str, tuple[int, str]]
) -> None:
    """Five requests queued behind a read are read by ONE statement (their four distinct hashes,
    in order); each gets its own key, None for a revoked or unknown one, the default sender."""
    (a_id, a), (b_id, b), (_, revoked) = keys["a"], keys["b"], keys["revoked"]
    later = [a, b, revoked, "no-such-key", b]

    async def body(reads: KeyReads, held: Held, _: psycopg.Connection[Any]) -> Any:
        first = asyncio.create_task(reads.read(a))
        await held.held.wait()
        rest = [asyncio.create_task(reads.read(k)) for k in later]
        await held.full.wait()
        held.release.set()
        return await asyncio.gather(first, *rest)

    found, held = _run(db_url, db, lambda h: Hooks(h.on_queued, before_read=h.hold, readers=1),
                       body, queued=len(later))  # fmt: skip
    assert _ids(found) == [
        (a_id, DEFAULT), (a_id, DEFAULT), (b_id, DEFAULT), (None, DEFAULT), (None, DEFAULT),
        (b_id, DEFAULT),
    ]  # fmt: skip
    hashes = [apikeys.hash_key(k) for k in (a, b, revoked, "no-such-key")]
    assert held.reads == [[hashes[0]], hashes]


def test_a_request_never_takes_the_answer_of_a_read_under_way(
    db_url: str, db: psycopg.Connection[Any], keys: dict[str, tuple[int, str]]
) -> None:
    """A key revoked while a read of it runs (its statement done, its answers not yet given) is
    refused to a request that asked after the revocation: that request waits for a read of its
    own, which sees the revocation."""
    a_id, a = keys["a"]

    async def body(reads: KeyReads, held: Held, conn: psycopg.Connection[Any]) -> Any:
        first = asyncio.create_task(reads.read(a))
        await held.held.wait()
        conn.execute("UPDATE sms_api_keys SET revoked_at = now() WHERE id = %s", (a_id,))
        after = asyncio.create_task(reads.read(a))
        await held.full.wait()
        held.release.set()
        return await asyncio.gather(first, after)

    found, held = _run(db_url, db, lambda h: Hooks(h.on_queued, after_read=h.hold, readers=1),
                       body, queued=1)  # fmt: skip
    assert _ids(found) == [(a_id, DEFAULT), (None, DEFAULT)]
    assert len(held.reads) == 2


def test_a_failed_read_lets_each_request_read_alone(
    db_url: str, db: psycopg.Connection[Any], keys: dict[str, tuple[int, str]]
) -> None:
    """A grouped read that fails for another reason than the database's absence answers no one
    with its error: each of its requests reads its own key and gets its own answer."""
    (a_id, a), (b_id, b) = keys["a"], keys["b"]

    async def fail_second(hashes: list[str]) -> None:
        if len(hashes) > 1:
            raise ValueError("a read that fails")

    async def body(reads: KeyReads, held: Held, _: psycopg.Connection[Any]) -> Any:
        return await asyncio.gather(reads.read(a), reads.read(b), reads.read("nope"))

    hooks = Hooks(before_read=fail_second, readers=1)
    found, _ = _run(db_url, db, lambda _: hooks, body)
    assert _ids(found) == [(a_id, DEFAULT), (b_id, DEFAULT), (None, DEFAULT)]


def test_each_request_of_a_read_without_the_database_raises_its_own_503(db_url: str) -> None:
    """With the pool closed (as when the database cannot be reached), every request queued in a
    read raises DatabaseUnavailable, each its own."""

    async def go() -> list[BaseException | KeyRead]:
        pool = await open_pool(db_url, application_name="test-key-reads", min_size=1)
        reads = KeyReads(pool, hooks=Hooks(readers=1))
        reads.start()
        await pool.close()
        try:
            return await asyncio.wait_for(
                asyncio.gather(*(reads.read(f"key-{i}") for i in range(3)), return_exceptions=True),
                WAIT,
            )
        finally:
            await reads.stop()

    raised = asyncio.run(go())
    assert all(isinstance(e, DatabaseUnavailable) for e in raised), raised
    assert len({id(e) for e in raised}) == 3


@pytest.fixture(name="recorded")
def recorded_fixture(settings: Settings) -> Iterator[tuple[LiveServer, list[list[str]]]]:
    reads: list[list[str]] = []

    async def record(hashes: list[str]) -> None:
        reads.append(hashes)

    app = create_app(settings, resolve=offline_resolver, key_reads=Hooks(after_read=record))
    with LiveServer(app) as server:
        yield server, reads


@pytest.mark.parametrize("path", ["/sms/send", "/sms/send/batch"])
def test_the_send_paths_read_their_key_through_the_grouped_reads(
    recorded: tuple[LiveServer, list[list[str]]], db: psycopg.Connection[Any], path: str
) -> None:
    """POST /sms/send and /sms/send/batch read their key through the process's KeyReads."""
    live, reads = recorded
    _, key = apikeys.create_key_sync(db, "http", limits=KeyLimits())
    one = {"to": TO, "body": "hello"}
    payload = one if path == "/sms/send" else {"messages": [one]}
    answer = httpx.post(live.url + path, json=payload, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 202, answer.text
    assert reads == [[apikeys.hash_key(key)]]
