"""How much work one dispatcher holds, and waiting for room: DISPATCH_CONCURRENCY as an object.

A claimed row is held from its claim until its outcome is written. A held row whose provider call
is over and whose accepted send only waits for the recorder's group write uses no slot, so new
work can be claimed while the group gathers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

from dispatcher.outbox import Work


@dataclass
class Held:
    work: Work
    deadline: float  # event-loop time by which the provider call must be over
    started: bool = False  # "attempt started" is committed: the call may reach the provider
    called: bool = False  # the call is over; its acceptance waits for the recorder


class Slots:
    """The rows one dispatcher holds, bounded by `size`; `wait_for_room` wakes when one settles."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._held: dict[int, Held] = {}
        self._recording = 0
        self._room = asyncio.Event()

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, work_id: object) -> bool:
        return work_id in self._held

    def free(self) -> int:
        """How many more rows may be taken on: rows claimed, started or in a call count."""
        return max(self.size - max(len(self._held) - self._recording, 0), 0)

    def hold(self, works: Iterable[Work], deadline: float) -> None:
        for w in works:
            self._held[w.id] = Held(w, deadline)

    def get(self, work: Work) -> Held | None:
        return self._held.get(work.id)

    def start(self, work: Work) -> None:
        held = self._held.get(work.id)
        if held is not None:
            held.started = True

    def calling_done(self, work: Work) -> bool:
        """The call is over and only the recorder is left: the row stops using a slot."""
        held = self._held.get(work.id)
        if held is None or held.called:
            return False
        held.called = True
        self._recording += 1
        self._room.set()
        return True

    def recorded(self, work: Work) -> None:
        """The recorder's write for a row `calling_done` marked is over (or failed)."""
        held = self._held.get(work.id)
        if held is not None and held.called:
            held.called = False
            self._recording -= 1

    def settle(self, work: Work) -> None:
        """The row's outcome is written (or it is no longer ours): its slot is free."""
        held = self._held.pop(work.id, None)
        if held is not None and held.called:
            self._recording -= 1
        self._room.set()

    def forget(self, works: Iterable[Work]) -> None:
        """Stop holding rows a failed batch left (their leases expire; anyone rescues them)."""
        for w in works:
            if w.id in self._held:
                self.settle(w)

    def drain(self) -> list[Held]:
        """Every held row, handed over for release at shutdown; nothing is held afterwards."""
        held = list(self._held.values())
        self._held.clear()
        self._recording = 0
        self._room.set()
        return held

    def wake(self) -> None:
        """Wake whoever waits for room (at stop)."""
        self._room.set()

    async def wait_for_room(self, seconds: float) -> None:
        """Wait up to `seconds` for a held row to settle."""
        self._room.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._room.wait()
