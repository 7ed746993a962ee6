"""authenticate_with_default_sender: the key (with its role, limits and countries) and the
default sender in one autocommit read."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg import AsyncConnection

from shared import apikeys
from shared.apikeys import Caller, KeyLimits
from shared.senders import Sender


def _read(db_url: str, key: str) -> tuple[int | None, Sender | None]:
    async def go() -> tuple[Caller | None, Sender | None]:
        async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
            return await apikeys.authenticate_with_default_sender(conn, key)

    caller, sender = asyncio.run(go())
    return (None if caller is None else caller.id), sender


def test_key_and_default_sender(db_url: str, db: psycopg.Connection[Any]) -> None:
    """An active key yields its id and the default sender; a revoked or wrong key yields None."""
    key_id, key = apikeys.create_key_sync(db, "t")
    db.execute(
        "INSERT INTO sms_senders (phone_number, provider, is_default) VALUES"
        " ('+15005550006', 'twilio', true)"
    )
    assert _read(db_url, key) == (key_id, Sender("+15005550006", "twilio", True, True))
    assert _read(db_url, key + "x")[0] is None
    assert _read(db_url, "bad key")[0] is None
    db.execute("UPDATE sms_senders SET is_default = false")
    assert _read(db_url, key) == (key_id, None)
    db.execute("UPDATE sms_api_keys SET revoked_at = now()")
    assert _read(db_url, key) == (None, None)


def test_role_limits_and_countries_come_with_the_key(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """The same one read yields the key's role, limits and countries."""
    limits = KeyLimits(rate_per_minute=60, daily_message_limit=1000, recipient_hourly_limit=3)
    key_id, key = apikeys.create_key_sync(
        db, "ops", role="operator", limits=limits, countries=frozenset({"US", "CA"})
    )

    async def go() -> tuple[Caller | None, Sender | None]:
        async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
            return await apikeys.authenticate_with_default_sender(conn, key)

    caller, _ = asyncio.run(go())
    assert caller == Caller(key_id, "operator", limits, frozenset({"US", "CA"}))
    assert caller.owner is None
