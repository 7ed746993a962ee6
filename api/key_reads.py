"""The send paths' key reads, grouped: the API keys of concurrent requests read by one statement.

Every POST /sms/send reads its key (with the key's limits and the default sender) before anything
else. Alone, that read is a pool checkout and a round trip per request, about a fifth of an API
worker's CPU under the enqueue load (issue 15). Here a few reader tasks read what is queued: a
lone key at once (nothing waits when the API is idle); the keys that arrive while every reader is
busy form the next read, at most `max_keys` distinct ones, one statement
(shared.apikeys.authenticate_many).

A read only ever takes keys queued before its statement starts: a request never joins a read
under way. So every request's key is read by a statement that began after the request asked, as
when it read alone, and a key revoked before a request arrives is refused to it
(tests/test_key_reads.py). Nothing is cached between reads.

A read that fails because the database cannot be reached answers each of its requests with that
(503); any other failure makes each request read its key alone, so it gets its own error.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from psycopg_pool import AsyncConnectionPool

from api.connections import autocommit
from api.crew import Crew
from shared import apikeys
from shared.apikeys import KeyRead
from shared.db import DatabaseUnavailable, unavailable

log = logging.getLogger(__name__)

# Readers at a time, each with its own checkout for the length of one statement.
READERS: Final = 2
# Distinct keys in one read (a deployment has few keys; more requests than this share them).
MAX_KEYS: Final = 64


@dataclass(frozen=True)
class Hooks:
    """Test seams: `queued(n)` after a key joins the queue (n queued); `before_read(hashes)` and
    `after_read(hashes)` around each read's statement (its distinct key hashes, in order), and
    `readers`."""

    queued: Callable[[int], None] | None = None
    before_read: Callable[[list[str]], Awaitable[None]] | None = None
    after_read: Callable[[list[str]], Awaitable[None]] | None = None
    readers: int = READERS


@dataclass
class _Asking:
    key_sha256: str
    answer: asyncio.Future[KeyRead | DatabaseUnavailable | None]  # None: read it alone


class KeyReads:
    """The API process's grouped key reads: `read(key)` from the requests."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        max_keys: int = MAX_KEYS,
        hooks: Hooks | None = None,
    ) -> None:
        self._pool = pool
        self._hooks = hooks or Hooks()
        self._max_keys = max_keys
        self._queue: deque[_Asking] = deque()
        self._readers = Crew(
            "sms-key-reads",
            self._hooks.readers,
            lambda: self._read(self._take()),
            lambda: bool(self._queue),
        )

    def start(self) -> None:
        self._readers.start()

    async def stop(self) -> None:
        """Read what is queued, then end the readers; later keys are read alone."""
        await self._readers.stop()

    async def read(self, key: str) -> KeyRead:
        """The active key `key` names (or None) and the default sender (or None)."""
        if not apikeys.plausible(key):
            return None, None
        key_sha256 = apikeys.hash_key(key)
        if not self._readers.serving:
            return await self._alone(key_sha256)
        asking = _Asking(key_sha256, asyncio.get_running_loop().create_future())
        self._queue.append(asking)
        if self._hooks.queued is not None:
            self._hooks.queued(len(self._queue))
        self._readers.wake()  # the keys queued until that reader runs are its read
        answer = await asking.answer
        if answer is None:
            return await self._alone(key_sha256)
        if isinstance(answer, DatabaseUnavailable):
            raise answer
        return answer

    async def _alone(self, key_sha256: str) -> KeyRead:
        async with autocommit(self._pool) as conn:
            (found,) = await apikeys.authenticate_many(conn, [key_sha256])
        return found

    def _take(self) -> list[_Asking]:
        """The next read: queued keys whose request still waits, up to max_keys distinct."""
        taken: list[_Asking] = []
        distinct: set[str] = set()
        while self._queue:
            asking = self._queue[0]
            if asking.key_sha256 not in distinct and len(distinct) == self._max_keys:
                break
            self._queue.popleft()
            if not asking.answer.done():  # a request gone before its read: nothing to answer
                taken.append(asking)
                distinct.add(asking.key_sha256)
        return taken

    async def _read(self, taken: list[_Asking]) -> None:
        if not taken:
            return
        hashes = list(dict.fromkeys(a.key_sha256 for a in taken))
        hooks = self._hooks
        try:
            if hooks.before_read is not None:
                await hooks.before_read(hashes)
            async with autocommit(self._pool) as conn:
                found = await apikeys.authenticate_many(conn, hashes)
            if hooks.after_read is not None:
                await hooks.after_read(hashes)
        except asyncio.CancelledError:  # the process is stopping: no request is left waiting
            for asking in taken:
                _answer(asking, None)
            raise
        except Exception as e:
            down = unavailable(e)
            if down is None:
                log.warning(
                    "grouped key read failed: each request reads its key alone",
                    extra={"action": "key_read_failed", "error_category": type(e).__name__},
                )
            for asking in taken:
                # A fresh 503 per request (each raises its own), else "read it alone".
                _answer(asking, None if down is None else unavailable(e))
            return
        by_hash = dict(zip(hashes, found, strict=True))
        for asking in taken:
            _answer(asking, by_hash[asking.key_sha256])


def _answer(asking: _Asking, answer: KeyRead | DatabaseUnavailable | None) -> None:
    if not asking.answer.done():
        asking.answer.set_result(answer)
