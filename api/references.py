"""The send paths' database reads of a message's references (the named sender, the conversation's
pair); shared.validation.judge_references gives the verdict on what they found."""

from __future__ import annotations

from api.connections import Connect
from shared import messages, senders
from shared.senders import Sender
from shared.validation import Problem, SendInput, judge_references


async def check_references(
    connect: Connect, given: SendInput, default: Sender | None
) -> tuple[Sender | None, list[Problem]]:
    """The sender to use, and the problems with `from` and `conversation_id`; `default` is the
    default sender, read with the API key; `connect` is asked for a connection only when there
    is something to read."""
    # Plain reads, each one statement (one round trip on the autocommit connection); the enqueue
    # checks the conversation's pair again inside its own transaction.
    named = None
    if given.from_number is not None:
        named = await senders.lookup(await connect(), given.from_number)
    pair = None
    if given.conversation_id is not None:
        pair = await messages.conversation_pair(await connect(), given.conversation_id)
    return judge_references(given, named, default, pair)
