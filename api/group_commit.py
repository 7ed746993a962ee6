"""Group commit of POST /sms/send: the messages of concurrent requests in one transaction.

Each request reads and checks on its own connection, then hands its one row to the process's
Committer and waits for its answer. Its writer task (writers_for: one, two in a lone process)
writes what is queued: a lone row at once (nothing waits when the API is idle); rows that arrive
while the writers are busy form the next group, at most `max_rows` of them, written with
shared.messages.enqueue_group in one transaction by one enqueue call: one statement, one commit
(and one dispatcher wake-up) for the group instead of one each per request.

Every request keeps its own answer. A refusal (opted out, over the recipient limit) is its row's
alone. Twins (one API key, one idempotency key) inside one group are written once: the second is
the first one's replay, or IdempotencyKeyReused when its request differs. Any error of the group's
statements rolls the group back and each row is then written alone, in its own request's task, by
shared.messages.enqueue, so only the guilty row gets the error; a group never waits on another
transaction's lock longer than `lock_timeout_ms` before it splits so (nor does a writer's
connection that died while idle fail its group). A connection lost at the COMMIT (whether it
committed is unknown) answers every row of the group 503: never a 202 for a row that may not be
written, and never a second write of one that may be.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.connections import autocommit
from api.crew import Crew
from shared import messages, metrics
from shared.db import DatabaseUnavailable, unavailable
from shared.messages import EnqueueResult, Outcome, Pending
from shared.wakeup import Wakeup

log = logging.getLogger(__name__)
# A group takes at most this many rows: one enqueue call's worth, and a bound on what one failing
# row makes the others retry alone.
MAX_ROWS: Final = 64
# The longest a group waits for a lock another transaction holds (a concurrent twin's key, a
# thread or recipient lock) before it splits: the rows queued behind it wait about this long.
LOCK_TIMEOUT_MS: Final = 2


def writers_for(workers: int) -> int:
    """Groups each API process writes at the same time (each on a connection of its own), when
    `workers` processes serve: one each beside other workers, so its groups are as large as the
    load makes them (a group costs the API's CPU far more than its rows do); two in a lone
    process, whose one writer and its requests would take turns (the requests wait while a group
    commits, the writer while they are read). Side by side on 2 cores, closed-loop POST /sms/send
    (2026-12-06), 2 workers: 1 writer 1,894/s at concurrency 16 and 3,402/s at 64, 2 writers
    1,671/s and 3,121/s, 4 writers 1,659/s and 2,952/s; 1 worker at 16: 1,104/s, 1,843/s, 1,761/s.
    """
    return 2 if workers == 1 else 1


@dataclass(frozen=True)
class Hooks:
    """Test seams: `queued(n)` after a row joins the queue (n rows queued), `before_commit` after
    a group's statements and before its commit, and `writers` (1: every row queued while a group
    is written waits for it, so the next group is known; None: writers_for the API's workers)."""

    queued: Callable[[int], None] | None = None
    before_commit: messages.BeforeCommit | None = None
    writers: int | None = None


class _Alone:
    """The answer "write your row alone": the group it was in failed, nothing of it is written."""


_ALONE: Final = _Alone()
# A row's answer: its outcome, write it alone, or the error to raise in its request.
Answer = EnqueueResult | _Alone | Exception


@dataclass
class _Waiting:
    row: Pending
    answer: asyncio.Future[Answer]


class Committer:
    """The API process's group commit: `enqueue(row)` from the requests, `writers` writers.

    `pool` is the writers' own (one connection each, so a group never waits behind requests for
    a connection); a row written alone uses `requests`, the requests' pool.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        requests: AsyncConnectionPool[Any],
        wakeup: Wakeup,
        *,
        writers: int = 1,
        max_rows: int = MAX_ROWS,
        lock_timeout_ms: int = LOCK_TIMEOUT_MS,
        hooks: Hooks | None = None,
    ) -> None:
        self._pool = pool
        self._requests = requests
        self._wakeup = wakeup
        self._hooks = hooks or Hooks()
        self._max_rows = max_rows
        self._lock_timeout_ms = lock_timeout_ms
        self._queue: deque[_Waiting] = deque()
        self._writers = Crew("sms-group-commit", writers, self._drain, lambda: bool(self._queue))

    def start(self) -> None:
        self._writers.start()

    async def stop(self) -> None:
        """Write what is queued, then end the writers; later rows are written alone."""
        await self._writers.stop()

    async def enqueue(self, row: Pending) -> EnqueueResult:
        """Write `row` with the rows queued with it: its message (or the earlier one of its
        idempotency key, replayed=True); raises what shared.messages.enqueue raises."""
        if not self._writers.serving:
            return await self._alone(row)
        waiting = _Waiting(row, asyncio.get_running_loop().create_future())
        self._queue.append(waiting)
        if self._hooks.queued is not None:
            self._hooks.queued(len(self._queue))
        self._writers.wake()  # the rows queued until that writer runs are its group
        answer = await waiting.answer
        if isinstance(answer, _Alone):
            return await self._alone(row)
        if isinstance(answer, Exception):
            raise answer
        if not answer.replayed:
            messages.log_created(answer)
        return answer

    async def _alone(self, row: Pending) -> EnqueueResult:
        """The row in a transaction of its own: the path of a request before group commit."""
        async with autocommit(self._requests) as conn:
            result = await messages.enqueue_pending(conn, row)
        if not result.replayed:
            self._wakeup.wake()
        return result

    async def _drain(self) -> None:
        """Write groups while rows are queued, on one connection while it lasts."""
        try:
            async with self._pool.connection() as conn:
                while self._queue and not conn.broken:
                    await self._write(conn, self._take())
        except Exception as e:  # no connection in time, or the pool is closing
            log.warning(
                "group commit has no connection",
                extra={"action": "group_commit_failed", "error_category": type(e).__name__},
            )
            while self._queue:  # each request raises its own error: 503 when the database is down
                _answer(self._queue.popleft(), unavailable(e) or RuntimeError(type(e).__name__))

    def _take(self) -> list[_Waiting]:
        """The next group: up to max_rows queued rows whose request still waits."""
        group: list[_Waiting] = []
        while self._queue and len(group) < self._max_rows:
            waiting = self._queue.popleft()
            if not waiting.answer.done():  # a request gone before its group: nothing to write
                group.append(waiting)
        return group

    async def _write(self, conn: AsyncConnection[Any], group: list[_Waiting]) -> None:
        if not group:
            return
        leaders, twins = _twins(group)
        try:
            outcomes = await messages.enqueue_group(
                conn,
                [w.row for w in leaders],
                lock_timeout_ms=self._lock_timeout_ms,
                before_commit=self._hooks.before_commit,
            )
        except Exception as e:
            metrics.GROUP_COMMIT_ROWS.labels("split").observe(len(group))
            down = None
            if isinstance(e, messages.CommitFailed) and (unavailable(e) or conn.broken):
                down = DatabaseUnavailable("connection lost", category=type(e).__name__)
            _log_failed(e, len(group), down)
            for waiting in group:
                # A connection lost at the COMMIT may have committed the group or not: every row
                # answers 503 (a fresh error each, raised in its own request), none is written
                # again. Any other failure wrote nothing: each row is written alone.
                _answer(waiting, _ALONE if down is None else unavailable(e) or down)
            return
        metrics.GROUP_COMMIT_ROWS.labels("written").observe(len(group))
        written = dict(zip((id(w) for w in leaders), outcomes, strict=True))
        for waiting in leaders:
            _answer(waiting, written[id(waiting)])
        for waiting, leader in twins:
            _answer(waiting, _twin_answer(waiting.row, written[id(leader)]))
        if any(isinstance(o, EnqueueResult) for o in outcomes):
            self._wakeup.wake()  # once per group


def _twins(group: list[_Waiting]) -> tuple[list[_Waiting], list[tuple[_Waiting, _Waiting]]]:
    """The rows to write (the first of each idempotency key), and each later row with the same
    (api key, idempotency key) paired with that first one."""
    first: dict[tuple[int | None, str], _Waiting] = {}
    leaders: list[_Waiting] = []
    twins: list[tuple[_Waiting, _Waiting]] = []
    for waiting in group:
        key = waiting.row.idempotency_key
        if key is None:
            leaders.append(waiting)
            continue
        leader = first.setdefault((waiting.row.api_key_id, key), waiting)
        if leader is waiting:
            leaders.append(waiting)
        else:
            twins.append((waiting, leader))
    return leaders, twins


def _twin_answer(row: Pending, leader: Outcome) -> Answer:
    """A twin's answer from its leader's: the message it created (a replay) or a 409; when the
    leader was refused, the twin is written alone and finds its own answer."""
    if not isinstance(leader, EnqueueResult):
        return _ALONE
    if leader.request_hash != row.request_hash:
        return messages.IdempotencyKeyReused(
            f"idempotency key already used for message {leader.id}"
        )
    return dataclasses.replace(leader, replayed=True)


def _answer(waiting: _Waiting, answer: Answer) -> None:
    if not waiting.answer.done():
        waiting.answer.set_result(answer)


def _log_failed(e: Exception, rows: int, down: DatabaseUnavailable | None) -> None:
    """Once per group; a database error's text can quote a row, so only its SQLSTATE."""
    cause = e.__cause__ if isinstance(e, messages.CommitFailed) else e
    code = cause.sqlstate if isinstance(cause, psycopg.Error) else None
    lock_wait = isinstance(cause, psycopg.errors.LockNotAvailable)
    log.log(
        logging.DEBUG if lock_wait else logging.WARNING,
        "group commit failed: %s",
        "rows answered 503" if down is not None else "rows written alone",
        extra={
            "action": "group_commit_failed" if down is not None else "group_commit_split",
            "error_category": type(cause).__name__,
            "error_code": code,
            "count": rows,
        },
    )
