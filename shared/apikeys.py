"""API keys: random bearer tokens, kept only as their SHA-256 in sms_api_keys, each with a role
(sender: its own messages; operator: every message) and its limits."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import psycopg
from psycopg import AsyncConnection

from shared.queries import q
from shared.senders import Sender

# Longer bearer values are refused without a database look-up.
MAX_KEY_LENGTH = 200
ROLES: Final = ("sender", "operator")
Role = Literal["sender", "operator"]


@dataclass(frozen=True)
class KeyLimits:
    """A key's limits; None = no limit (DESIGN section 12)."""

    rate_per_minute: int | None = None  # send requests per UTC minute (a batch is one)
    daily_message_limit: int | None = None  # messages created per UTC day
    recipient_hourly_limit: int | None = None  # messages to one recipient, trailing hour


@dataclass(frozen=True)
class Caller:
    """The authenticated key of a request: who it is, what it may see, what it may spend."""

    id: int
    role: Role
    limits: KeyLimits
    countries: frozenset[str] | None  # sms_api_keys.allowed_countries; None = every allowed one

    @property
    def owner(self) -> int | None:
        """The key whose messages this caller may see and act on; None (every key's) for an
        operator. The queries take it as their tenancy guard."""
        return None if self.role == "operator" else self.id

    def allowed_countries(self, configured: frozenset[str]) -> frozenset[str] | None:
        """The regions this key may text: its own list within ALLOWED_COUNTRIES (`configured`,
        empty = any). None = any region; an empty set = none (its list lies wholly outside)."""
        if self.countries is None:
            return configured or None
        return self.countries & configured if configured else self.countries


@dataclass(frozen=True)
class ApiKey:
    """A key as operators see it (never the key itself)."""

    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None
    role: str
    limits: KeyLimits
    countries: frozenset[str] | None


def generate_key() -> str:
    """A new random key: 32 bytes of entropy, URL-safe text."""
    return secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Lowercase hex SHA-256 of a key, as stored in sms_api_keys.key_sha256."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def plausible(key: str) -> bool:
    """Whether `key` could be one of ours at all (else refused without a look-up)."""
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()


