"""Every ```sql block of README.md runs against a migrated database, and the repairs work."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```sql\n(.*?)^```", README.read_text(), flags=re.MULTILINE | re.DOTALL)
OWNER = "host-a:4242:dead"


def _arrange(db: psycopg.Connection[Any]) -> dict[str, str]:
    """A failed never-accepted message, a message leased by a dead dispatcher, a paused provider."""
    db.execute("INSERT INTO sms_senders (phone_number, provider) VALUES ('+15005550006', 'twilio')")
    ids = {}
    for name, to in (("failed", "+14155552671"), ("leased", "+14155552672")):
        conversation = db.execute(
            "INSERT INTO sms_conversations (from_number, to_number) VALUES ('+15005550006', %s)"
            " RETURNING id",
            (to,),
        ).fetchone()
        assert conversation is not None
        row = db.execute(
            "INSERT INTO sms_messages (conversation_id, from_number, to_number, body, provider,"
            " segments, encoding) VALUES (%s, '+15005550006', %s, 'hi', 'twilio', 1, 'GSM-7')"
            " RETURNING id",
            (conversation[0], to),
        ).fetchone()
        assert row is not None
        ids[name] = str(row[0])
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'failed', final_at = now(), attempts = 4,"
        " error_code = '30001', error_category = 'retryable', error_message = 'queue overflow'"
        " WHERE id = %s",
        (ids["failed"],),
    )
    db.execute(
        "INSERT INTO sms_message_events (message_id, event_type, attempt, error_category)"
        " VALUES (%s, 'attempt_result', 4, 'retryable')",
        (ids["failed"],),
    )
    db.execute(
        "INSERT INTO sms_outbox (kind, message_id, provider, sender, state, attempts, lease_owner,"
        " lease_expires_at, next_attempt_at) VALUES ('send_sms', %s, 'twilio', '+15005550006',"
        " 'leased', 2, %s, now() + interval '1 minute', now() + interval '1 minute')",
        (ids["leased"], OWNER),
    )
    db.execute(
        "INSERT INTO sms_provider_pauses (provider, paused_until, error_code, reason)"
        " VALUES ('twilio', now() + interval '10 minutes', '20003', 'authentication failed')"
    )
    return ids


def _bind(sql: str, values: dict[str, str]) -> str:
    """psql's :'name' variables, replaced by quoted literals (our own test values)."""
    return re.sub(r":'(\w+)'", lambda m: "'" + values[m.group(1)] + "'", sql)


def test_readme_has_the_dba_queries() -> None:
    """The section exists and prints at least the dozen queries a DBA needs."""
    assert "## Querying the outbox" in README.read_text()
    assert len(BLOCKS) >= 12


@pytest.mark.parametrize("sql", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_query_runs(db: psycopg.Connection[Any], sql: str) -> None:
    """The printed query runs as written (psql variables bound) against the migrated schema."""
    ids = _arrange(db)
    db.execute(_bind(sql, {"message_id": ids["failed"], "lease_owner": OWNER}).encode())


def _block(marker: str) -> str:
    [found] = [b for b in BLOCKS if marker in b]
    return found


def test_readme_repairs_do_what_they_say(db: psycopg.Connection[Any]) -> None:
    """The requeue, lease release and resume blocks change exactly what the README says."""
    ids = _arrange(db)
    values = {"message_id": ids["failed"], "lease_owner": OWNER}
    db.execute(_bind(_block("'requeued', 'failed', 'pending'"), values).encode())
    row = db.execute(
        "SELECT m.delivery_status, m.final_at, o.attempts, o.state FROM sms_messages m"
        " JOIN sms_outbox o ON o.message_id = m.id WHERE m.id = %s",
        (ids["failed"],),
    ).fetchone()
    assert row == ("pending", None, 0, "ready")
    db.execute(_bind(_block("lease_owner = :'lease_owner'"), values).encode())
    row = db.execute(
        "SELECT state, lease_owner, attempts FROM sms_outbox WHERE message_id = %s",
        (ids["leased"],),
    ).fetchone()
    assert row == ("ready", None, 1)
    db.execute(_block("DELETE FROM sms_provider_pauses").encode())
    assert db.execute("SELECT count(*) FROM sms_provider_pauses").fetchone() == (0,)


def test_requeue_block_refuses_an_accepted_message(db: psycopg.Connection[Any]) -> None:
    """The hand requeue leaves a message alone once a provider accepted it (it has a sid)."""
    ids = _arrange(db)
    db.execute("UPDATE sms_messages SET provider_sid = 'SMx' WHERE id = %s", (ids["failed"],))
    values = {"message_id": ids["failed"], "lease_owner": str(uuid.uuid4())}
    db.execute(_bind(_block("'requeued', 'failed', 'pending'"), values).encode())
    row = db.execute("SELECT delivery_status FROM sms_messages WHERE id = %s", (ids["failed"],))
    assert row.fetchone() == ("failed",)
