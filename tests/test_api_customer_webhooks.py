"""/sms/webhooks on a live server: registration rules (400 naming the field, nothing written),
list with health and never a secret, delete, rotate, test through the outbox to a verifying
receiver, and tenancy (another key's endpoint is a 404). Names resolve through a stub; the only
traffic is to 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest

from api.app import create_app
from dispatcher.webhook_http import session as webhook_session
from dispatcher.webhooks import WebhookWorker
from shared import apikeys
from shared.config import Settings
from shared.db import open_pool
from shared.webhook_registration import MAX_ENDPOINTS_PER_KEY
from tests.api_support import (  # noqa: F401 - fixtures are used by name
    LiveServer,
    api_key_fixture,
    app_fixture,
    auth_fixture,
    client_fixture,
    errors,
    live_fixture,
)
from tests.fixtures_sim import SimHandle
from tests.webhook_support import offline_resolver

URL = "https://hooks.example.com/sms-events"


def _headers(
    db: psycopg.Connection[Any], name: str, role: apikeys.Role = "sender"
) -> dict[str, str]:
    _, key = apikeys.create_key_sync(db, name, role=role)
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _count(db: psycopg.Connection[Any], table: str = "sms_webhook_endpoints") -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def _create(client: httpx.Client, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    r = client.post("/sms/webhooks", json={"url": URL, **body}, headers=auth)
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


@pytest.fixture(name="loopback_client")
def loopback_client_fixture(settings: Settings) -> Iterator[httpx.Client]:
    """A live API that allows private addresses (WEBHOOK_ALLOW_PRIVATE_URLS), as `make run`."""
    allowing = dataclasses.replace(settings, webhook_allow_private_urls=True)
    with (
        LiveServer(create_app(allowing, resolve=offline_resolver)) as live,
        httpx.Client(base_url=live.url, timeout=10) as client,
    ):
        yield client


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({}, "url", "required"),
        ({"url": "not a url"}, "url", "invalid_url"),
        ({"url": "hooks.example.com/x"}, "url", "invalid_url"),
        ({"url": "ftp://hooks.example.com/x"}, "url", "invalid_url"),
        ({"url": 42}, "url", "invalid_type"),
        ({"url": "https://user:pw@hooks.example.com/x"}, "url", "invalid_url"),
        ({"url": "http://hooks.example.com/x"}, "url", "https_required"),
        ({"url": "https://intranet.example.com/x"}, "url", "address_not_allowed"),
        ({"url": "https://mixed.example.com/x"}, "url", "address_not_allowed"),
        ({"url": "https://metadata.example.com/x"}, "url", "address_not_allowed"),
        ({"url": "https://10.20.30.40/x"}, "url", "address_not_allowed"),
        ({"url": "https://[::1]/x"}, "url", "address_not_allowed"),
        # Loopback is plain http's exception, not the address rule's.
        ({"url": "http://127.0.0.1:9/x"}, "url", "address_not_allowed"),
        ({"url": "https://nowhere.invalid/x"}, "url", "unresolvable_host"),
        ({"url": URL, "events": ["message.sent", "message.bogus"]}, "events[1]", "unknown_event"),
        ({"url": URL, "events": "message.sent"}, "events", "invalid_type"),
        ({"url": URL, "secret": "whsec_mine"}, "secret", "unknown_field"),
    ],
)
def test_a_bad_registration_is_400_naming_the_field_and_writes_nothing(
    client: httpx.Client,
    auth: dict[str, str],
    db: psycopg.Connection[Any],
    body: dict[str, Any],
    field: str,
    code: str,
) -> None:
    """Not a URL, not http(s), credentials, http to a public host, a private, link-local or
    loopback address (literal or resolved, one bad address among good ones too), a name that
    does not resolve, an unknown event or field: 400 with that field and code, no row."""
    r = client.post("/sms/webhooks", json=body, headers=auth)
    assert (field, code) in errors(r)
    assert _count(db) == 0


def test_every_problem_is_listed_at_once(client: httpx.Client, auth: dict[str, str]) -> None:
    """A bad URL, a bad event and an unknown field come back together."""
    r = client.post(
        "/sms/webhooks",
        json={"url": "ftp://x", "events": ["nope"], "extra": 1},
        headers=auth,
    )
    assert errors(r) == {
        ("url", "invalid_url"),
        ("events[0]", "unknown_event"),
        ("extra", "unknown_field"),
    }


def test_allow_http_webhooks_accepts_http_to_a_public_host(
    settings: Settings, auth: dict[str, str]
) -> None:
    """ALLOW_HTTP_WEBHOOKS lifts the https rule (the address rule stays)."""
    http_ok = dataclasses.replace(settings, allow_http_webhooks=True)
    with (
        LiveServer(create_app(http_ok, resolve=offline_resolver)) as live,
        httpx.Client(base_url=live.url, timeout=10) as client,
    ):
        r = client.post("/sms/webhooks", json={"url": "http://hooks.example.com/x"}, headers=auth)
        assert r.status_code == 201, r.text
        r = client.post(
            "/sms/webhooks", json={"url": "http://intranet.example.com/x"}, headers=auth
        )
        assert errors(r) == {("url", "address_not_allowed")}


def test_create_list_rotate_and_delete(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """201 shows the secret once; the list has the health and no secret; a rotation returns a
    new secret and keeps the old one signing for 24 h; delete is 204, then 404."""
    made = _create(client, auth, events=["message.failed", "message.delivered", "message.failed"])
    assert made["secret"].startswith("whsec_")
    assert made["events"] == ["message.failed", "message.delivered"]
    assert made["enabled"] is True and made["previous_secret_expires_at"] is None
    assert made["health"] == {
        "last_success_at": None,
        "last_failure_at": None,
        "last_error": None,
        "failing_since": None,
        "pending": 0,
        "oldest_pending_seconds": None,
    }
    listed = client.get("/sms/webhooks", headers=auth)
    assert listed.status_code == 200
    assert listed.json() == {"webhooks": [{k: v for k, v in made.items() if k != "secret"}]}
    assert "whsec_" not in listed.text

    rotated = client.post(f"/sms/webhooks/{made['id']}/rotate-secret", headers=auth)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["secret"].startswith("whsec_") and new["secret"] != made["secret"]
    row = db.execute(
        "SELECT secret, previous_secret, previous_secret_expires_at - now()"
        " FROM sms_webhook_endpoints WHERE id = %s",
        (made["id"],),
    ).fetchone()
    assert row is not None
    assert row[0] == new["secret"] and row[1] == made["secret"]
    assert timedelta(hours=23, minutes=59) < row[2] <= timedelta(hours=24)
    again = client.get("/sms/webhooks", headers=auth).json()["webhooks"][0]
    assert again["previous_secret_expires_at"] == new["previous_secret_expires_at"] is not None

    assert client.delete(f"/sms/webhooks/{made['id']}", headers=auth).status_code == 204
    assert client.get("/sms/webhooks", headers=auth).json() == {"webhooks": []}
    assert client.delete(f"/sms/webhooks/{made['id']}", headers=auth).status_code == 404
    assert _count(db) == 0


def test_delete_drops_pending_deliveries(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Removing an endpoint removes its deliveries and their outbox work."""
    made = _create(client, auth)
    assert client.post(f"/sms/webhooks/{made['id']}/test", headers=auth).status_code == 202
    listed = client.get("/sms/webhooks", headers=auth).json()["webhooks"]
    assert listed[0]["health"]["pending"] == 1
    assert client.delete(f"/sms/webhooks/{made['id']}", headers=auth).status_code == 204
    assert _count(db, "sms_webhook_deliveries") == 0
    assert _count(db, "sms_outbox") == 0


