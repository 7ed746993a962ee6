"""smsctl webhooks add|list|remove|rotate|enable|test|replay: customers' status webhook endpoints,
by an operator (any key's)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any, Final

from psycopg import AsyncConnection

from shared import webhook_endpoints
from shared.config import Settings
from shared.webhook_events import EVENT_TYPES
from shared.webhook_registration import check_registration
from shared.webhook_signing import ROTATION_OVERLAP
from shared.webhook_targets import system_resolver
from tooling.cli_actions import _actor as actor
from tooling.cli_reports import OK, REFUSED, USAGE, fail, print_json, print_table
from tooling.timespec import parse_when

COLUMNS: Final = ("id", "api_key_id", "url", "events", "enabled", "pending",
                  "oldest_pending_seconds", "last_success_at", "last_failure_at", "failing_since",
                  "last_error", "disabled_reason")  # fmt: skip


def add_commands(commands: Any) -> None:
    """Register `smsctl webhooks ...` on the top-level subparsers."""
    parser = commands.add_parser(
        "webhooks", help="customers' status webhook endpoints and their delivery health"
    )
    sub = parser.add_subparsers(dest="webhook_command", required=True)
    add = sub.add_parser(
        "add", help="register URL for the webhooks of API key --key; prints its secret, once"
    )
    add.add_argument("url", metavar="URL")
    add.add_argument("--key", type=int, required=True, metavar="ID", help="the API key's id")
    add.add_argument(
        "--events",
        metavar="A,B",
        help=f"only these event types (default: every one): {', '.join(EVENT_TYPES)}",
    )
    add.set_defaults(func=add_command)
    listing = sub.add_parser("list", help="endpoints with their delivery health (never a secret)")
    listing.add_argument("--key", type=int, metavar="ID", help="only this API key's")
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    listing.set_defaults(func=list_command)
    remove = sub.add_parser("remove", help="delete an endpoint and its pending deliveries")
    remove.add_argument("id", metavar="ID")
    remove.set_defaults(func=remove_command)
    rotate = sub.add_parser(
        "rotate", help="a new secret, printed once; the old one signs beside it for 24 h"
    )
    rotate.add_argument("id", metavar="ID")
    rotate.set_defaults(func=rotate_command)
    enable = sub.add_parser(
        "enable", help="send to a disabled endpoint again (410 or days of failures)"
    )
    enable.add_argument("id", metavar="ID")
    enable.set_defaults(func=enable_command)
    test = sub.add_parser("test", help="queue a webhook.test delivery to the endpoint")
    test.add_argument("id", metavar="ID")
    test.set_defaults(func=test_command)
    replay = sub.add_parser(
        "replay",
        help="send again what an endpoint missed: its failed deliveries made since --since "
        "(same webhook-id; the endpoint must be enabled)",
    )
    replay.add_argument("id", metavar="ID")
    replay.add_argument("--since", required=True, help="ISO 8601 time, or an age such as 2h")
    replay.add_argument(
        "--delivered",
        action="store_true",
        help="delivered ones too (a receiver that lost what it got)",
    )
    replay.set_defaults(func=replay_command)


def _id(text: str) -> int | None:
    found = webhook_endpoints.parse_id(text)
    if found is None:
        print(f"smsctl: not an endpoint id: {text}", file=sys.stderr)
    return found


async def add_command(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    events = None if args.events is None else [e.strip() for e in args.events.split(",")]
    registration, problems = await check_registration(
        args.url,
        [e for e in events or [] if e],
        allow_http=settings.allow_http_webhooks,
        allow_private=settings.webhook_allow_private_urls,
        resolve=system_resolver,
        url_field="URL",
        events_field="--events",
    )
    for p in problems:
        print(f"smsctl: {p.field}: {p.code}: {p.message}", file=sys.stderr)
    if registration is None:
        return USAGE
    try:
        made = await webhook_endpoints.create(conn, args.key, registration, actor=actor())
    except (webhook_endpoints.KeyUnusable, webhook_endpoints.LimitReached) as e:
        return fail(REFUSED, str(e))
    chosen = ", ".join(made.endpoint.events) or "every event"
    print(made.secret)
    print(
        f"webhook endpoint {made.endpoint.id} for API key {args.key}: {chosen}. Its signing"
        " secret (above) is shown only this once.",
        file=sys.stderr,
    )
    return OK


async def list_command(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    found = await webhook_endpoints.list_endpoints(conn, owner=args.key)
    rows = [vars(e) for e in found]
    if args.json:
        print_json(rows)
    else:
        print_table(COLUMNS, [{**r, "events": ",".join(r["events"]) or "*"} for r in rows])
    return OK


async def remove_command(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    endpoint_id = _id(args.id)
    if endpoint_id is None:
        return USAGE
    try:
        await webhook_endpoints.remove(conn, endpoint_id, owner=None, actor=actor())
    except webhook_endpoints.NotFound as e:
        return fail(REFUSED, str(e))
    print(f"removed webhook endpoint {endpoint_id}", file=sys.stderr)
    return OK


async def rotate_command(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    endpoint_id = _id(args.id)
    if endpoint_id is None:
        return USAGE
    try:
        made = await webhook_endpoints.rotate(conn, endpoint_id, owner=None, actor=actor())
    except webhook_endpoints.NotFound as e:
        return fail(REFUSED, str(e))
    print(made.secret)
    hours = ROTATION_OVERLAP.total_seconds() / 3600
    print(
        f"new secret for webhook endpoint {endpoint_id} (above, shown only this once); the"
        f" previous one keeps signing beside it for {hours:g} h, until"
        f" {made.endpoint.previous_secret_expires_at}",
        file=sys.stderr,
    )
    return OK


async def enable_command(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    endpoint_id = _id(args.id)
    if endpoint_id is None:
        return USAGE
    try:
        changed = await webhook_endpoints.enable(conn, endpoint_id, owner=None, actor=actor())
    except webhook_endpoints.NotFound as e:
        return fail(REFUSED, str(e))
    if changed:
        print(
            f"enabled webhook endpoint {endpoint_id}; what it missed meanwhile:"
            f" smsctl webhooks replay {endpoint_id} --since ...",
            file=sys.stderr,
        )
    else:
        print(f"webhook endpoint {endpoint_id} was enabled already", file=sys.stderr)
    return OK


async def test_command(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    endpoint_id = _id(args.id)
    if endpoint_id is None:
        return USAGE
    try:
        msg_id = await webhook_endpoints.queue_test(conn, endpoint_id, owner=None)
    except (webhook_endpoints.NotFound, webhook_endpoints.Disabled) as e:
        return fail(REFUSED, str(e))
    print(msg_id)
    return OK


async def replay_command(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    endpoint_id = _id(args.id)
    if endpoint_id is None:
        return USAGE
    try:
        since = parse_when(args.since, datetime.now(UTC))
    except ValueError as e:
        return fail(USAGE, f"--since: {e}")
    try:
        ids = await webhook_endpoints.replay(
            conn, endpoint_id, since, delivered=args.delivered, actor=actor()
        )
    except webhook_endpoints.NotFound as e:
        return fail(REFUSED, str(e))
    except webhook_endpoints.Disabled as e:
        return fail(REFUSED, f"{e}; enable it first: smsctl webhooks enable {endpoint_id}")
    for msg_id in ids:
        print(msg_id)
    print(
        f"queued {len(ids)} delivery(ies) to webhook endpoint {endpoint_id} again",
        file=sys.stderr,
    )
    return OK
