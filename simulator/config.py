"""What the simulator accepts and how it misbehaves: one mutable record, set at start or later."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from simulator.pace import PaceRule, parse_rules

# Dev credentials: `make run` and the tests point both SDKs at these unless SIM_* overrides them.
DEFAULT_TWILIO_ACCOUNT_SID = "AC" + "0" * 32
DEFAULT_TWILIO_AUTH_TOKEN = "sim-auth-token"  # noqa: S105 - a published dev credential
# SignalWire project ids are UUIDs, and its bodies' project_id must be one (schema `uuid`).
DEFAULT_SIGNALWIRE_PROJECT = "00000000-0000-4000-8000-000000000000"
DEFAULT_SIGNALWIRE_TOKEN = "sim-token"  # noqa: S105 - a published dev credential
DEFAULT_SIGNALWIRE_SIGNING_KEY = "sim-signing-key"

# Recipient -> (final status, error code): numbers whose delivery fails after acceptance.
DEFAULT_DELIVERY_FAILURES: dict[str, tuple[str, str]] = {
    "+15005550011": ("undelivered", "30003"),  # unreachable handset
    "+15005550012": ("undelivered", "30005"),  # unknown handset
    "+15005550013": ("failed", "30006"),  # landline or unreachable carrier
    "+15005550014": ("failed", "30007"),  # filtered as spam
}


class ConfigError(ValueError):
    """A fault setting has an unknown name or a value of the wrong type."""


@dataclass
class SimConfig:
    """Credentials, callback timing and faults. Rates are probabilities in [0, 1]; times seconds."""

    twilio_account_sid: str = DEFAULT_TWILIO_ACCOUNT_SID
    twilio_auth_token: str = field(default=DEFAULT_TWILIO_AUTH_TOKEN, repr=False)
    signalwire_project: str = DEFAULT_SIGNALWIRE_PROJECT
    signalwire_token: str = field(default=DEFAULT_SIGNALWIRE_TOKEN, repr=False)
    signalwire_signing_key: str = field(default=DEFAULT_SIGNALWIRE_SIGNING_KEY, repr=False)
    # Callbacks
    callbacks: bool = True
    callback_delay: float = 0.05  # between queued -> sent -> delivered
    callback_extra_delay: float = 0.0  # added before the first callback
    callback_drop_rate: float = 0.0
    callback_duplicate_rate: float = 0.0
    callback_reorder_rate: float = 0.0  # a message's callbacks are sent in reverse order
    signalwire_callback_format: str = "json"  # "json" (native API) or "form" (compatibility API)
    delivery_failures: dict[str, tuple[str, str]] = field(
        default_factory=lambda: dict(DEFAULT_DELIVERY_FAILURES)
    )
    # Texts back (POST /_sim/inbound): where each provider posts a message sent to one of our
    # numbers, as a number's incoming-message webhook. `{provider}` in a URL becomes twilio or
    # signalwire; inbound_urls (our number -> URL) wins over inbound_url for its number.
    inbound_url: str = ""
    inbound_urls: dict[str, str] = field(default_factory=dict)
    # The webhook sink (POST /_sim/webhooks/{name}): the Standard Webhooks secret of each name,
    # to verify what arrives there with, and the status it answers (410 disables the endpoint).
    webhook_secrets: dict[str, str] = field(default_factory=dict, repr=False)
    webhook_sink_status: int = 204
    # Faults on the send endpoints
    latency: float = 0.0
    jitter: float = 0.0
    error_rate: float = 0.0
    error_codes: list[str] = field(default_factory=lambda: ["21611"])
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    server_error_rate: float = 0.0
    server_error_status: int = 503
    hang_rate: float = 0.0
    hang_max: float = 60.0  # a hung request is released after this long even if the client waits
    # A slow path in front of the provider: the send is held this long before the provider sees
    # it, and is still accepted after the client gave up (uniform in [min, max] seconds).
    ingress_delay_rate: float = 0.0
    ingress_delay_min: float = 5.0
    ingress_delay_max: float = 15.0
    # Per-sender pace: number (or "*" for every other number) -> mps in segments and burst; a
    # send that would put more than ceil(mps) + burst segments in the trailing second gets 429.
    enforce_mps: dict[str, PaceRule] = field(default_factory=dict)
    outage: bool = False
    outage_windows: list[tuple[float, float]] = field(default_factory=list)  # offsets from set time
    seed: int | None = None
    # Monotonic time the outage windows count from; set whenever they are configured.
    windows_origin: float = field(default_factory=time.monotonic, repr=False)

    def in_outage(self, now: float | None = None) -> bool:
        """Whether the provider is down right now (flag or a configured window)."""
        if self.outage:
            return True
        offset = (time.monotonic() if now is None else now) - self.windows_origin
        return any(start <= offset < end for start, end in self.outage_windows)

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a partial update (the `POST /_sim/config` body); unknown names are an error."""
        parsed = {name: _coerce(name, value) for name, value in changes.items()}
        for name, value in parsed.items():
            setattr(self, name, value)
        if "outage_windows" in parsed:
            self.windows_origin = time.monotonic()

    def public(self) -> dict[str, Any]:
        """The settings as JSON, secrets left out."""
        hidden = {
            "twilio_auth_token",
            "signalwire_token",
            "signalwire_signing_key",
            "windows_origin",
            "webhook_secrets",
        }
        shown = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in hidden
        }
        shown["enforce_mps"] = {n: r.public() for n, r in self.enforce_mps.items()}
        return shown


_FIELDS = {f.name: f for f in dataclasses.fields(SimConfig) if f.name != "windows_origin"}


def _coerce(name: str, value: Any) -> Any:
    if name not in _FIELDS:
        raise ConfigError(f"unknown setting {name!r}")
    current = getattr(SimConfig(), name)
    try:
        if name == "seed":
            return None if value in (None, "") else int(value)
        if name == "error_codes":
            items = value.split(",") if isinstance(value, str) else list(value)
            return [str(c).strip() for c in items if str(c).strip()]
        if name == "outage_windows":
            if isinstance(value, str):  # "10-20,45-50" from a flag or SIM_OUTAGE_WINDOWS
                value = [w.split("-") for w in value.split(",") if w.strip()]
            return [(float(a), float(b)) for a, b in value]
        if name == "enforce_mps":
            return parse_rules(value)
        if name == "webhook_secrets":
            if isinstance(value, str):  # JSON from a flag or SIM_WEBHOOK_SECRETS
                value = json.loads(value) if value.strip() else {}
            return {str(k): str(v) for k, v in dict(value).items()}
        if name == "webhook_sink_status" and not 200 <= int(value) <= 599:
            raise ValueError("an HTTP status from 200 to 599")
        if name == "inbound_urls":
            if isinstance(value, str):  # JSON from a flag or SIM_INBOUND_URLS
                value = json.loads(value) if value.strip() else {}
            return {str(k): str(v) for k, v in dict(value).items()}
        if name == "delivery_failures":
            if isinstance(value, str):  # JSON from a flag or SIM_DELIVERY_FAILURES
                value = json.loads(value)
            return {str(k): (str(v[0]), str(v[1])) for k, v in dict(value).items()}
        if isinstance(current, bool):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad value for {name}: {value!r}") from e


def from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The SIM_* variables as settings (SIM_ERROR_RATE=0.1 -> error_rate='0.1')."""
    return {
        key[4:].lower(): value
        for key, value in environ.items()
        if key.startswith("SIM_") and key[4:].lower() in _FIELDS
    }


def setting_names() -> list[str]:
    """Every setting name, for --help and validation."""
    return sorted(_FIELDS)