def test_another_keys_endpoint_is_404_and_an_operator_sees_all(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """Key B neither lists, deletes, rotates nor tests key A's endpoint: the same 404 as an
    unknown id. An operator key lists every key's and may remove any."""
    alice, bob = _headers(db, "alice"), _headers(db, "bob")
    ops = _headers(db, "ops", role="operator")
    mine = _create(client, alice)
    assert client.get("/sms/webhooks", headers=bob).json() == {"webhooks": []}
    unknown = client.delete("/sms/webhooks/999999", headers=bob)
    assert unknown.status_code == 404
    for method, path in [
        ("DELETE", f"/sms/webhooks/{mine['id']}"),
        ("POST", f"/sms/webhooks/{mine['id']}/rotate-secret"),
        ("POST", f"/sms/webhooks/{mine['id']}/test"),
    ]:
        r = client.request(method, path, headers=bob)
        assert r.status_code == 404 and r.json() == unknown.json(), (method, path)
    row = db.execute("SELECT secret, previous_secret FROM sms_webhook_endpoints").fetchone()
    assert row == (mine["secret"], None)
    assert _count(db, "sms_webhook_deliveries") == 0

    theirs = _create(client, bob)
    seen = client.get("/sms/webhooks", headers=ops).json()["webhooks"]
    assert [e["id"] for e in seen] == [mine["id"], theirs["id"]]
    assert client.delete(f"/sms/webhooks/{theirs['id']}", headers=ops).status_code == 204
    assert [e["id"] for e in client.get("/sms/webhooks", headers=alice).json()["webhooks"]] == [
        mine["id"]
    ]


@pytest.mark.parametrize("bad", ["abc", "0x1", "99999999999999999999", "-1"])
def test_an_id_that_cannot_be_one_is_404(
    client: httpx.Client, auth: dict[str, str], bad: str
) -> None:
    """A path id that is no positive integer within bigint is an unknown endpoint."""
    assert client.post(f"/sms/webhooks/{bad}/test", headers=auth).status_code == 404


def test_a_key_has_at_most_the_endpoint_limit(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """The next registration past MAX_ENDPOINTS_PER_KEY is 409 endpoint_limit_reached."""
    for _ in range(MAX_ENDPOINTS_PER_KEY):
        _create(client, auth)
    r = client.post("/sms/webhooks", json={"url": URL}, headers=auth)
    assert r.status_code == 409 and r.json()["errors"][0]["code"] == "endpoint_limit_reached"
    assert _count(db) == MAX_ENDPOINTS_PER_KEY


def test_no_test_event_to_a_disabled_endpoint(
    client: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A disabled endpoint's test is 409 endpoint_disabled and queues nothing."""
    made = _create(client, auth)
    db.execute(
        "UPDATE sms_webhook_endpoints SET enabled = false, disabled_at = now(),"
        " disabled_reason = 'answered 410 Gone' WHERE id = %s",
        (made["id"],),
    )
    r = client.post(f"/sms/webhooks/{made['id']}/test", headers=auth)
    assert r.status_code == 409 and r.json()["errors"][0]["code"] == "endpoint_disabled"
    assert _count(db, "sms_webhook_deliveries") == 0


def test_a_test_event_goes_through_the_outbox_signed_to_the_sink(
    loopback_client: httpx.Client,
    auth: dict[str, str],
    settings: Settings,
    sim: SimHandle,
) -> None:
    """POST .../test queues a webhook.test delivery (whatever the endpoint's events); one
    webhook-loop iteration POSTs it to the simulator's sink, which verifies its signature."""
    url = f"{sim.base_url}/_sim/webhooks/app"
    made = _create(loopback_client, auth, url=url, events=["message.failed"])
    sim.configure(webhook_secrets={"app": made["secret"]})
    r = loopback_client.post(f"/sms/webhooks/{made['id']}/test", headers=auth)
    assert r.status_code == 202, r.text
    queued = r.json()
    assert queued["type"] == "webhook.test" and queued["endpoint_id"] == made["id"]

    async def deliver() -> None:
        pool = await open_pool(settings.database_url, application_name="test", max_size=2)
        async with webhook_session(2, settings.webhook_timeout_seconds) as http:
            allowing = dataclasses.replace(settings, webhook_allow_private_urls=True)
            worker = WebhookWorker(pool, allowing, "test:1:a", http=http, resolve=offline_resolver)
            stats = await worker.run_once()
            assert stats.outcomes == {"delivered": 1}
        await pool.close()

    asyncio.run(deliver())
    got = httpx.get(f"{sim.base_url}/_sim/webhooks", params={"name": "app"}).json()["webhooks"]
    assert len(got) == 1
    assert got[0]["verified"] is True and got[0]["webhook_id"] == queued["webhook_id"]
    assert got[0]["body"]["type"] == "webhook.test"
    assert got[0]["body"]["data"] == {"endpoint_id": made["id"]}
    health = loopback_client.get("/sms/webhooks", headers=auth).json()["webhooks"][0]["health"]
    assert health["pending"] == 0 and health["last_success_at"] is not None
