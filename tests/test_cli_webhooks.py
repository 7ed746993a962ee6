"""smsctl webhooks: add (secret once on stdout, the registration rules), list with health,
remove, rotate, enable, test, and replay of what an endpoint missed (same webhook-id, delivered
again through the outbox to a verifying receiver on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import httpx
import psycopg
import pytest

from dispatcher.webhook_http import session as webhook_session
from dispatcher.webhooks import WebhookWorker
from shared import apikeys
from shared.config import Settings
from shared.db import open_pool
from tests.fixtures_sim import SimHandle
from tests.webhook_support import offline_resolver
from tooling.cli import main

# Literal addresses: the CLI resolves names with the system resolver, and tests reach no DNS.
PUBLIC = "https://93.184.215.14/hooks"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    for name in ("WEBHOOK_ALLOW_PRIVATE_URLS", "ALLOW_HTTP_WEBHOOKS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(name="key_id")
def key_id_fixture(db: psycopg.Connection[Any]) -> int:
    key_id, _ = apikeys.create_key_sync(db, "app")
    return int(key_id)


def _add(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`smsctl webhooks add ...`: (the new endpoint's id, its secret)."""
    assert main(["webhooks", "add", *argv]) == 0
    out, err = capsys.readouterr()
    assert "shown only this once" in err
    endpoint = int(err.split("webhook endpoint ", 1)[1].split(" ", 1)[0])
    return endpoint, out.strip()


def _one(db: psycopg.Connection[Any], sql: str, *params: Any) -> Any:
    row = db.execute(sql, params).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else tuple(row)


def test_add_prints_the_secret_once_and_stores_the_events(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any], key_id: int
) -> None:
    """stdout is the secret alone; the endpoint belongs to --key with the --events given."""
    endpoint, secret = _add(
        capsys, PUBLIC, "--key", str(key_id), "--events", "message.failed, message.expired"
    )
    assert secret.startswith("whsec_") and "\n" not in secret
    row = _one(db, "SELECT api_key_id, url, secret, events FROM sms_webhook_endpoints")
    assert row == (key_id, PUBLIC, secret, ["message.failed", "message.expired"])
    assert endpoint == _one(db, "SELECT id FROM sms_webhook_endpoints")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["https://10.0.0.8/x"], "URL: address_not_allowed"),
        (["http://127.0.0.1:9/x"], "URL: address_not_allowed"),
        (["http://93.184.215.14/x"], "URL: https_required"),
        (["ftp://93.184.215.14/x"], "URL: invalid_url"),
        ([PUBLIC, "--events", "message.sent,message.lost"], "--events[1]: unknown_event"),
    ],
)
def test_add_refuses_what_the_api_refuses(
    capsys: pytest.CaptureFixture[str],
    db: psycopg.Connection[Any],
    key_id: int,
    argv: list[str],
    expected: str,
) -> None:
    """The API's rules: exit 2 naming the problem, nothing written."""
    assert main(["webhooks", "add", *argv, "--key", str(key_id)]) == 2
    assert expected in capsys.readouterr().err
    assert _one(db, "SELECT count(*) FROM sms_webhook_endpoints") == 0


def test_add_to_loopback_with_private_urls_allowed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key_id: int
) -> None:
    """WEBHOOK_ALLOW_PRIVATE_URLS admits http to loopback (what `make run` registers)."""
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE_URLS", "true")
    _add(capsys, "http://127.0.0.1:8010/_sim/webhooks/dev", "--key", str(key_id))


def test_add_for_an_unknown_or_revoked_key_is_refused(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any], key_id: int
) -> None:
    """Exit 1 for a key that does not exist or is revoked; nothing written."""
    assert main(["webhooks", "add", PUBLIC, "--key", "424242"]) == 1
    db.execute("UPDATE sms_api_keys SET revoked_at = now() WHERE id = %s", (key_id,))
    assert main(["webhooks", "add", PUBLIC, "--key", str(key_id)]) == 1
    assert "revoked" in capsys.readouterr().err
    assert _one(db, "SELECT count(*) FROM sms_webhook_endpoints") == 0


def test_list_shows_health_and_never_a_secret(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any], key_id: int
) -> None:
    """list (text and --json, --key) has each endpoint's backlog and last error, no secret."""
    endpoint, secret = _add(capsys, PUBLIC, "--key", str(key_id))
    other, _ = apikeys.create_key_sync(db, "other")
    _add(capsys, PUBLIC + "/2", "--key", str(other))
    assert main(["webhooks", "test", str(endpoint)]) == 0
    db.execute(
        "UPDATE sms_webhook_endpoints SET last_error = 'answered HTTP 500',"
        " last_failure_at = now(), failing_since = now() WHERE id = %s",
        (endpoint,),
    )
    capsys.readouterr()
    assert main(["webhooks", "list", "--json", "--key", str(key_id)]) == 0
    out = capsys.readouterr().out
    (row,) = json.loads(out)
    assert row["id"] == endpoint and row["pending"] == 1
    assert row["last_error"] == "answered HTTP 500" and row["failing_since"] is not None
    assert secret not in out and "whsec_" not in out
    assert main(["webhooks", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t")[:3] == ["id", "api_key_id", "url"] and len(lines) == 3
    assert "whsec_" not in "".join(lines)


def test_rotate_prints_a_new_secret_and_keeps_the_old_one_for_a_day(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any], key_id: int
) -> None:
    """rotate: the new secret on stdout; the old one is previous_secret for 24 h."""
    endpoint, old = _add(capsys, PUBLIC, "--key", str(key_id))
    assert main(["webhooks", "rotate", str(endpoint)]) == 0
    new = capsys.readouterr().out.strip()
    assert new.startswith("whsec_") and new != old
    row = _one(
        db,
        "SELECT secret, previous_secret, previous_secret_expires_at > now() + interval '23 h'"
        " FROM sms_webhook_endpoints",
    )
    assert row == (new, old, True)
    assert main(["webhooks", "rotate", "999"]) == 1


def test_remove_deletes_the_endpoint(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any], key_id: int
) -> None:
    """remove: gone with its deliveries; a second remove exits 1, a bad id 2."""
    endpoint, _ = _add(capsys, PUBLIC, "--key", str(key_id))
    assert main(["webhooks", "test", str(endpoint)]) == 0
    assert main(["webhooks", "remove", str(endpoint)]) == 0
    assert _one(db, "SELECT count(*) FROM sms_webhook_deliveries") == 0
    assert main(["webhooks", "remove", str(endpoint)]) == 1
    assert main(["webhooks", "remove", "twelve"]) == 2


