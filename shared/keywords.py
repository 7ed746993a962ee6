"""Opt-out and opt-in keywords of an inbound message: pure, no I/O.

A body is a keyword when, trimmed and in any case, it is exactly one of the words below (CTIA's
and the US carriers' opt-out words, which Twilio honours too). "stop please" is a reply, not a
keyword: a person who means to opt out sends the word alone, and a reply that merely contains it
must not silence a conversation.
"""

from __future__ import annotations

import enum
from typing import Final


class Keyword(enum.StrEnum):
    """What an inbound keyword asks for (the values are what messages_receive reads)."""

    STOP = "stop"  # no more messages from the number texted
    STOPALL = "stopall"  # no more messages from any of our numbers
    START = "start"  # messages from the number texted may resume


WORDS: Final[dict[str, Keyword]] = {
    "stop": Keyword.STOP,
    "stopall": Keyword.STOPALL,
    "unsubscribe": Keyword.STOP,
    "cancel": Keyword.STOP,
    "end": Keyword.STOP,
    "quit": Keyword.STOP,
    "optout": Keyword.STOP,
    "revoke": Keyword.STOP,
    "start": Keyword.START,
    "unstop": Keyword.START,
    "yes": Keyword.START,
}


def classify(body: str) -> Keyword | None:
    """The keyword `body` is (trimmed, any case, the whole body one word), or None for a reply."""
    return WORDS.get(body.strip().casefold())
