"""smsctl: operator commands; DATABASE_URL (and the sender settings) from the environment.

Exit codes: 0 done, 1 not found / refused / database failure, 2 usage or configuration error.
Every read command takes --json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import AsyncConnection

from shared import db, messages, senders, validation, wakeup
from shared.config import PROVIDERS, Settings, load_settings
from shared.errors import ConfigError
from shared.lifecycle import STATUSES
from tooling import cli_actions, cli_db, cli_keys, cli_reports, cli_suppressions, cli_webhooks
from tooling.cli_reports import OK, REFUSED, USAGE
from tooling.retention import DEFAULT_BATCH

Command = Callable[[AsyncConnection[Any], argparse.Namespace, Settings], Awaitable[int]]


def _plain(
    func: Callable[[AsyncConnection[Any], argparse.Namespace], Awaitable[int]],
) -> Command:
    async def command(conn: AsyncConnection[Any], args: argparse.Namespace, _: Settings) -> int:
        return await func(conn, args)

    return command


def _reader(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smsctl", description="Operate sms-outbox.")
    commands = parser.add_subparsers(dest="command", required=True)

    cli_keys.add_commands(commands)

    send = commands.add_parser("send", help="queue one SMS and print its id")
    send.add_argument("--to", required=True, help="recipient phone number")
    send.add_argument("--body", required=True, help="message text")
    send.add_argument("--from", dest="from_number", help="sender number (default sender if absent)")
    send.set_defaults(func=_send)

    show = _reader(commands.add_parser("show", help="a message and its whole timeline"))
    show.add_argument("id", help="message id")
    show.set_defaults(func=_plain(cli_reports.show))

    listing = _reader(commands.add_parser("list", help="messages, newest first"))
    listing.add_argument("--status", choices=sorted(STATUSES))
    listing.add_argument("--conversation", help="conversation id")
    listing.add_argument("--number", help="recipient or sender number")
    listing.add_argument("--since", help="ISO 8601 time, or an age such as 6h or 7d")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (1-200)")
    listing.set_defaults(func=cli_reports.list_messages)

    outbox = _reader(commands.add_parser("outbox", help="queue depth, leases, paused providers"))
    outbox.set_defaults(func=_plain(cli_reports.outbox))

    retry = commands.add_parser("retry", help="requeue failed messages with a fresh budget")
    retry.add_argument("id", nargs="?", help="message id")
    retry.add_argument("--failed-since", help="every requeueable message failed since T")
    retry.set_defaults(func=_plain(cli_actions.retry))

    cancel = commands.add_parser("cancel", help="cancel a pending message")
    cancel.add_argument("id", help="message id")
    cancel.set_defaults(func=_plain(cli_actions.cancel))

    sender = commands.add_parser(
        "senders", help="list, add and disable sender numbers, set their pace, pick the default"
    )
    sender_commands = sender.add_subparsers(dest="sender_command", required=True)
    _reader(
        sender_commands.add_parser("list", help="every sender with its pace and backlog")
    ).set_defaults(func=_plain(cli_reports.senders_list))
    add = sender_commands.add_parser("add", help="add an enabled sender number")
    add.add_argument("number")
    add.add_argument("--provider", required=True, choices=PROVIDERS)
    add.add_argument("--mps", help="segments per second (default SENDER_DEFAULT_MPS)")
    add.add_argument("--burst", help="segments at once after a quiet spell (default max(1, mps))")
    add.set_defaults(func=cli_actions.senders_add)
    rate = sender_commands.add_parser(
        "set-rate",
        help="send from this number at most MPS segments per second, shared by every dispatcher",
    )
    rate.add_argument("number")
    rate.add_argument("mps", help="segments per second, 0.001 to 10000")
    rate.add_argument("--burst", help="segments at once after a quiet spell (default max(1, mps))")
    rate.set_defaults(func=cli_actions.senders_set_rate)
    disable = sender_commands.add_parser("disable", help="refuse a number as 'from' from now on")
    disable.add_argument("number")
    disable.set_defaults(func=cli_actions.senders_disable)
    default = sender_commands.add_parser(
        "set-default",
        help="send from this number when a request names no 'from' (until the API's next start"
        " makes the configured SMS_PROVIDER number the default again)",
    )
    default.add_argument("number")
    default.set_defaults(func=cli_actions.senders_set_default)

    alerts = _reader(commands.add_parser("alerts", help="recent alerts, newest first"))
    alerts.add_argument("--limit", type=int, default=50)
    alerts.set_defaults(func=_plain(cli_reports.alerts))

    prune = commands.add_parser(
        "prune", help="drop history days and delete final messages older than DURATION"
    )
    prune.add_argument("--older-than", required=True, help="e.g. 90d, 12w")
    prune.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="rows per transaction")
    prune.set_defaults(func=_plain(cli_actions.prune))

    cli_suppressions.add_commands(commands)
    cli_webhooks.add_commands(commands)
    cli_db.add_commands(commands)
    return parser


def _fail(code: int, text: str) -> int:
    print(f"smsctl: {text}", file=sys.stderr)
    return code


async def _send(conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings) -> int:
    to, problems = validation.check_recipient(args.to, settings, field="--to")
    body = validation.normalize_body(args.body)
    problems += validation.check_body(body, field="--body")
    if problems:
        for p in problems:
            print(f"smsctl: {p.field}: {p.code}: {p.message}", file=sys.stderr)
        return USAGE
    await senders.register(conn, settings)
    async with conn.transaction():
        if args.from_number is None:
            sender = await senders.default_sender(conn)
        else:
            number = validation.to_e164(args.from_number, settings.default_region)
            sender = None if number is None else await senders.lookup(conn, number)
    if sender is None or not sender.enabled:
        return _fail(REFUSED, "no such enabled sender (see sms_senders)")
    try:
        result = await messages.enqueue(
            conn,
            api_key_id=None,
            to_number=to,
            from_number=sender.phone_number,
            provider=sender.provider,
            body=body,
            conversation_id=None,
            idempotency_key=None,
            request_hash=None,
            request_id=None,
        )
    except messages.RecipientsOptedOut:
        return _fail(
            REFUSED,
            f"recipient_opted_out: the recipient opted out of {sender.phone_number}"
            " (smsctl suppressions list --number ...)",
        )
    await wakeup.notify(conn)
    print(result.id)
    return OK


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    command: Command = args.func
    # shared.db.connect: no server-side prepared statements through a pooler (PgBouncer).
    async with await db.connect(settings.database_url, autocommit=True) as conn:
        return await command(conn, args, settings)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `smsctl` console script; returns the exit code."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
    except BrokenPipeError:
        # The reader went away (`smsctl list | head`): stop quietly, as other tools do, and point
        # stdout at /dev/null so the interpreter's own flush at exit has nowhere to fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    return code


def _main(argv: list[str] | None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else USAGE
    try:
        settings = load_settings(os.environ)
    except ConfigError as e:
        return _fail(USAGE, str(e))
    if not settings.database_url:
        return _fail(USAGE, "DATABASE_URL is not set")
    try:
        return asyncio.run(_run(settings, args))
    except ConfigError as e:
        return _fail(USAGE, str(e))
    except psycopg.Error as e:
        if e.sqlstate is None:  # could not connect: the text names the server, not data
            return _fail(REFUSED, f"database unreachable: {str(e).splitlines()[0]}")
        # Only the error class and SQLSTATE: a server error's text can quote row data.
        return _fail(REFUSED, f"database error {type(e).__name__} ({e.sqlstate})")


if __name__ == "__main__":
    sys.exit(main())
