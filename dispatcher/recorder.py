"""Group commit of outcomes: the results of many slots in one statement (accepted sends in one
outbox_record_sent, attempts to run again in one outbox_reschedule_many; delivered webhooks in
one webhook_deliveries_delivered).

Each slot hands its result to `record()` and waits for the row it wrote. One writer
at a time takes everything waiting (up to `max_rows`) and records it in one transaction; while
it writes, the next group gathers. A lone result waits at most `max_wait` seconds for company,
so recording is batched without being delayed unboundedly. Rows are guarded in SQL (owner and
attempt) exactly as before: batching changes how many rows a statement carries, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

Row = dict[str, Any]
T = TypeVar("T")
# (results, now): `now` is the injected clock (None in production: the database clock).
Write = Callable[[Sequence[T], datetime | None], Awaitable[list[Row]]]


class Recorder(Generic[T]):
    """Batches results into one write; `record()` returns the row written for a result (the
    row whose "id" is `key(result)`), or None when the row was no longer ours."""

    def __init__(
        self,
        write: Write[T],
        *,
        key: Callable[[T], object],
        max_rows: int,
        max_wait: float,
    ) -> None:
        self.write = write
        self.key = key
        self.max_rows = max(1, max_rows)
        self.max_wait = max_wait
        self._waiting: list[tuple[T, datetime | None, asyncio.Future[Row | None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._full: asyncio.Future[None] | None = None
        self.writes = 0  # statements issued, for tests and the bench

    async def record(self, result: T, now: datetime | None = None) -> Row | None:
        """Queue `result` for the next write and wait for it (the write survives our
        cancellation)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Row | None] = loop.create_future()
        self._waiting.append((result, now, done))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._run())
        elif len(self._waiting) >= self.max_rows and self._full is not None:
            if not self._full.done():
                self._full.set_result(None)
        return await done

    async def idle(self) -> None:
        """Until everything handed in so far is written (or its write failed)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.wait({self._writer})

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            if len(self._waiting) < self.max_rows and self.max_wait > 0:
                self._full = loop.create_future()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.max_wait):
                        await self._full
                self._full = None
            # One write per injected clock value (tests); in production `now` is always None.
            now = self._waiting[0][1]
            group = [w for w in self._waiting if w[1] == now][: self.max_rows]
            taken = {id(w[2]) for w in group}
            self._waiting = [w for w in self._waiting if id(w[2]) not in taken]
            try:
                rows = await self.write([s for s, _, _ in group], now)
            except asyncio.CancelledError:
                for _, _, fut in group:
                    fut.cancel()
                raise
            except Exception as e:
                for _, _, fut in group:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            finally:
                self.writes += 1
            ours = {r["id"]: r for r in rows}
            for s, _, fut in group:
                if not fut.done():
                    fut.set_result(ours.get(self.key(s)))
