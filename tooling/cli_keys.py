"""smsctl api-keys create|list|set-limits|revoke: API keys, their role and their limits."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any, Final

import phonenumbers
from psycopg import AsyncConnection

from shared import apikeys
from shared.apikeys import KeyLimits
from shared.config import MAX_KEY_LIMIT, Settings
from tooling.cli_reports import OK, REFUSED, USAGE, fail, print_json, print_table

COLUMNS: Final = ("id", "name", "role", "rate_per_minute", "daily_message_limit",
                  "recipient_hourly_limit", "countries", "created_at", "revoked_at")  # fmt: skip
# The options of create and set-limits, and the KeyLimits / set_limits field each one sets.
LIMIT_OPTIONS: Final = {
    "rate_per_minute": ("--rate-per-minute", "send requests per UTC minute (a batch is one)"),
    "daily_message_limit": ("--daily-limit", "messages per UTC day (a batch counts each)"),
    "recipient_hourly_limit": (
        "--recipient-hourly-limit",
        "messages to one recipient in any trailing hour",
    ),
}
NONE: Final = "none"


def add_commands(commands: Any) -> None:
    """Register `smsctl api-keys ...` on the top-level subparsers."""
    keys = commands.add_parser("api-keys", help="create, list, limit and revoke API keys")
    sub = keys.add_subparsers(dest="key_command", required=True)
    create = sub.add_parser(
        "create",
        help="create a key and print it (once) on stdout; limits not given are the "
        "API_KEY_DEFAULT_* settings",
    )
    create.add_argument("name", help="who the key is for")
    create.add_argument(
        "--operator",
        action="store_true",
        help="sees and acts on every key's messages (default: a sender key, its own only)",
    )
    _limit_options(create)
    create.set_defaults(func=create_command)
    listing = sub.add_parser("list", help="keys with their role and limits (never the keys)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    listing.set_defaults(func=list_command)
    limits = sub.add_parser(
        "set-limits", help="change a key's limits from its next request on (none = no limit)"
    )
    limits.add_argument("id", type=int)
    _limit_options(limits)
    limits.set_defaults(func=set_limits_command)
    revoke = sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(func=revoke_command)


def _limit_options(parser: argparse.ArgumentParser) -> None:
    for name, (option, text) in LIMIT_OPTIONS.items():
        parser.add_argument(option, dest=name, metavar="N|none", help=text)
    parser.add_argument(
        "--countries",
        metavar="CC,CC|none",
        help="ISO regions this key may text, within ALLOWED_COUNTRIES (none: all of those)",
    )


def parse_limit(text: str, option: str) -> int | None:
    """A limit option's value: a whole number from 1, or `none`; ValueError names the option."""
    if text.strip().lower() == NONE:
        return None
    raw = text.strip()
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_KEY_LIMIT:
        raise ValueError(f"{option} must be a whole number from 1 to {MAX_KEY_LIMIT} or none")
    return int(raw)


def parse_countries(text: str) -> frozenset[str] | None:
    """--countries: comma-separated ISO 3166 alpha-2 regions, or `none`; ValueError otherwise."""
    if text.strip().lower() == NONE:
        return None
    regions = frozenset(part.strip().upper() for part in text.split(",") if part.strip())
    unknown = sorted(regions - phonenumbers.SUPPORTED_REGIONS)
    if not regions or unknown:
        raise ValueError(
            f"--countries must list ISO regions such as US,CA (or be none); "
            f"unknown: {', '.join(unknown) or '(empty)'}"
        )
    return regions


def _limits_given(args: argparse.Namespace) -> dict[str, int | None]:
    """The limits the options name, by KeyLimits field (ValueError for a malformed one)."""
    return {
        name: parse_limit(getattr(args, name), option)
        for name, (option, _) in LIMIT_OPTIONS.items()
        if getattr(args, name) is not None
    }


