"""Outcomes written in groups (issue 15): attempts to run again share one statement, like
accepted sends; on real PostgreSQL with a provider that refuses every send (no network)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any
from uuid import UUID

import psycopg

from bench.noop import NoopProvider
from dispatcher.service import Dispatcher
from shared.config import Settings
from shared.db import open_pool
from shared.providers.base import Category, ProviderError, SendRequest, SendResult
from tests.dispatch_support import enqueue_messages, later, recipients


class Busy(NoopProvider):
    """Answers every send with a retryable error (a 503); the calls, in order."""

    def __init__(self) -> None:
        super().__init__("twilio")
        self.calls: list[UUID] = []

    async def send(self, request: SendRequest) -> SendResult:
        self.calls.append(request.message_id)
        raise ProviderError(Category.RETRYABLE, "service unavailable", code="503", http_status=503)


def test_retries_of_many_slots_share_one_write(
    db_url: str, db: psycopg.Connection[Any], settings: Settings
) -> None:
    """Five sends refused together are rescheduled by one statement: each row back to ready
    with its error, attempt kept, one attempt_result event each."""
    settings = dataclasses.replace(settings, dispatch_concurrency=8)
    enqueue_messages(db_url, recipients(5))
    provider = Busy()
    now = later(db)

    async def go() -> int:
        pool = await open_pool(db_url, application_name="test", min_size=1, max_size=4)
        try:
            d = Dispatcher(settings=settings, pool=pool, providers={"twilio": provider}, owner="o")
            stats = await d.run_once(now=now)
            assert stats.rescheduled == 5 and stats.lost == 0
            return d.outcomes.retries.writes
        finally:
            await pool.close()

    assert asyncio.run(go()) == 1
    rows = db.execute(
        "SELECT state, attempts, last_error_category, last_error_code, next_attempt_at > %s"
        " FROM sms_outbox",
        (now,),
    ).fetchall()
    assert rows == [("ready", 1, "retryable", "503", True)] * 5
    events = db.execute(
        "SELECT count(*) FROM sms_message_events WHERE event_type = 'attempt_result'"
        " AND error_category = 'retryable' AND attempt = 1"
    ).fetchone()
    assert events == (5,)
