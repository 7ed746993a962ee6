"""shared.providers.base.NewestFirst: how far a reconciliation lookup reads a newest-first list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.providers.base import Category, NewestFirst, ProviderError

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_reads_past_older_entries_until_a_whole_page_is_older() -> None:
    """Older entries are skipped, a newer one resets the count, a full page of older ends it."""
    window = NewestFirst(START, page_size=3, limit=100, what="messages")
    newer, older = START + timedelta(seconds=1), START - timedelta(seconds=1)
    verdicts = [window.judge(t) for t in (newer, older, older, newer, None, older, older, older)]
    assert verdicts == ["in", "older", "older", "in", "in", "older", "older", "done"]


def test_past_the_limit_the_lookup_is_inconclusive_not_a_miss() -> None:
    """Reading more than `limit` entries raises an ambiguous error instead of answering 'none'."""
    window = NewestFirst(START, page_size=3, limit=2, what="log entries")
    window.judge(START)
    window.judge(START)
    with pytest.raises(ProviderError) as caught:
        window.judge(START)
    assert caught.value.category is Category.AMBIGUOUS
    assert "over 2 log entries" in caught.value.reason
