"""authenticate_with_default_sender: the key and the default sender in one autocommit read."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg import AsyncConnection

from shared import apikeys
from shared.senders import Sender


def _read(db_url: str, key: str) -> tuple[int | None, Sender | None]:
    async def go() -> tuple[int | None, Sender | None]:
        async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
            return await apikeys.authenticate_with_default_sender(conn, key)

    return asyncio.run(go())


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
