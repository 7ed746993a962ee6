"""Build the configured provider clients (inside the running loop) and close them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from shared.config import Settings
from shared.providers.base import Provider
from shared.providers.signalwire import SignalWireProvider
from shared.providers.twilio import TwilioProvider


def configured(settings: Settings) -> list[str]:
    """Names of the providers whose credentials are all set."""
    names = []
    if settings.twilio_account_sid and settings.twilio_auth_token:
        names.append("twilio")
    if (
        settings.signalwire_project_id
        and settings.signalwire_api_token
        and settings.signalwire_space
    ):
        names.append("signalwire")
    return names


# The setting that holds each provider's sender number.
SENDER_VARIABLES: Final = {"twilio": "TWILIO_PHONE_NUMBER", "signalwire": "SIGNALWIRE_PHONE_NUMBER"}


def without_sender(settings: Settings) -> list[str]:
    """The configured providers whose sender number is not set: nothing goes out through them
    unless an operator adds a sender (`smsctl senders add`)."""
    numbers = {
        "twilio": settings.twilio_phone_number,
        "signalwire": settings.signalwire_phone_number,
    }
    return [name for name in configured(settings) if not numbers[name].strip()]


async def open_providers(settings: Settings) -> dict[str, Provider]:
    """One client per configured provider, keyed by name; call inside the running event loop."""
    providers: dict[str, Provider] = {}
    for name in configured(settings):
        providers[name] = (
            TwilioProvider(settings) if name == "twilio" else SignalWireProvider(settings)
        )
    return providers


async def close_providers(providers: Mapping[str, Provider]) -> None:
    """Release every provider's connections and threads."""
    for provider in providers.values():
        await provider.aclose()
