"""Recorder: accepted sends of many slots are recorded in one write, bounded in size and wait."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from dispatcher.outbox import Sent, Work
from dispatcher.recorder import Recorder


def _sent(i: int) -> Sent:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    work = Work(
        id=i,
        kind="send_sms",
        attempt=1,
        lease_expires_at=now,
        claimed_at=now,
        rescued=False,
        unresolved_since=None,
    )
    return Sent(work, f"SM{i}", "queued")


class _Writes:
    def __init__(self, lost: frozenset[int] = frozenset(), fail: bool = False) -> None:
        self.calls: list[tuple[list[int], datetime | None]] = []
        self.lost = lost
        self.fail = fail

    async def __call__(self, sent: Sequence[Sent], now: datetime | None) -> list[dict[str, Any]]:
        self.calls.append(([s.work.id for s in sent], now))
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("database down")
        return [{"id": s.work.id} for s in sent if s.work.id not in self.lost]


def test_concurrent_results_share_one_write() -> None:
    """Ten sends completing together are recorded by one statement; a lost row answers None."""
    writes = _Writes(lost=frozenset({3}))
    recorder = Recorder(writes, key=lambda s: s.work.id, max_rows=100, max_wait=0.01)

    async def go() -> list[dict[str, Any] | None]:
        return await asyncio.gather(*(recorder.record(_sent(i)) for i in range(10)))

    rows = asyncio.run(go())
    assert writes.calls == [(list(range(10)), None)]
    assert [r is None for r in rows] == [i == 3 for i in range(10)]


def test_groups_are_bounded_by_max_rows_and_clock() -> None:
    """No write carries more than max_rows, and results with different injected clocks never mix."""
    writes = _Writes()
    recorder = Recorder(writes, key=lambda s: s.work.id, max_rows=4, max_wait=0.01)
    t = datetime(2026, 1, 2, tzinfo=UTC)

    async def go() -> None:
        await asyncio.gather(
            *(recorder.record(_sent(i)) for i in range(6)),
            *(recorder.record(_sent(i), t) for i in range(6, 8)),
        )

    asyncio.run(go())
    assert [len(ids) for ids, _ in writes.calls] == [4, 2, 2]
    assert all(now is None for ids, now in writes.calls if ids[0] < 6)
    assert writes.calls[-1] == ([6, 7], t)


def test_a_failed_write_fails_every_waiter() -> None:
    """A database error reaches each send of the group (its batch then fails as before)."""
    recorder = Recorder(_Writes(fail=True), key=lambda s: s.work.id, max_rows=10, max_wait=0.0)

    async def go() -> list[Any]:
        return await asyncio.gather(
            *(recorder.record(_sent(i)) for i in range(3)), return_exceptions=True
        )

    results = asyncio.run(go())
    assert all(isinstance(r, RuntimeError) for r in results)


@pytest.mark.parametrize("max_wait", [0.0, 0.002])
def test_idle_waits_for_the_write(max_wait: float) -> None:
    """idle() returns only once everything handed in has been written."""
    writes = _Writes()
    recorder = Recorder(writes, key=lambda s: s.work.id, max_rows=10, max_wait=max_wait)

    async def go() -> None:
        task = asyncio.create_task(recorder.record(_sent(1)))
        await asyncio.sleep(0)
        await recorder.idle()
        assert writes.calls == [([1], None)]
        await task

    asyncio.run(go())
