"""smsctl's read commands: show, list, outbox, alerts, senders list. Text or `--json`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from shared import messages, operations, validation
from shared.config import Settings
from shared.queries import q
from tooling.timespec import parse_when

OK, REFUSED, USAGE = 0, 1, 2
LIST_COLUMNS: Final = ("id", "created_at", "delivery_status", "provider", "from_number",
                       "to_number", "attempts", "error_code")  # fmt: skip


def fail(code: int, text: str) -> int:
    """Print `smsctl: text` on stderr and return the exit code."""
    print(f"smsctl: {text}", file=sys.stderr)
    return code


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def print_json(data: Any) -> None:
    print(json.dumps(data, default=_plain, indent=2, sort_keys=True))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):  # 2.50 -> 2.5, 10.0 -> 10, never 1E+1
        return format(value.normalize(), "f")
    return str(value).replace("\t", " ").replace("\n", " ")


def print_table(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """Tab-separated, one header line: easy to read, `cut` and `awk`."""
    print("\t".join(columns))
    for row in rows:
        print("\t".join(_cell(row.get(c)) for c in columns))


def parse_message_id(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


async def _rows(conn: AsyncConnection[Any], name: str, **params: Any) -> list[dict[str, Any]]:
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q(name), params)
        return await cur.fetchall()


async def show(conn: AsyncConnection[Any], args: argparse.Namespace) -> int:
    message_id = parse_message_id(args.id)
    if message_id is None:
        return fail(USAGE, f"not a message id: {args.id}")
    row = await messages.get_message(conn, message_id)
    if row is None:
        return fail(REFUSED, f"no message {message_id}")
    events = await messages.get_events(conn, message_id)
    if args.json:
        print_json({**row, "events": events})
        return OK
    for key in ("id", "delivery_status", "provider", "provider_sid", "from_number", "to_number",
                "conversation_id", "segments", "encoding", "attempts", "error_category",
                "error_code", "error_message", "request_id", "created_at", "submitted_at",
                "final_at"):  # fmt: skip
        print(f"{key}: {_cell(row[key])}")
    print()
    print_table(
        (
            "occurred_at",
            "event_type",
            "attempt",
            "from_status",
            "to_status",
            "error_category",
            "error_code",
            "provider_sid",
            "detail",
        ),
        [{**e, "detail": json.dumps(e["detail"]) if e["detail"] else None} for e in events],
    )
    return OK


async def list_messages(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    number = None
    if args.number is not None:
        number = validation.to_e164(args.number, settings.default_region)
        if number is None:
            return fail(USAGE, f"--number: not a phone number: {args.number}")
    conversation_id = None
    if args.conversation is not None:
        conversation_id = parse_message_id(args.conversation)
        if conversation_id is None:
            return fail(USAGE, f"--conversation: not a UUID: {args.conversation}")
    since = None
    if args.since is not None:
        try:
            since = parse_when(args.since, datetime.now(UTC))
        except ValueError as e:
            return fail(USAGE, f"--since: {e}")
    if not 1 <= args.limit <= operations.MAX_PAGE:
        return fail(USAGE, f"--limit must be 1-{operations.MAX_PAGE}")
    filters = operations.Filters(
        status=args.status, conversation_id=conversation_id, number=number, since=since
    )
    page = await operations.list_messages(conn, filters, limit=args.limit)
    if args.json:
        print_json([{k: v for k, v in r.items() if k != "body"} for r in page.rows])
    else:
        print_table(LIST_COLUMNS, page.rows)
    if page.next_cursor is not None:
        print(f"(more than {args.limit}; raise --limit or narrow --since)", file=sys.stderr)
    return OK


async def outbox(conn: AsyncConnection[Any], args: argparse.Namespace) -> int:
    depth = await _rows(conn, "outbox_depth")
    leases = await _rows(conn, "outbox_leases")
    pauses = await _rows(conn, "provider_pauses_list")
    if args.json:
        print_json({"depth": depth, "leases": leases, "paused_providers": pauses})
        return OK
    print("# depth by kind and state")
    print_table(("kind", "state", "depth", "due", "oldest_due_seconds", "expired_leases"), depth)
    print("\n# work leased per dispatcher")
    print_table(("lease_owner", "leased", "expired", "first_expiry"), leases)
    print("\n# paused providers")
    print_table(("provider", "active", "paused_until", "failures", "error_code", "reason"), pauses)
    return OK


async def alerts(conn: AsyncConnection[Any], args: argparse.Namespace) -> int:
    rows = await _rows(conn, "alerts_recent", limit=args.limit)
    if args.json:
        print_json(rows)
    else:
        print_table(
            (
                "id",
                "created_at",
                "kind",
                "message_id",
                "provider",
                "error_category",
                "error_code",
                "delivery_state",
                "error_message",
            ),
            rows,
        )
    return OK


async def senders_list(conn: AsyncConnection[Any], args: argparse.Namespace) -> int:
    rows = await _rows(conn, "senders_list")
    if args.json:
        print_json(rows)
    else:
        # The pace (sms_sender_pace): allowance_now in segments, the due backlog in rows and
        # segments, how old its oldest row is and how long it takes to drain at this pace.
        print_table(
            (
                "phone_number",
                "provider",
                "enabled",
                "is_default",
                "mps",
                "burst",
                "allowance_now",
                "due",
                "due_segments",
                "scheduled",
                "leased",
                "oldest_due_seconds",
                "drain_seconds",
            ),
            rows,
        )
    return OK
