"""smsctl's commands that change things: retry, cancel, senders add/disable/set-default, prune."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection, Rollback

from shared import operations, wakeup
from shared.config import PROVIDERS, Settings
from shared.queries import q
from shared.validation import to_e164
from tooling import retention
from tooling.cli_reports import OK, REFUSED, USAGE, fail, parse_message_id
from tooling.timespec import parse_duration, parse_when


def _actor() -> str:
    try:
        return f"smsctl:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "smsctl"


async def retry(conn: AsyncConnection[Any], args: argparse.Namespace) -> int:
    if (args.id is None) == (args.failed_since is None):
        return fail(USAGE, "give a message ID or --failed-since T (one of them)")
    if args.failed_since is not None:
        try:
            since = parse_when(args.failed_since, datetime.now(UTC))
        except ValueError as e:
            return fail(USAGE, f"--failed-since: {e}")
        done, skipped = await operations.requeue_failed_since(conn, since, actor=_actor())
        for requeued in done:
            print(requeued)
        if done:
            await wakeup.notify(conn)
        print(f"requeued {len(done)} message(s); {len(skipped)} moved meanwhile", file=sys.stderr)
        return OK
    message_id = parse_message_id(args.id)
    if message_id is None:
        return fail(USAGE, f"not a message id: {args.id}")
    try:
        await operations.requeue(conn, message_id, actor=_actor())
    except operations.NotFound:
        return fail(REFUSED, f"no message {message_id}")
    except operations.Refused as e:
        return fail(REFUSED, f"{e.code}: {e.message}")
    await wakeup.notify(conn)
    print(f"requeued {message_id}", file=sys.stderr)
    return OK


async def cancel(conn: AsyncConnection[Any], args: argparse.Namespace) -> int:
    message_id = parse_message_id(args.id)
    if message_id is None:
        return fail(USAGE, f"not a message id: {args.id}")
    try:
        await operations.cancel(conn, message_id, actor=_actor())
    except operations.NotFound:
        return fail(REFUSED, f"no message {message_id}")
    except operations.Refused as e:
        return fail(REFUSED, f"{e.code}: {e.message}")
    print(f"canceled {message_id}", file=sys.stderr)
    return OK


async def senders_add(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    number = to_e164(args.number, settings.default_region)
    if number is None:
        return fail(USAGE, f"not a phone number: {args.number}")
    if args.provider not in PROVIDERS:  # pragma: no cover - argparse choices check it first
        return fail(USAGE, f"--provider must be one of {', '.join(PROVIDERS)}")
    async with conn.transaction():
        cur = await conn.execute(
            q("senders_add"), {"phone_number": number, "provider": args.provider}
        )
        added = await cur.fetchone()
    if added is None:
        return fail(REFUSED, f"{number} is already a sender")
    print(f"added sender {number} ({args.provider})", file=sys.stderr)
    return OK


async def senders_disable(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    number = to_e164(args.number, settings.default_region)
    if number is None:
        return fail(USAGE, f"not a phone number: {args.number}")
    async with conn.transaction():
        cur = await conn.execute(q("senders_disable"), {"phone_number": number})
        disabled = await cur.fetchone()
    if disabled is None:
        return fail(REFUSED, f"no enabled sender {number}")
    print(f"disabled sender {number}; queued messages from it still go out", file=sys.stderr)
    return OK


async def senders_set_default(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    number = to_e164(args.number, settings.default_region)
    if number is None:
        return fail(USAGE, f"not a phone number: {args.number}")
    # The queries and lock of the API's start-up registration, so the two never leave two
    # defaults; the clear is undone when the number turns out not to be an enabled sender.
    async with conn.transaction():
        await conn.execute(q("senders_lock"))
        await conn.execute(q("senders_clear_default"), {"phone_number": number})
        cur = await conn.execute(q("senders_set_default"), {"phone_number": number})
        done = await cur.fetchone() is not None
        if not done:
            raise Rollback()
    if not done:
        return fail(REFUSED, f"no enabled sender {number} (see smsctl senders list)")
    print(f"default sender is now {number}", file=sys.stderr)
    return OK


async def prune(conn: AsyncConnection[Any], args: argparse.Namespace) -> int:
    try:
        age = parse_duration(args.older_than)
    except ValueError as e:
        return fail(USAGE, f"--older-than: {e}")
    if args.batch < 1:
        return fail(USAGE, "--batch must be at least 1")
    pruned = await retention.prune(conn, age, batch=args.batch)
    print(
        f"pruned {pruned.messages} message(s) final for more than {args.older_than}"
        f" and {pruned.orphan_events} unmatched callback(s)",
        file=sys.stderr,
    )
    return OK
