"""Concurrent first messages of one new (from, to) pair share one conversation."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.api_support import (  # noqa: F401 - fixtures are used by name
    TO,
    LiveServer,
    api_key_fixture,
    app_fixture,
    auth_fixture,
    live_fixture,
    race,
)


def test_concurrent_first_messages_of_a_pair_make_one_conversation(
    live: LiveServer, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Two first messages of a new pair, in flight together, both land in one new conversation."""
    responses = race(
        db,
        live.url,
        [
            ("/sms/send", {"to": TO, "body": "one"}, auth),
            ("/sms/send", {"to": TO, "body": "two"}, auth),
        ],
    )
    assert [r.status_code for r in responses] == [202, 202], [r.text for r in responses]
    assert responses[0].json()["conversation_id"] == responses[1].json()["conversation_id"]
    assert db.execute("SELECT count(*) FROM sms_conversations").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM sms_messages").fetchone() == (2,)