def _countries(value: Sequence[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def _caller(row: Sequence[Any]) -> Caller:
    """A Caller from (id, role, rate_per_minute, daily_message_limit, recipient_hourly_limit,
    allowed_countries)."""
    return Caller(int(row[0]), row[1], KeyLimits(row[2], row[3], row[4]), _countries(row[5]))


def _api_key(row: Sequence[Any]) -> ApiKey:
    limits = KeyLimits(row[5], row[6], row[7])
    return ApiKey(int(row[0]), row[1], row[2], row[3], row[4], limits, _countries(row[8]))


def _insert_params(
    name: str, key: str, role: Role, limits: KeyLimits, countries: frozenset[str] | None
) -> dict[str, Any]:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    return {
        "name": name,
        "key_sha256": hash_key(key),
        "role": role,
        "rate_per_minute": limits.rate_per_minute,
        "daily_message_limit": limits.daily_message_limit,
        "recipient_hourly_limit": limits.recipient_hourly_limit,
        "allowed_countries": None if countries is None else sorted(countries),
    }


async def create_key(
    conn: AsyncConnection[Any],
    name: str,
    *,
    role: Role = "sender",
    limits: KeyLimits = KeyLimits(),
    countries: frozenset[str] | None = None,
) -> tuple[int, str]:
    """Store a new key named `name`; returns (id, key). The key is not recoverable afterwards."""
    key = generate_key()
    async with conn.transaction():
        params = _insert_params(name, key, role, limits, countries)
        cur = await conn.execute(q("api_keys_insert"), params)
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), key


async def authenticate(conn: AsyncConnection[Any], key: str) -> Caller | None:
    """The active (not revoked) key with its role and limits, or None."""
    if not plausible(key):
        return None
    params = {"key_sha256": hash_key(key)}
    if conn.autocommit:  # one statement: one round trip (the API's request path)
        row = await (await conn.execute(q("api_keys_authenticate"), params)).fetchone()
    else:
        async with conn.transaction():
            row = await (await conn.execute(q("api_keys_authenticate"), params)).fetchone()
    return None if row is None else _caller(row)


# What the send paths read with a key: the active key or None, the default sender or None.
KeyRead = tuple[Caller | None, Sender | None]


async def authenticate_with_default_sender(conn: AsyncConnection[Any], key: str) -> KeyRead:
    """(the active key or None, the default sender's row or None) in one statement; `conn` in
    autocommit (the API's send path)."""
    if not plausible(key):
        return None, None
    (found,) = await authenticate_many(conn, [hash_key(key)])
    return found


async def authenticate_many(conn: AsyncConnection[Any], key_hashes: Sequence[str]) -> list[KeyRead]:
    """authenticate_with_default_sender for each of `key_hashes` (hash_key's), in one statement,
    in their order; `conn` in autocommit."""
    cur = await conn.execute(q("api_keys_authenticate_many"), {"key_sha256": list(key_hashes)})
    found: list[KeyRead] = []
    for row in await cur.fetchall():
        caller = None if row[0] is None else _caller(row[:6])
        sender = None if row[6] is None else Sender(row[6], row[7], row[8], row[9])
        found.append((caller, sender))
    if len(found) != len(key_hashes):  # pragma: no cover - one row per hash, by the statement
        raise RuntimeError(f"read {len(found)} keys of {len(key_hashes)}")
    return found


async def list_keys(conn: AsyncConnection[Any]) -> list[ApiKey]:
    """Every key, oldest first."""
    async with conn.transaction():
        cur = await conn.execute(q("api_keys_list"))
        rows = await cur.fetchall()
    return [_api_key(r) for r in rows]


# What set_limits may change: the three limits and the countries.
LIMIT_FIELDS: Final = (
    "rate_per_minute",
    "daily_message_limit",
    "recipient_hourly_limit",
    "allowed_countries",
)


async def set_limits(
    conn: AsyncConnection[Any],
    key_id: int,
    changes: Mapping[str, int | frozenset[str] | None],
) -> ApiKey | None:
    """Change the limits named in `changes` (LIMIT_FIELDS; a None value removes that limit),
    keep the others; the key as it is now, or None when no active key has that id."""
    unknown = set(changes) - set(LIMIT_FIELDS)
    if unknown:
        raise ValueError(f"not a limit: {', '.join(sorted(unknown))}")
    params: dict[str, Any] = {"id": key_id}
    for name in LIMIT_FIELDS:
        value = changes.get(name)
        params[f"set_{name}"] = name in changes
        params[name] = sorted(value) if isinstance(value, frozenset) else value
    async with conn.transaction():
        cur = await conn.execute(q("api_keys_set_limits"), params)
        row = await cur.fetchone()
    return None if row is None else _api_key(row)


async def revoke_key(conn: AsyncConnection[Any], key_id: int) -> bool:
    """Revoke a key; False when no active key has that id. Its webhook endpoints are disabled in
    the same transaction (their pending deliveries dropped): a revoked key's events go nowhere."""
    async with conn.transaction():
        cur = await conn.execute(q("api_keys_revoke"), {"id": key_id})
        row = await cur.fetchone()
        if row is not None:
            hooks = await conn.execute(q("webhook_endpoints_of_key"), {"api_key_id": key_id})
            endpoints = await hooks.fetchall()
            if endpoints:  # their positions behind the fan-out hold still (migration 0021)
                await conn.execute(q("webhook_endpoints_lock_fanout"))
            for (endpoint_id,) in endpoints:
                await conn.execute(
                    q("webhook_endpoints_disable"),
                    {"now": None, "endpoint_id": endpoint_id, "reason": "API key revoked"},
                )
    return row is not None


def create_key_sync(
    conn: psycopg.Connection[Any],
    name: str,
    *,
    role: Role = "sender",
    limits: KeyLimits = KeyLimits(),
    countries: frozenset[str] | None = None,
) -> tuple[int, str]:
    """create_key for synchronous callers (make run's dev key, tests)."""
    key = generate_key()
    with conn.transaction():
        params = _insert_params(name, key, role, limits, countries)
        row = conn.execute(q("api_keys_insert"), params).fetchone()
    assert row is not None
    return int(row[0]), key


def key_is_active(conn: psycopg.Connection[Any], key: str) -> bool:
    """Whether `key` is a known, unrevoked key (synchronous, for make run)."""
    if not plausible(key):
        return False
    with conn.transaction():
        row = conn.execute(q("api_keys_authenticate"), {"key_sha256": hash_key(key)}).fetchone()
    return row is not None