def _warn_outside(countries: frozenset[str] | None, settings: Settings) -> None:
    """A key's countries narrow ALLOWED_COUNTRIES, never widen it: say which ones cannot apply."""
    if countries is None or not settings.allowed_countries:
        return
    outside = sorted(countries - settings.allowed_countries)
    if outside:
        print(
            f"smsctl: note: {', '.join(outside)} not in ALLOWED_COUNTRIES: this key cannot text"
            " there",
            file=sys.stderr,
        )


def _describe(role: str, limits: KeyLimits, countries: frozenset[str] | None) -> str:
    def limit(value: int | None) -> str:
        return NONE if value is None else str(value)

    regions = ",".join(sorted(countries)) if countries is not None else "all allowed"
    return (
        f"{role}; rate_per_minute {limit(limits.rate_per_minute)}, daily_message_limit"
        f" {limit(limits.daily_message_limit)}, recipient_hourly_limit"
        f" {limit(limits.recipient_hourly_limit)}, countries {regions}"
    )


async def create_command(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    name = args.name.strip()
    if not 1 <= len(name) <= 100:
        return fail(USAGE, "NAME must be 1-100 characters")
    try:
        given = _limits_given(args)
        countries = None if args.countries is None else parse_countries(args.countries)
    except ValueError as e:
        return fail(USAGE, str(e))
    defaults = KeyLimits(
        rate_per_minute=settings.api_key_default_rate_per_minute,
        daily_message_limit=settings.api_key_default_daily_message_limit,
        recipient_hourly_limit=settings.api_key_default_recipient_hourly_limit,
    )
    limits = replace(defaults, **given)
    role: apikeys.Role = "operator" if args.operator else "sender"
    key_id, key = await apikeys.create_key(
        conn, name, role=role, limits=limits, countries=countries
    )
    _warn_outside(countries, settings)
    print(key)
    described = _describe(role, limits, countries)
    print(
        f"created API key {key_id} ({name}: {described}); it is shown only this once",
        file=sys.stderr,
    )
    return OK


async def list_command(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    keys = await apikeys.list_keys(conn)
    rows: list[dict[str, Any]] = [
        {
            "id": key.id,
            "name": key.name,
            "role": key.role,
            "rate_per_minute": key.limits.rate_per_minute,
            "daily_message_limit": key.limits.daily_message_limit,
            "recipient_hourly_limit": key.limits.recipient_hourly_limit,
            "countries": None if key.countries is None else ",".join(sorted(key.countries)),
            "created_at": key.created_at,
            "revoked_at": key.revoked_at,
        }
        for key in keys
    ]
    if args.json:
        for row in rows:
            row["countries"] = None if row["countries"] is None else row["countries"].split(",")
        print_json(rows)
        return OK
    print_table(COLUMNS, rows)
    return OK


async def set_limits_command(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    try:
        changes: dict[str, int | frozenset[str] | None] = {**_limits_given(args)}
        if args.countries is not None:
            changes["allowed_countries"] = parse_countries(args.countries)
    except ValueError as e:
        return fail(USAGE, str(e))
    if not changes:
        options = ", ".join([o for o, _ in LIMIT_OPTIONS.values()] + ["--countries"])
        return fail(USAGE, f"give at least one of {options}")
    key = await apikeys.set_limits(conn, args.id, changes)
    if key is None:
        return fail(REFUSED, f"no active API key with id {args.id}")
    countries = changes.get("allowed_countries")
    _warn_outside(countries if isinstance(countries, frozenset) else None, settings)
    described = _describe(key.role, key.limits, key.countries)
    print(f"API key {key.id} ({key.name}) now: {described}", file=sys.stderr)
    return OK


async def revoke_command(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    if not await apikeys.revoke_key(conn, args.id):
        return fail(REFUSED, f"no active API key with id {args.id}")
    print(f"revoked API key {args.id}", file=sys.stderr)
    return OK
