"""The suppression list (sms_suppressions): list, add and remove, for the API and smsctl alike.

A suppression names a recipient and the sender it must not hear from, or every sender (sender
NULL). Sends to a suppressed recipient are refused at enqueue and canceled at claim; keywords
texted in (STOP, START) add and remove them in shared.inbound.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import class_row

from shared.config import Settings
from shared.errors import SmsOutboxError
from shared.logs import mask_number
from shared.operations import BadCursor
from shared.queries import q
from shared.validation import Problem, check_recipient

log = logging.getLogger(__name__)

REASONS: Final = ("stop_keyword", "provider_opt_out", "api", "operator")
DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 200
# Two statements racing to add the same suppression: the loser sees it on its next try.
_ADD_TRIES: Final = 3


@dataclass(frozen=True)
class Suppression:
    """A row of sms_suppressions; sender_number None = every sender."""

    id: int
    phone_number: str
    sender_number: str | None
    reason: str
    source_message_id: UUID | None
    api_key_id: int | None
    created_at: datetime


@dataclass(frozen=True)
class _Added(Suppression):
    created: bool


@dataclass(frozen=True)
class SuppressionPage:
    """One page, newest first, and the cursor of the next (None on the last page)."""

    rows: list[Suppression]
    next_cursor: str | None


def check_number(raw: str, settings: Settings, field: str) -> tuple[str | None, list[Problem]]:
    """`raw` as E.164 when it is a valid phone number, else the invalid_number problem.

    The send path's own check, less what only limits sending (ALLOWED_COUNTRIES, number types):
    keeping a recipient from being texted is never refused for those.
    """
    e164, problems = check_recipient(raw, settings, field)
    invalid = [p for p in problems if p.code == "invalid_number"]
    return (None, invalid) if invalid else (e164, [])


def encode_cursor(last_id: int) -> str:
    """An opaque, URL-safe cursor naming the last row of a page."""
    return base64.urlsafe_b64encode(f"s:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id of a cursor from encode_cursor; BadCursor for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
        prefix, _, number = raw.decode("ascii").partition(":")
        if prefix != "s" or not number.isdigit() or len(number) > 19:
            raise ValueError("not a suppression cursor")
        return int(number)
    except (ValueError, binascii.Error, UnicodeError) as e:
        raise BadCursor("not a cursor this service issued") from e


async def list_suppressions(
    conn: AsyncConnection[Any],
    *,
    phone_number: str | None = None,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
) -> SuppressionPage:
    """One page of suppressions (of one recipient when `phone_number` is given), newest first."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1-{MAX_PAGE}")
    params = {
        "phone_number": phone_number,
        "after_id": decode_cursor(cursor) if cursor else None,
        "limit": limit + 1,  # one more tells whether a next page exists
    }
    async with conn.transaction(), conn.cursor(row_factory=class_row(Suppression)) as cur:
        await cur.execute(q("suppressions_list"), params, prepare=False)
        rows = await cur.fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].id)
    return SuppressionPage(rows, next_cursor)


async def add(
    conn: AsyncConnection[Any],
    phone_number: str,
    sender_number: str | None,
    *,
    reason: str,
    api_key_id: int | None = None,
    actor: str | None = None,
) -> tuple[Suppression, bool]:
    """Suppress `phone_number` for `sender_number` (None: every sender); (the suppression, whether
    it is new). An existing one of the same pair is returned as it is."""
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {', '.join(REASONS)}")
    params = {
        "phone_number": phone_number,
        "sender_number": sender_number,
        "reason": reason,
        "api_key_id": api_key_id,
    }
    for _ in range(_ADD_TRIES):
        async with conn.transaction(), conn.cursor(row_factory=class_row(_Added)) as cur:
            await cur.execute(q("suppressions_add"), params)
            row = await cur.fetchone()
        if row is not None:
            break
    else:  # pragma: no cover - needs an add and a remove of the pair racing this one each time
        raise SmsOutboxError("the suppression kept changing under this request")
    found = Suppression(**{k: v for k, v in vars(row).items() if k != "created"})
    if row.created:
        _log("suppression added", "suppression_added", found, actor)
    return found, row.created


async def remove(
    conn: AsyncConnection[Any],
    phone_number: str,
    sender_number: str | None,
    *,
    actor: str | None = None,
    any_reason: bool = True,
) -> Suppression | None:
    """Lift the suppression of `phone_number` for `sender_number` (None: the every-sender one);
    None when there is none. `any_reason=False` (a sender API key) lifts only suppressions made
    through the API or by an operator, never an opt-out the recipient made."""
    async with conn.transaction(), conn.cursor(row_factory=class_row(Suppression)) as cur:
        await cur.execute(
            q("suppressions_remove"),
            {
                "phone_number": phone_number,
                "sender_number": sender_number,
                "any_reason": any_reason,
            },
        )
        gone = await cur.fetchone()
    if gone is not None:
        _log("suppression removed", "suppression_removed", gone, actor)
    return gone


async def exists(conn: AsyncConnection[Any], phone_number: str, sender_number: str | None) -> bool:
    """Whether `phone_number` has a suppression for `sender_number` (None: the every-sender one)."""
    cur = await conn.execute(
        q("suppressions_exists"), {"phone_number": phone_number, "sender_number": sender_number}
    )
    return await cur.fetchone() is not None


def _log(text: str, action: str, s: Suppression, actor: str | None) -> None:
    log.info(
        text,
        extra={
            "action": action,
            "actor": actor,
            "to": mask_number(s.phone_number),
            "from": mask_number(s.sender_number) if s.sender_number else "*",
            "reason": s.reason,
        },
    )
