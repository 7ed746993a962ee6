"""GET /readyz and start-up: a configured provider without its sender number is said at once."""

from __future__ import annotations

import dataclasses
import io
import json

import httpx

from api.app import create_app
from shared.config import Settings
from tests.api_support import LiveServer, json_logs_fixture  # noqa: F401 - fixture used by name


def test_provider_without_sender_number_is_a_warning_and_a_readyz_reason(
    settings: Settings, json_logs: io.StringIO
) -> None:
    """Twilio credentials without TWILIO_PHONE_NUMBER: one start-up WARNING naming the variable,
    and /readyz (still 200: the API serves) lists the same reason."""
    unnumbered = dataclasses.replace(settings, twilio_phone_number="")
    with LiveServer(create_app(unnumbered)) as live, httpx.Client(base_url=live.url) as client:
        r = client.get("/readyz", timeout=10)
    assert r.status_code == 200
    (reason,) = r.json()["warnings"]
    assert reason.startswith("TWILIO_PHONE_NUMBER is not set")
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    (warning,) = [line for line in lines if line.get("action") == "sender_number_missing"]
    assert warning["level"] == "WARNING" and warning["variable"] == "TWILIO_PHONE_NUMBER"
    assert warning["message"] == reason