def _deliveries(
    db: psycopg.Connection[Any], endpoint: int, *ages_and_states: tuple[int, str]
) -> list[str]:
    """Make deliveries of `endpoint` (hours old, state), as the loop leaves them; their ids."""
    ids = []
    for hours, state in ages_and_states:
        row = db.execute(
            "INSERT INTO sms_webhook_deliveries (endpoint_id, event_type, payload, occurred_at,"
            " created_at, state, attempts, last_error, delivered_at)"
            " VALUES (%(e)s, 'message.sent', jsonb_build_object('type', 'message.sent',"
            " 'timestamp', '2026-01-01T00:00:00.000000Z', 'data', jsonb_build_object('hours',"
            " %(h)s::int)), now() - make_interval(hours => %(h)s), now() - make_interval(hours =>"
            " %(h)s), %(s)s, 9, CASE WHEN %(s)s = 'failed' THEN 'no answer' END,"
            " CASE WHEN %(s)s = 'delivered' THEN now() END) RETURNING id",
            {"e": endpoint, "h": hours, "s": state},
        ).fetchone()
        assert row is not None
        ids.append(str(row[0]))
    return ids


def _outbox(db: psycopg.Connection[Any]) -> set[str]:
    rows = db.execute("SELECT webhook_delivery_id FROM sms_outbox").fetchall()
    return {str(r[0]) for r in rows}


def test_replay_requeues_what_failed_since_then_with_the_same_webhook_id(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    db: psycopg.Connection[Any],
    settings: Settings,
    sim: SimHandle,
    key_id: int,
) -> None:
    """replay --since 2h: the failed deliveries of the last 2 h (not older ones, not delivered
    ones unless --delivered) are pending again with new outbox work; the loop delivers them
    with their old webhook-id, and the sink verifies them."""
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE_URLS", "true")
    endpoint, secret = _add(capsys, f"{sim.base_url}/_sim/webhooks/replay", "--key", str(key_id))
    recent, old, done = _deliveries(db, endpoint, (1, "failed"), (5, "failed"), (1, "delivered"))
    assert main(["webhooks", "replay", str(endpoint), "--since", "2h"]) == 0
    out = capsys.readouterr().out.split()
    assert out == ["msg_" + recent.replace("-", "")]
    assert _outbox(db) == {recent}
    assert _one(db, "SELECT state FROM sms_webhook_deliveries WHERE id = %s", recent) == "pending"

    sim.configure(webhook_secrets={"replay": secret})

    async def deliver() -> None:
        pool = await open_pool(settings.database_url, application_name="test", max_size=2)
        async with webhook_session(2, settings.webhook_timeout_seconds) as http:
            allowing = dataclasses.replace(settings, webhook_allow_private_urls=True)
            worker = WebhookWorker(pool, allowing, "test:1:a", http=http, resolve=offline_resolver)
            assert (await worker.run_once()).outcomes == {"delivered": 1}
        await pool.close()

    asyncio.run(deliver())
    (got,) = httpx.get(f"{sim.base_url}/_sim/webhooks").json()["webhooks"]
    assert got["webhook_id"] == out[0] and got["verified"] is True

    assert main(["webhooks", "replay", str(endpoint), "--since", "6h", "--delivered"]) == 0
    assert len(capsys.readouterr().out.split()) == 3  # the recent one again, the old, the done
    assert _outbox(db) == {recent, old, done}
    assert main(["webhooks", "replay", str(endpoint), "--since", "soon"]) == 2


def test_replay_needs_an_enabled_endpoint_and_enable_restores_it(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any], key_id: int
) -> None:
    """A disabled endpoint's replay exits 1 (enable it first); enable makes it healthy and
    enabled, after which the replay queues what was dropped."""
    endpoint, _ = _add(capsys, PUBLIC, "--key", str(key_id))
    (dropped,) = _deliveries(db, endpoint, (1, "failed"))
    db.execute(
        "UPDATE sms_webhook_endpoints SET enabled = false, disabled_at = now(),"
        " disabled_reason = 'answered 410 Gone', failing_since = now() - interval '80 h'"
        " WHERE id = %s",
        (endpoint,),
    )
    assert main(["webhooks", "test", str(endpoint)]) == 1
    assert main(["webhooks", "replay", str(endpoint), "--since", "1d"]) == 1
    assert "smsctl webhooks enable" in capsys.readouterr().err
    assert _outbox(db) == set()
    assert main(["webhooks", "enable", str(endpoint)]) == 0
    row = _one(db, "SELECT enabled, disabled_reason, failing_since FROM sms_webhook_endpoints")
    assert row == (True, None, None)
    assert main(["webhooks", "enable", str(endpoint)]) == 0
    assert "enabled already" in capsys.readouterr().err
    assert main(["webhooks", "replay", str(endpoint), "--since", "1d"]) == 0
    assert _outbox(db) == {dropped}
    assert main(["webhooks", "enable", "31337"]) == 1
