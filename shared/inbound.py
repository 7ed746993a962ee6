"""Inbound messages in the database: a reply or a keyword, stored in its conversation, and what
the keyword does to the suppression list, all in one statement (messages_receive)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from shared.keywords import Keyword, classify
from shared.logs import mask_number
from shared.providers.inbound import InboundMessage
from shared.queries import q
from shared.segments import count_segments

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """What storing an inbound message did."""

    message_id: UUID | None  # None: a copy of it raced this one and was stored first
    conversation_id: UUID | None
    created: bool  # False: the provider had posted this message before; nothing changed
    keyword: Keyword | None
    suppressed: int  # suppressions added (STOP, STOPALL)
    lifted: int  # suppressions removed (START)


async def receive(
    conn: AsyncConnection[Any], message: InboundMessage, *, request_id: str | None
) -> Received:
    """Store `message` once per provider sid, in its thread, and apply its keyword; one
    statement, so one transaction whatever `conn` is in."""
    keyword = classify(message.body)
    word = None if keyword is None else keyword.value
    segments, encoding = count_segments(message.body)
    params = {
        "provider": message.provider,
        "sid": message.sid,
        "our_number": message.to_number,
        "their_number": message.from_number,
        "body": message.body,
        "segments": segments,
        "encoding": encoding,
        "keyword": word,
        "request_id": request_id,
        "detail": Jsonb({"keyword": word, "payload": dict(message.raw)}),
    }
    async with conn.transaction():
        cur = await conn.execute(q("messages_receive"), params)
        row = await cur.fetchone()
    if row is None:
        result = Received(None, None, False, keyword, 0, 0)
    else:
        result = Received(row[0], row[1], bool(row[2]), keyword, int(row[3]), int(row[4]))
    log.info(
        "inbound message received" if result.created else "inbound message already stored",
        extra={
            "action": "inbound_received" if result.created else "inbound_repeated",
            "message_id": str(result.message_id) if result.message_id else None,
            "conversation_id": str(result.conversation_id) if result.conversation_id else None,
            "provider": message.provider,
            "from": mask_number(message.from_number),
            "to": mask_number(message.to_number),
            "keyword": result.keyword.value if result.keyword and result.created else None,
            "suppressed": result.suppressed,
            "lifted": result.lifted,
        },
    )
    return result
