"""An async HTTP/1.1 load generator on raw asyncio streams (keep-alive, one request in flight per
connection): lighter than an HTTP library, so on a 2-core machine more of the CPU goes to the API
being measured. Closed loop (fixed concurrency) and open loop (fixed arrival rate)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Reply:
    status: int
    body: bytes
    sent: float  # perf_counter when the request was written
    done: float  # perf_counter when the reply was read
    wall: float  # time.time() when the reply was read (compared with other processes' clocks)
    index: int = -1  # which request (make_body's argument)


@dataclass
class Outcome:
    """What one load run saw inside its measuring window."""

    replies: list[Reply] = field(default_factory=list)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)  # every reply, counted or not

    @property
    def ok(self) -> list[Reply]:
        return [r for r in self.replies if r.status == 202]

    def rate(self) -> float:
        return len(self.ok) / self.seconds if self.seconds else 0.0


class Connection:
    """One keep-alive connection sending POSTs with a fixed header block."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass

    async def post(self, path: str, body: bytes) -> Reply:
        if self.writer is None or self.reader is None:
            await self.open()
        assert self.writer is not None and self.reader is not None
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.head}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        sent = time.perf_counter()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        payload = await self.reader.readexactly(length) if length else b""
        reply = Reply(status, payload, sent, time.perf_counter(), time.time())
        if close:
            await self.close()
            self.writer = self.reader = None
        return reply


BodyFn = Callable[[int], bytes]


async def closed_loop(
    url: str,
    path: str,
    headers: dict[str, str],
    make_body: BodyFn,
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 1.0,
) -> Outcome:
    """`concurrency` connections each sending back to back; replies after `warmup` are counted
    for `seconds`."""
    host, port = _host_port(url)
    outcome = Outcome()
    counter = iter(range(10**9))
    start_at = time.perf_counter() + warmup
    end_at = start_at + seconds

    async def worker() -> None:
        conn = Connection(host, port, headers)
        try:
            while time.perf_counter() < end_at:
                i = next(counter)
                try:
                    reply = await conn.post(path, make_body(i))
                except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                    outcome.errors.append(type(e).__name__)
                    await conn.close()
                    conn = Connection(host, port, headers)
                    continue
                reply.index = i
                outcome.statuses[reply.status] += 1
                if start_at <= reply.done <= end_at:
                    outcome.replies.append(reply)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    outcome.seconds = seconds
    return outcome


async def open_loop(
    url: str,
    path: str,
    headers: dict[str, str],
    make_body: BodyFn,
    *,
    rate: float,
    seconds: float,
    connections: int = 64,
) -> Outcome:
    """Requests at a fixed arrival rate for `seconds`, over up to `connections` connections."""
    host, port = _host_port(url)
    outcome = Outcome()
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(Connection(host, port, headers))
    total = int(rate * seconds)
    t0 = time.perf_counter()

    async def one(i: int) -> None:
        conn = await idle.get()
        try:
            reply = await conn.post(path, make_body(i))
            reply.index = i
            outcome.statuses[reply.status] += 1
            outcome.replies.append(reply)
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            outcome.errors.append(type(e).__name__)
            await conn.close()
            conn = Connection(host, port, headers)
        finally:
            idle.put_nowait(conn)

    tasks = []
    for i in range(total):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    outcome.seconds = time.perf_counter() - t0
    while not idle.empty():
        await idle.get_nowait().close()
    return outcome


def _host_port(url: str) -> tuple[str, int]:
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.partition(":")
    return host, int(port or 80)
