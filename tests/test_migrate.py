"""Migrations apply to an empty database, once, and leave the contract tables in place."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from shared import migrate as migrations

CONTRACT_TABLES = {
    "sms_conversations",
    "sms_messages",
    "sms_outbox",
    "sms_message_events",
    "sms_senders",
    "sms_api_keys",
    "sms_alerts",
}


def test_template_has_every_contract_table(db: psycopg.Connection[Any]) -> None:
    """The migrated template gives each test every table of the schema."""
    rows = db.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    ).fetchall()
    assert CONTRACT_TABLES <= {r[0] for r in rows}


def test_migrate_is_idempotent(db_url: str) -> None:
    """A second run applies nothing: every version is recorded."""
    assert migrations.migrate(db_url) == []


def test_migrate_empty_database(db: psycopg.Connection[Any], db_url: str) -> None:
    """All migrations apply in order to an empty database."""
    db.execute("DROP DATABASE IF EXISTS sms_empty")
    db.execute("CREATE DATABASE sms_empty")
    url = psycopg.conninfo.make_conninfo(db_url, dbname="sms_empty")
    applied = migrations.migrate(url)
    assert applied == [m.version for m in migrations.available()]
    with psycopg.connect(url) as conn:
        n = conn.execute("SELECT count(*) FROM sms_schema_migrations").fetchone()
    assert n is not None and n[0] == len(applied)


def test_every_contract_table_and_column_is_commented(db: psycopg.Connection[Any]) -> None:
    """DBAs read COMMENT ON text: every contract table has one."""
    for table in CONTRACT_TABLES:
        row = db.execute("SELECT obj_description(%s::regclass, 'pg_class')", (table,)).fetchone()
        assert row is not None and row[0], table


@pytest.mark.parametrize(
    "sql",
    [
        # a leased row must name its owner
        "INSERT INTO sms_outbox (kind, alert_id, state) VALUES ('deliver_alert', 1, 'leased')",
        # unknown status
        "UPDATE sms_messages SET delivery_status = 'lost'",
    ],
)
def test_constraints_refuse_illegal_states(db: psycopg.Connection[Any], sql: str) -> None:
    """CHECK constraints refuse rows that break the lifecycle invariants."""
    db.execute(
        "INSERT INTO sms_conversations (id, from_number, to_number) "
        "VALUES ('00000000-0000-0000-0000-000000000001', '+15005550006', '+14155550100')"
    )
    db.execute(
        "INSERT INTO sms_messages (conversation_id, from_number, to_number, body, provider,"
        " segments, encoding) VALUES ('00000000-0000-0000-0000-000000000001', '+15005550006',"
        " '+14155550100', 'hi', 'twilio', 1, 'GSM-7')"
    )
    db.execute(
        "INSERT INTO sms_alerts (kind, provider, payload)"
        " VALUES ('provider_config', 'twilio', '{}')"
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(sql)
