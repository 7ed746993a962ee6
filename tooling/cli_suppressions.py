"""smsctl suppressions list|add|remove: the suppression list, by an operator (reason `operator`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Final

from psycopg import AsyncConnection

from shared import suppressions
from shared.config import Settings
from tooling.cli_actions import _actor as actor
from tooling.cli_reports import OK, REFUSED, USAGE, fail, print_json, print_table

COLUMNS: Final = ("phone_number", "sender_number", "reason", "source_message_id", "api_key_id",
                  "created_at")  # fmt: skip


def add_commands(commands: Any) -> None:
    """Register `smsctl suppressions ...` on the top-level subparsers."""
    parser = commands.add_parser(
        "suppressions", help="recipients who must not be texted (STOP, opt-outs, operators)"
    )
    sub = parser.add_subparsers(dest="suppression_command", required=True)
    listing = sub.add_parser("list", help="suppressions, newest first (* = every sender)")
    listing.add_argument("--number", help="only this recipient's")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (1-200)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    listing.set_defaults(func=list_command)
    add = sub.add_parser("add", help="stop texting NUMBER (from --sender, or from every sender)")
    add.add_argument("number")
    add.add_argument("--sender", help="only from this sender number (default: every sender)")
    add.set_defaults(func=add_command)
    remove = sub.add_parser(
        "remove", help="lift NUMBER's suppression for --sender (default: the every-sender one)"
    )
    remove.add_argument("number")
    remove.add_argument("--sender", help="the sender number the suppression is for")
    remove.set_defaults(func=remove_command)


def _numbers(args: argparse.Namespace, settings: Settings) -> tuple[str, str | None] | None:
    number, problems = suppressions.check_number(args.number, settings, "NUMBER")
    sender = None
    if args.sender is not None:
        sender, found = suppressions.check_number(args.sender, settings, "--sender")
        problems += found
    for p in problems:
        print(f"smsctl: {p.field}: {p.code}: {p.message}", file=sys.stderr)
    if problems or number is None:
        return None
    return number, sender


def _whom(sender: str | None) -> str:
    return f"sender {sender}" if sender else "every sender"


async def list_command(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    if not 1 <= args.limit <= suppressions.MAX_PAGE:
        return fail(USAGE, f"--limit must be 1-{suppressions.MAX_PAGE}")
    number = None
    if args.number is not None:
        number, problems = suppressions.check_number(args.number, settings, "--number")
        if problems:
            return fail(USAGE, f"--number: {problems[0].message}")
    page = await suppressions.list_suppressions(conn, phone_number=number, limit=args.limit)
    rows = [
        {**vars(s), "sender_number": s.sender_number or "*"} for s in page.rows
    ]  # the DBA view's spelling of "every sender"
    if args.json:
        print_json(rows)
    else:
        print_table(COLUMNS, rows)
    return OK


async def add_command(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    numbers = _numbers(args, settings)
    if numbers is None:
        return USAGE
    number, sender = numbers
    found, created = await suppressions.add(conn, number, sender, reason="operator", actor=actor())
    if created:
        print(f"suppressed {number} for {_whom(sender)}", file=sys.stderr)
    else:
        print(
            f"{number} was already suppressed for {_whom(sender)} (reason {found.reason})",
            file=sys.stderr,
        )
    return OK


async def remove_command(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    numbers = _numbers(args, settings)
    if numbers is None:
        return USAGE
    number, sender = numbers
    gone = await suppressions.remove(conn, number, sender, actor=actor())
    if gone is None:
        return fail(REFUSED, f"no suppression of {number} for {_whom(sender)}")
    print(
        f"lifted the suppression of {number} for {_whom(sender)} ({gone.reason})", file=sys.stderr
    )
    return OK
