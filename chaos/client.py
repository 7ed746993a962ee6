"""The harness's client: M sends through `POST /sms/send` at a fixed arrival rate, each retried with
the SAME Idempotency-Key on no answer, a connection error, a 5xx or a 429 (bounded), and its end
recorded as an Ack: ok (202), fail (a definite 4xx) or info (no definite answer)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from chaos.counts import Ack

TWILIO_SENDER = "+15005550006"  # the simulator's Twilio sender (shared.devstack.provider_env)
SIGNALWIRE_SENDER = "+15005550010"  # the simulator's SignalWire sender
REQUEST_TIMEOUT = 10.0  # seconds one try may take before the client gives up on it
MAX_TRIES = 7  # the first try and 6 retries: backoff 0.5, 1, 2, 4, 8, 8 s (about 24 s in all)
MAX_BACKOFF = 8.0
MAX_IN_FLIGHT = 64  # requests at once; arrivals wait for a slot while the API is down


def recipients(count: int) -> list[str]:
    """`count` plain valid US numbers the simulator accepts (none of its +1500555 test numbers)."""
    return [f"+1415555{100 + i:04d}" for i in range(count)]


@dataclass(frozen=True)
class Plan:
    """What to send: bodies, recipients and senders are fixed up front from the seed."""

    scenario: str
    messages: int
    rate: float
    recipients: list[str]
    seed: int

    def requests(self) -> list[tuple[str, str, str, str]]:
        """(idempotency key, body, to, from) per message; unique bodies and keys."""
        rng = random.Random(self.seed)
        out = []
        for n in range(self.messages):
            token = f"{rng.getrandbits(48):012x}"
            body = f"chaos {self.scenario} {n} {token}"
            sender = TWILIO_SENDER if n % 2 == 0 else SIGNALWIRE_SENDER
            out.append(
                (f"chaos-{self.scenario}-{n}-{token}", body, rng.choice(self.recipients), sender)
            )
        return out


@dataclass
class LoadResult:
    acks: list[Ack] = field(default_factory=list)
    seconds: float = 0.0
    tries: int = 0
    replayed: int = 0  # 202s with Idempotent-Replayed: the first try's answer was lost
    statuses: Counter[str] = field(default_factory=Counter)  # every try's status or error name


async def send_all(api_url: str, api_key: str, plan: Plan, *, limit_seconds: float) -> LoadResult:
    """Send the plan's messages; returns when every chain has ended (bounded by `limit_seconds`)."""
    result = LoadResult()
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    rng = random.Random(plan.seed + 1)
    headers = {"Authorization": f"Bearer {api_key}"}
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
    timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=min(5.0, REQUEST_TIMEOUT))
    t0 = time.monotonic()
    async with httpx.AsyncClient(
        base_url=api_url, headers=headers, limits=limits, timeout=timeout
    ) as http:

        async def chain(key: str, body: str, to: str, sender: str) -> Ack:
            async with slots:
                return await _send_one(http, result, rng, key, body, to, sender)

        tasks = []
        try:
            async with asyncio.timeout(limit_seconds):
                for i, (key, body, to, sender) in enumerate(plan.requests()):
                    delay = t0 + i / plan.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(chain(key, body, to, sender)))
                result.acks = list(await asyncio.gather(*tasks))
        except TimeoutError:
            # Past the bound: whatever has no answer yet is indeterminate (or never sent).
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            result.acks = [
                t.result() if t.done() and not t.cancelled() else Ack(body, "info")
                for t, (_, body, _, _) in zip(tasks, plan.requests(), strict=False)
            ]
    result.seconds = time.monotonic() - t0
    return result


async def _send_one(
    http: httpx.AsyncClient,
    result: LoadResult,
    rng: random.Random,
    key: str,
    body: str,
    to: str,
    sender: str,
) -> Ack:
    payload = {"to": to, "body": body, "from": sender}
    headers = {"Idempotency-Key": key}
    for attempt in range(MAX_TRIES):
        if attempt:
            wait = min(MAX_BACKOFF, 0.5 * 2 ** (attempt - 1)) * (0.5 + rng.random() / 2)
            await asyncio.sleep(wait)
        result.tries += 1
        try:
            reply = await http.post("/sms/send", json=payload, headers=headers)
        except httpx.HTTPError as e:
            result.statuses[type(e).__name__] += 1
            continue
        result.statuses[str(reply.status_code)] += 1
        if reply.status_code == 202:
            if reply.headers.get("Idempotent-Replayed", "").lower() == "true":
                result.replayed += 1
            try:
                return Ack(body, "ok", str(reply.json()["id"]))
            except (ValueError, KeyError, TypeError):
                return Ack(body, "ok")  # acked all the same; matched by body
        if reply.status_code == 429:
            with_after = reply.headers.get("Retry-After", "")
            if with_after.replace(".", "", 1).isdigit():
                await asyncio.sleep(min(float(with_after), MAX_BACKOFF))
            continue
        if reply.status_code < 500:
            return Ack(body, "fail")
    return Ack(body, "info")
