"""Bearer authentication: one 401 body for a missing, malformed, wrong or revoked key."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from shared import apikeys
from tests.api_support import (  # noqa: F401 - fixtures are used by name
    TO,
    api_key_fixture,
    app_fixture,
    client_fixture,
    live_fixture,
)

PAYLOAD = {"to": TO, "body": "hi"}


def _expected_401(r: httpx.Response) -> None:
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    errors = r.json()["errors"]
    assert [e["code"] for e in errors] == ["unauthorized"]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer:abc",
        "Basic dXNlcjpwYXNz",
        "Bearer two words",
        "Token abc",
        "Bearer " + "x" * 300,
        "Bearer wrong-key",
    ],
)
def test_missing_malformed_or_wrong_key_is_401(
    client: httpx.Client, api_key: str, authorization: str | None, db: psycopg.Connection[Any]
) -> None:
    """No valid bearer key: 401, and nothing is written."""
    headers = {} if authorization is None else {"Authorization": authorization}
    _expected_401(client.post("/sms/send", json=PAYLOAD, headers=headers))
    assert db.execute("SELECT count(*) FROM sms_messages").fetchone() == (0,)


def test_revoked_key_is_401_with_the_same_body(
    client: httpx.Client, api_key: str, db: psycopg.Connection[Any]
) -> None:
    """A key that worked gets the very 401 body of a wrong key once revoked."""
    headers = {"Authorization": f"Bearer {api_key}"}
    assert client.post("/sms/send", json=PAYLOAD, headers=headers).status_code == 202
    db.execute("UPDATE sms_api_keys SET revoked_at = now()")
    revoked = client.post("/sms/send", json=PAYLOAD, headers=headers)
    wrong = client.post("/sms/send", json=PAYLOAD, headers={"Authorization": "Bearer nope"})
    _expected_401(revoked)
    assert revoked.content == wrong.content


def test_scheme_is_case_insensitive(client: httpx.Client, api_key: str) -> None:
    """`bearer <key>` works like `Bearer <key>` (RFC 7235 schemes are case-insensitive)."""
    r = client.post("/sms/send", json=PAYLOAD, headers={"Authorization": f"bearer {api_key}"})
    assert r.status_code == 202


def test_reading_messages_needs_a_key(client: httpx.Client) -> None:
    """GET /sms/messages/{id} is behind the same authentication."""
    _expected_401(client.get("/sms/messages/00000000-0000-0000-0000-000000000000"))


def test_authentication_comes_before_reading_the_body(client: httpx.Client) -> None:
    """An anonymous oversized or non-JSON request learns nothing but 401."""
    r = client.post("/sms/send", content=b"x" * 100_000, headers={"Content-Type": "text/plain"})
    _expected_401(r)


def test_hash_is_what_is_stored(db: psycopg.Connection[Any]) -> None:
    """The database keeps the SHA-256 of a key, never the key."""
    key_id, key = apikeys.create_key_sync(db, "stored")
    row = db.execute("SELECT key_sha256 FROM sms_api_keys WHERE id = %s", (key_id,)).fetchone()
    assert row == (apikeys.hash_key(key),) and key not in row[0]
    assert apikeys.key_is_active(db, key) and not apikeys.key_is_active(db, key + "x")
