"""The webhook claim (webhook_deliveries_claim) leases its rows by primary key in every plan: a
prepared statement's generic plan, which knows no limit, once joined the due rows to a seq scan
of the whole outbox, SMS rows and parked webhook rows included, on every claim."""

from __future__ import annotations

from typing import Any

import psycopg

from shared.queries import q
from shared.webhook_signing import new_secret

PARKED = 3000


def scanned(plan: dict[str, Any], relation: str) -> int:
    """Rows the scans of `relation` in an EXPLAIN ANALYZE plan (FORMAT JSON) returned."""
    scan = plan.get("Relation Name") == relation and plan["Node Type"] != "ModifyTable"
    own = int(plan.get("Actual Rows", 0)) * int(plan.get("Actual Loops", 1)) if scan else 0
    return own + sum(scanned(child, relation) for child in plan.get("Plans", []))


def _endpoint(db: psycopg.Connection[Any]) -> int:
    """A key with one endpoint on a loopback port; the endpoint's id."""
    [[key]] = db.execute(
        "INSERT INTO sms_api_keys (name, key_sha256) VALUES ('app', md5('a') || md5('b'))"
        " RETURNING id"
    ).fetchall()
    [[endpoint]] = db.execute(
        "INSERT INTO sms_webhook_endpoints (api_key_id, url, secret)"
        " VALUES (%s, 'http://127.0.0.1:9/hook', %s) RETURNING id",
        (key, new_secret()),
    ).fetchall()
    return int(endpoint)


def test_a_generic_claim_leases_by_primary_key(db: psycopg.Connection[Any]) -> None:
    """3,000 deliveries parked for an hour and one due: a claim in its generic plan reads the
    one due outbox row, and leases it."""
    endpoint = _endpoint(db)
    db.execute(
        "WITH d AS (INSERT INTO sms_webhook_deliveries (endpoint_id, event_type, payload,"
        " occurred_at) SELECT %s, 'message.sent', '{}', now() FROM generate_series(0, %s) i"
        " RETURNING id)"
        " INSERT INTO sms_outbox (kind, webhook_delivery_id, next_attempt_at)"
        " SELECT 'deliver_webhook', id, now() + interval '1 hour' FROM d",
        (endpoint, PARKED),
    )
    [[due]] = db.execute(
        "UPDATE sms_outbox SET next_attempt_at = now() - interval '1 second'"
        " WHERE id = (SELECT min(id) FROM sms_outbox) RETURNING id"
    ).fetchall()
    db.execute("ANALYZE sms_outbox")
    db.execute("SET plan_cache_mode = force_generic_plan")
    sql = q("webhook_deliveries_claim")
    for i, name in enumerate(("now", "owner", "limit", "lease_seconds"), start=1):
        sql = sql.replace(f"%({name})s", f"${i}")
    db.execute(f"PREPARE claim(timestamptz, text, int, float8) AS {sql}")
    [[plan]] = db.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim(NULL, 'test-owner', 64, 30)"
    ).fetchone() or ((),)
    assert scanned(plan["Plan"], "sms_outbox") <= 2  # the due row, found and then leased
    assert db.execute(
        "SELECT id, state, lease_owner FROM sms_outbox WHERE state = 'leased'"
    ).fetchall() == [(due, "leased", "test-owner")]


def test_a_generic_group_delivered_reads_no_backlog_of_a_healthy_endpoint(
    db: psycopg.Connection[Any],
) -> None:
    """A healthy endpoint with 3,000 deliveries waiting and one in flight: the group's
    `delivered` (webhook_deliveries_delivered) in its generic plan, made while the tables were
    empty (as a dispatcher's plans are, started before a burst), writes the endpoint's health and
    reads none of the waiting deliveries: only a parked endpoint's are due again. Its old shape
    joined them to the outbox before asking whether the endpoint had been parked (0.7 s, once a
    second, in bench webhooks)."""
    endpoint = _endpoint(db)
    db.execute("UPDATE sms_webhook_endpoints SET last_success_at = now() - interval '1 minute'")
    db.execute("ANALYZE")  # the statistics of empty tables, which the generic plan is made from
    db.execute("SET plan_cache_mode = force_generic_plan")
    sql = q("webhook_deliveries_delivered")
    for i, name in enumerate(("now", "ids", "attempts", "statuses", "owner"), start=1):
        sql = sql.replace(f"%({name})s", f"${i}")
    db.execute(f"PREPARE delivered(timestamptz, bigint[], int[], int[], text) AS {sql}")
    db.execute(
        "WITH d AS (INSERT INTO sms_webhook_deliveries (endpoint_id, event_type, payload,"
        " occurred_at) SELECT %s, 'message.sent', '{}', now() FROM generate_series(0, %s) i"
        " RETURNING id)"
        " INSERT INTO sms_outbox (kind, webhook_delivery_id, next_attempt_at)"
        " SELECT 'deliver_webhook', id, now() + interval '1 minute' FROM d",
        (endpoint, PARKED),
    )
    [[leased]] = db.execute(
        "UPDATE sms_outbox SET state = 'leased', lease_owner = 'test-owner', attempts = 1,"
        " lease_expires_at = now() + interval '30 seconds'"
        " WHERE id = (SELECT min(id) FROM sms_outbox) RETURNING id"
    ).fetchall()
    [[plan]] = db.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON)"
        f" EXECUTE delivered(NULL, '{{{int(leased)}}}', '{{1}}', '{{204}}', 'test-owner')"
    ).fetchone() or ((),)
    assert scanned(plan["Plan"], "sms_webhook_deliveries") <= 2  # the one delivered
    assert db.execute(
        "SELECT last_success_at > now() - interval '1 second' FROM sms_webhook_endpoints"
    ).fetchall() == [(True,)]
    assert db.execute("SELECT count(*) FROM sms_outbox").fetchall() == [(PARKED,)]
