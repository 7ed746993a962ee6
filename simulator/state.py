"""One simulator's live state: settings, record of messages, dice and callback sender."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TypeVar

from simulator import segments
from simulator.callbacks import CallbackSender
from simulator.config import SimConfig
from simulator.faults import Fault, FaultEngine
from simulator.pace import PaceLimiter, rule_for
from simulator.store import Store

T = TypeVar("T")


class Withdrawn(Exception):
    """A held send was dropped by `POST /_sim/reset` before the provider saw it."""


class SimState:
    """What the route handlers share; `reset()` returns to the settings the process started with."""

    def __init__(self, config: SimConfig, pace: PaceLimiter | None = None) -> None:
        self.config = config
        self._initial = copy.deepcopy(config)
        self.store = Store()
        self.pace = pace or PaceLimiter()
        self.faults = FaultEngine(config)
        self.callbacks = CallbackSender(config, self.faults)
        self._held: set[asyncio.Task[object]] = set()  # sends inside their ingress delay
        self._admitting: set[asyncio.Task[object]] = set()

    @property
    def ingress_held(self) -> int:
        """How many send requests are being held by the ingress_delay fault right now."""
        return len(self._held)

    def paced(self, from_number: str, body: str) -> Fault | None:
        """Record a send from `from_number` as accepted, or the 429 its sender's pace calls for.

        Call it last, just before the message is created: what it records counts as accepted.
        """
        rule = rule_for(self.config.enforce_mps, from_number)
        wait = self.pace.admit(from_number, segments.count(body), rule)
        return None if wait is None else Fault("rate_limited", 429, retry_after=wait)

    async def admit(self, handle: Callable[[bool], Awaitable[T]]) -> T:
        """Run a send's handling after its ingress delay, to the end even if its client leaves.

        `handle(delayed)` is everything the provider does with the request: it runs in its own
        task, shielded, so a client that gives up (or a server that cancels the request) cannot
        stop a message the provider has started to take.
        """
        delay = self.faults.ingress_delay()

        async def run() -> T:
            if delay is not None:
                task = asyncio.current_task()
                assert task is not None
                self._held.add(task)
                try:
                    await asyncio.sleep(delay)
                finally:
                    self._held.discard(task)
            return await handle(delay is not None)

        task: asyncio.Task[T] = asyncio.get_running_loop().create_task(run())
        self._admitting.add(task)
        task.add_done_callback(self._admitting.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                raise Withdrawn from None  # reset dropped it; the client is still waiting
            raise

    def reset(self) -> None:
        """Forget every message and count, drop held sends, and undo run-time configuration."""
        for task in list(self._held):
            task.cancel()  # still in the slow path: the provider never saw them
        for f in dataclasses.fields(SimConfig):
            setattr(self.config, f.name, copy.deepcopy(getattr(self._initial, f.name)))
        self.store.reset()
        self.pace.reset()
        self.faults.reseed()

    async def aclose(self) -> None:
        """Stop holding and handling sends, and the callbacks (at shutdown)."""
        self.faults.stopping.set()
        for task in list(self._admitting):
            task.cancel()
        await asyncio.gather(*self._admitting, return_exceptions=True)
        await self.callbacks.aclose()
