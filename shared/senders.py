"""Sender numbers ("ghost numbers") in sms_senders: start-up registration and look-ups."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

from shared.config import Settings, default_burst
from shared.errors import ConfigError
from shared.logs import mask_number
from shared.queries import q
from shared.validation import to_e164

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sender:
    """A row of sms_senders."""

    phone_number: str
    provider: str
    enabled: bool
    is_default: bool


def configured(settings: Settings) -> list[tuple[str, str]]:
    """(E.164 number, provider) of every configured sender, the SMS_PROVIDER one first."""
    found: list[tuple[str, str]] = []
    for provider, variable, raw in (
        ("twilio", "TWILIO_PHONE_NUMBER", settings.twilio_phone_number),
        ("signalwire", "SIGNALWIRE_PHONE_NUMBER", settings.signalwire_phone_number),
    ):
        if not raw.strip():
            continue
        number = to_e164(raw.strip(), settings.default_region)
        if number is None:
            raise ConfigError(f"{variable} is not a phone number (the {provider} sender)")
        found.append((number, provider))
    found.sort(key=lambda pair: pair[1] != settings.sms_provider)
    return found


async def register(conn: AsyncConnection[Any], settings: Settings) -> str | None:
    """Make the configured numbers senders and pick the default; returns the default number.

    The SMS_PROVIDER number becomes the default, or else whichever configured number is enabled.
    A new number gets the pace SENDER_DEFAULT_MPS; a known one keeps its own (set-rate).
    With no number configured, the senders an operator set up in SQL are left as they are.
    """
    numbers = configured(settings)
    default: str | None = None
    mps = settings.sender_default_mps
    async with conn.transaction():
        await conn.execute(q("senders_lock"))
        for number, provider in numbers:
            await conn.execute(
                q("senders_register"),
                {
                    "phone_number": number,
                    "provider": provider,
                    "mps": mps,
                    "burst": default_burst(mps),
                },
            )
        for number, _ in numbers:
            enabled = await lookup(conn, number)
            if enabled is None or not enabled.enabled:
                continue
            await conn.execute(q("senders_clear_default"), {"phone_number": number})
            await conn.execute(q("senders_set_default"), {"phone_number": number})
            default = number
            break
    for number, provider in numbers:
        log.info(
            "sender registered",
            extra={
                "action": "sender_registered",
                "provider": provider,
                "sender": mask_number(number),
                "is_default": number == default,
            },
        )
    return default


async def lookup(conn: AsyncConnection[Any], phone_number: str) -> Sender | None:
    """The sender with this E.164 number, or None."""
    async with conn.cursor(row_factory=class_row(Sender)) as cur:
        await cur.execute(q("senders_lookup"), {"phone_number": phone_number})
        return await cur.fetchone()


async def default_sender(conn: AsyncConnection[Any]) -> Sender | None:
    """The sender used when a request names none, or None when there is no default."""
    async with conn.cursor(row_factory=class_row(Sender)) as cur:
        await cur.execute(q("senders_default"))
        return await cur.fetchone()
