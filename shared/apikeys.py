"""API keys: random bearer tokens, kept only as their SHA-256 in sms_api_keys."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection

from shared.queries import q
from shared.senders import Sender

# Longer bearer values are refused without a database look-up.
MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class ApiKey:
    """A key as operators see it (never the key itself)."""

    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None


def generate_key() -> str:
    """A new random key: 32 bytes of entropy, URL-safe text."""
    return secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Lowercase hex SHA-256 of a key, as stored in sms_api_keys.key_sha256."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def plausible(key: str) -> bool:
    """Whether `key` could be one of ours at all (else refused without a look-up)."""
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()


async def create_key(conn: AsyncConnection[Any], name: str) -> tuple[int, str]:
    """Store a new key named `name`; returns (id, key). The key is not recoverable afterwards."""
    key = generate_key()
    async with conn.transaction():
        cur = await conn.execute(q("api_keys_insert"), {"name": name, "key_sha256": hash_key(key)})
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), key


async def authenticate(conn: AsyncConnection[Any], key: str) -> int | None:
    """The id of the active (not revoked) key, or None."""
    if not plausible(key):
        return None
    params = {"key_sha256": hash_key(key)}
    if conn.autocommit:  # one statement: one round trip (the API's request path)
        row = await (await conn.execute(q("api_keys_authenticate"), params)).fetchone()
    else:
        async with conn.transaction():
            row = await (await conn.execute(q("api_keys_authenticate"), params)).fetchone()
    return None if row is None else int(row[0])


async def authenticate_with_default_sender(
    conn: AsyncConnection[Any], key: str
) -> tuple[int | None, Sender | None]:
    """(id of the active key or None, the default sender's row or None) in one statement; `conn`
    in autocommit (the API's send path)."""
    if not plausible(key):
        return None, None
    cur = await conn.execute(
        q("api_keys_authenticate_with_default_sender"), {"key_sha256": hash_key(key)}
    )
    row = await cur.fetchone()
    assert row is not None  # the statement always returns its one row
    key_id = None if row[0] is None else int(row[0])
    sender = None if row[1] is None else Sender(row[1], row[2], row[3], row[4])
    return key_id, sender


async def list_keys(conn: AsyncConnection[Any]) -> list[ApiKey]:
    """Every key, oldest first."""
    async with conn.transaction():
        cur = await conn.execute(q("api_keys_list"))
        rows = await cur.fetchall()
    return [ApiKey(int(r[0]), r[1], r[2], r[3]) for r in rows]


async def revoke_key(conn: AsyncConnection[Any], key_id: int) -> bool:
    """Revoke a key; False when no active key has that id."""
    async with conn.transaction():
        cur = await conn.execute(q("api_keys_revoke"), {"id": key_id})
        row = await cur.fetchone()
    return row is not None


def create_key_sync(conn: psycopg.Connection[Any], name: str) -> tuple[int, str]:
    """create_key for synchronous callers (make run's dev key)."""
    key = generate_key()
    with conn.transaction():
        row = conn.execute(
            q("api_keys_insert"), {"name": name, "key_sha256": hash_key(key)}
        ).fetchone()
    assert row is not None
    return int(row[0]), key


def key_is_active(conn: psycopg.Connection[Any], key: str) -> bool:
    """Whether `key` is a known, unrevoked key (synchronous, for make run)."""
    if not plausible(key):
        return False
    with conn.transaction():
        row = conn.execute(q("api_keys_authenticate"), {"key_sha256": hash_key(key)}).fetchone()
    return row is not None
