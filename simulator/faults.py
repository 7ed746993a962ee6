"""Injected misbehaviour of sends: ingress delay, latency, outages, 5xx, 429, errors, hangs."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from starlette.requests import Request

from simulator.config import SimConfig


@dataclass(frozen=True)
class Fault:
    """A refusal decided before the message is looked at."""

    kind: str  # "outage", "server_error", "rate_limited" or "error"
    status: int
    code: str | None = None
    retry_after: float | None = None


class FaultEngine:
    """Rolls the configured dice; one per simulator so a seed makes a run repeatable."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.stopping = asyncio.Event()

    def reseed(self) -> None:
        self.rng = random.Random(self.config.seed)

    def _roll(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate

    def ingress_delay(self) -> float | None:
        """Seconds this send is held before the provider sees it, or None if it goes straight in.

        Draws nothing while the rate is 0, so a seeded run without this fault rolls as before.
        """
        cfg = self.config
        if not self._roll(cfg.ingress_delay_rate):
            return None
        return self.rng.uniform(cfg.ingress_delay_min, cfg.ingress_delay_max)

    async def delay(self) -> None:
        """Sleep the configured latency plus up to `jitter` more."""
        seconds = self.config.latency + (self.rng.random() * self.config.jitter)
        if seconds > 0:
            await asyncio.sleep(seconds)

    def outage(self) -> Fault | None:
        """A 503 for every request while the provider is down."""
        return Fault("outage", 503) if self.config.in_outage() else None

    def before_accept(self) -> Fault | None:
        """The fault (if any) a send request meets before its numbers are checked."""
        cfg = self.config
        down = self.outage()
        if down is not None:
            return down
        if self._roll(cfg.server_error_rate):
            return Fault("server_error", cfg.server_error_status)
        if self._roll(cfg.rate_limit_rate):
            return Fault("rate_limited", 429, retry_after=cfg.retry_after)
        if cfg.error_codes and self._roll(cfg.error_rate):
            code = self.rng.choice(cfg.error_codes)
            if code.isdigit() and len(code) == 3:  # "500", "503", "429": an HTTP status
                status = int(code)
                retry = cfg.retry_after if status == 429 else None
                return Fault(
                    "rate_limited" if status == 429 else "server_error", status, None, retry
                )
            return Fault("error", 400, code)
        return None

    def hang(self) -> bool:
        """Whether this accepted send never gets its response."""
        return self._roll(self.config.hang_rate)

    async def hold(self, request: Request) -> None:
        """Keep a hung request open until the client gives up (or `hang_max`, or shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.hang_max
        while loop.time() < deadline and not self.stopping.is_set():
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.05)

    def roll_callback(self, rate: float) -> bool:
        return self._roll(rate)
