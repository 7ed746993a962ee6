"""A crew of background tasks that work while something is queued: the send path's group commit
(api/group_commit.py) and its grouped key reads (api/key_reads.py)."""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable


class Crew:
    """`count` tasks, each running `work()` while `pending()` says something is queued and
    waiting for `wake()` when nothing is. `stop()` lets them finish what is queued."""

    def __init__(
        self,
        name: str,
        count: int,
        work: Callable[[], Awaitable[None]],
        pending: Callable[[], bool],
    ) -> None:
        self._name = name
        self._count = count
        self._work = work
        self._pending = pending
        self._idle: deque[asyncio.Event] = deque()  # one per task waiting for work
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def serving(self) -> bool:
        """Started and not stopping: what is queued now will be worked on."""
        return bool(self._tasks) and not self._stopping

    def start(self) -> None:
        if not self._tasks:
            self._stopping = False
            # A context of their own: the tasks are no request's, and annotate no access line.
            self._tasks = [
                asyncio.create_task(
                    self._member(), name=f"{self._name}-{i}", context=contextvars.Context()
                )
                for i in range(self._count)
            ]

    async def stop(self) -> None:
        """Work off what is queued, then end the tasks."""
        self._stopping = True
        while self._idle:
            self._idle.popleft().set()
        await asyncio.gather(*self._tasks)
        self._tasks = []

    def wake(self) -> None:
        """Something was queued: one idle task takes it (and whatever is queued by then)."""
        if self._idle:
            self._idle.popleft().set()

    async def _member(self) -> None:
        wake = asyncio.Event()
        while True:
            if self._pending():
                await self._work()
            elif self._stopping:
                return
            else:
                self._idle.append(wake)
                await wake.wait()
                wake.clear()
