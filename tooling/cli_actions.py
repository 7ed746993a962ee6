"""smsctl's commands that change things: retry, cancel, senders add/disable/set-default/set-rate,
prune."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from psycopg import AsyncConnection, Rollback

from shared import operations, wakeup
from shared.config import MAX_BURST, PROVIDERS, Settings, default_burst, mps_problem
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


def _pace(
    mps_text: str | None, burst_text: str | None, default_mps: float, mps_name: str
) -> tuple[Decimal, int]:
    """The pace given (burst defaults to max(1, ceil(mps))); a ValueError names the argument."""
    if mps_text is None:
        mps = Decimal(str(default_mps))
    else:
        try:
            mps = Decimal(mps_text.strip())
        except InvalidOperation:
            raise ValueError(f"{mps_name} is not a number: {mps_text!r}") from None
    # Decimal keeps what the operator typed (0.1 stays 0.1); NaN and infinities cannot be floats.
    problem = mps_problem(float(mps)) if mps.is_finite() else "must be a finite number"
    if problem is not None:
        raise ValueError(f"{mps_name} {problem}, got {mps_text}")
    if burst_text is None:
        return mps, default_burst(float(mps))
    try:
        burst = int(burst_text.strip())
    except ValueError:
        raise ValueError(f"--burst is not a whole number: {burst_text!r}") from None
    if not 1 <= burst <= MAX_BURST:
        raise ValueError(f"--burst must be 1 to {MAX_BURST} segments, got {burst}")
    return mps, burst


async def senders_add(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    number = to_e164(args.number, settings.default_region)
    if number is None:
        return fail(USAGE, f"not a phone number: {args.number}")
    if args.provider not in PROVIDERS:  # pragma: no cover - argparse choices check it first
        return fail(USAGE, f"--provider must be one of {', '.join(PROVIDERS)}")
    try:
        mps, burst = _pace(args.mps, args.burst, settings.sender_default_mps, "--mps")
    except ValueError as e:
        return fail(USAGE, str(e))
    async with conn.transaction():
        cur = await conn.execute(
            q("senders_add"),
            {"phone_number": number, "provider": args.provider, "mps": mps, "burst": burst},
        )
        added = await cur.fetchone()
    if added is None:
        return fail(REFUSED, f"{number} is already a sender")
    print(f"added sender {number} ({args.provider}, {mps} mps, burst {burst})", file=sys.stderr)
    return OK


async def senders_set_rate(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    number = to_e164(args.number, settings.default_region)
    if number is None:
        return fail(USAGE, f"not a phone number: {args.number}")
    try:
        mps, burst = _pace(args.mps, args.burst, settings.sender_default_mps, "MPS")
    except ValueError as e:
        return fail(USAGE, str(e))
    async with conn.transaction():
        cur = await conn.execute(
            q("senders_set_rate"), {"phone_number": number, "mps": mps, "burst": burst}
        )
        done = await cur.fetchone()
    if done is None:
        return fail(REFUSED, f"no sender {number} (see smsctl senders list)")
    print(
        f"{number} now sends at most {mps} segment(s) per second, {burst} at once,"
        " across every dispatcher",
        file=sys.stderr,
    )
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
        f", {pruned.orphan_events} unmatched callback(s) and {pruned.webhook_deliveries}"
        f" finished webhook delivery(ies); history: {pruned.days_dropped}"
        f" day(s) dropped, {pruned.days_kept} kept (events of messages that stay),"
        f" {pruned.days_made} made ahead",
        file=sys.stderr,
    )
    return OK
