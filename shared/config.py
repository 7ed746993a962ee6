"""Settings, built once from an environment mapping by `load_settings(environ)`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.errors import ConfigError
from shared.quiet import QuietHours

PROVIDERS = ("twilio", "signalwire")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# A sender's pace (sms_senders.mps, segments per second): the CHECK allows (0, 10000]. The floor
# is ours: a pace slower than one segment per 1000 s is a mistake, and an absurdly small one would
# overflow the intervals the claim and the sms_sender_pace view compute from it (burst / mps).
MIN_MPS = 0.001
MAX_MPS = 10000
MAX_BURST = 100000
# Per-key limits are sms_api_keys integer columns (CHECK > 0).
MAX_KEY_LIMIT = 2**31 - 1


def default_burst(mps: float) -> int:
    """The burst a sender gets unless told otherwise: one second's worth, at least 1 segment."""
    return max(1, math.ceil(mps))


def mps_problem(mps: float) -> str | None:
    """Why `mps` is not a pace a sender may have, or None when it is."""
    if not math.isfinite(mps) or not MIN_MPS <= mps <= MAX_MPS:
        return f"must be a number of segments per second from {MIN_MPS} to {MAX_MPS}"
    return None


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from e


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as e:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from e


def _positive(environ: Mapping[str, str], name: str, default: float) -> float:
    value = _float(environ, name, default)
    if not value > 0:
        raise ConfigError(f"{name} must be a number of seconds above 0, got {value!r}")
    return value


def _at_least_one(environ: Mapping[str, str], name: str, default: int) -> int:
    value = _int(environ, name, default)
    if value < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


def _limit(environ: Mapping[str, str], name: str) -> int | None:
    """A per-key limit: a positive integer, or None (no limit) when empty."""
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1 or int(raw) > MAX_KEY_LIMIT:
        raise ConfigError(
            f"{name} must be a whole number from 1 to {MAX_KEY_LIMIT} (empty = no limit),"
            f" got {raw!r}"
        )
    return int(raw)


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with the defaults a local run needs. Secrets stay out of repr."""

    database_url: str = field(default="", repr=False)
    # The dispatcher's LISTEN session: a direct connection to PostgreSQL, for when DATABASE_URL
    # goes through a transaction-pooling PgBouncer (a LISTEN there misses notifications).
    database_listen_url: str = field(default="", repr=False)
    # Longest wait for the database (connecting, or for a pooled connection): past it the API
    # answers 503 database_unavailable and the dispatcher backs off.
    database_timeout_seconds: float = 5.0
    # API
    public_base_url: str = "http://127.0.0.1:8000"
    default_region: str = "US"
    allowed_countries: frozenset[str] = frozenset()
    max_request_bytes: int = 64 * 1024
    max_batch_request_bytes: int = 2 * 1024 * 1024
    log_unmasked_numbers: bool = False
    log_level: str = "INFO"
    # Providers
    sms_provider: str = "twilio"
    twilio_account_sid: str = ""
    twilio_auth_token: str = field(default="", repr=False)
    twilio_phone_number: str = ""
    twilio_api_base_url: str = ""
    signalwire_project_id: str = ""
    signalwire_api_token: str = field(default="", repr=False)
    signalwire_space: str = ""
    signalwire_phone_number: str = ""
    signalwire_signing_key: str = field(default="", repr=False)
    provider_timeout_seconds: float = 10.0
    # An ambiguous attempt is looked up only this long after its call could last have ended, and
    # looked up `reconcile_lookups` times (this far apart) before any resend.
    reconcile_settle_seconds: float = 15.0
    reconcile_lookups: int = 2
    # Dispatcher
    retry_policy: str = "fixed"
    retry_delay_seconds: float = 25.0
    retry_max_retries: int = 3
    retry_base_seconds: float = 5.0
    retry_factor: float = 2.0
    retry_cap_seconds: float = 600.0
    retry_max_attempts: int = 8
    dispatch_batch_size: int = 100
    dispatch_concurrency: int = 64
    dispatch_lease_seconds: float = 60.0
    dispatch_poll_seconds: float = 1.0
    dispatch_grace_seconds: float = 20.0
    provider_pause_seconds: float = 30.0
    provider_pause_cap_seconds: float = 1800.0
    status_sweep_after_seconds: float = 900.0
    # Some carriers never report a final status: stop asking the provider after this age.
    status_sweep_max_age_seconds: float = 3 * 86400.0
    # Status lookups per second, per provider, per dispatcher (dispatcher/sweeper.py's read budget).
    status_sweep_reads_per_second: float = 50.0
    alert_webhook_url: str = ""
    alert_webhook_secret: str = field(default="", repr=False)
    metrics_port: int = 0
    # Pace and quiet hours (sms_senders.mps of a newly registered sender; None = never held)
    sender_default_mps: float = 1.0
    quiet_hours: QuietHours | None = None
    # Limits a new API key gets unless told otherwise (None = no limit): smsctl api-keys create.
    api_key_default_rate_per_minute: int | None = None
    api_key_default_daily_message_limit: int | None = None
    api_key_default_recipient_hourly_limit: int | None = None
    # Customer webhooks (DESIGN section 13): deliveries in flight per dispatcher (their own share,
    # apart from DISPATCH_CONCURRENCY), the time one POST may take, how long a delivery is retried,
    # and whether endpoints may resolve to private, loopback or link-local addresses (tests, labs).
    webhook_concurrency: int = 64
    webhook_timeout_seconds: float = 10.0
    webhook_retry_hours: float = 72.0
    webhook_allow_private_urls: bool = False
    # Accept http:// webhook URLs to any host (otherwise https, or http to loopback only).
    allow_http_webhooks: bool = False


def _mps(environ: Mapping[str, str], name: str, default: float) -> float:
    value = _float(environ, name, default)
    problem = mps_problem(value)
    if problem is not None:
        raise ConfigError(f"{name} {problem}, got {value!r}")
    return value


def _quiet_hours(environ: Mapping[str, str], name: str) -> QuietHours | None:
    try:
        return QuietHours.parse(environ.get(name, ""))
    except ValueError as e:
        raise ConfigError(f"{name}: {e}; leave it empty for no quiet hours") from e


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build Settings from an environment mapping (tests pass a dict)."""
    allowed = frozenset(
        c.strip().upper() for c in environ.get("ALLOWED_COUNTRIES", "").split(",") if c.strip()
    )
    provider = environ.get("SMS_PROVIDER", "twilio").strip().lower() or "twilio"
    if provider not in PROVIDERS:
        raise ConfigError(f"SMS_PROVIDER must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    log_level = environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    policy = environ.get("RETRY_POLICY", "fixed").strip().lower() or "fixed"
    if policy not in ("fixed", "exponential"):
        raise ConfigError(f"RETRY_POLICY must be fixed or exponential, got {policy!r}")
    return Settings(
        database_url=environ.get("DATABASE_URL", ""),
        database_listen_url=(
            environ.get("DATABASE_LISTEN_URL", "").strip() or environ.get("DATABASE_URL", "")
        ),
        database_timeout_seconds=_positive(environ, "DATABASE_TIMEOUT_SECONDS", 5.0),
        public_base_url=environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/"),
        default_region=environ.get("DEFAULT_REGION", "US").strip().upper() or "US",
        allowed_countries=allowed,
        max_request_bytes=_int(environ, "MAX_REQUEST_BYTES", 64 * 1024),
        max_batch_request_bytes=_int(environ, "MAX_BATCH_REQUEST_BYTES", 2 * 1024 * 1024),
        log_unmasked_numbers=_bool(environ, "LOG_UNMASKED_NUMBERS", False),
        log_level=log_level,
        sms_provider=provider,
        twilio_account_sid=environ.get("TWILIO_ACCOUNT_SID", ""),
        twilio_auth_token=environ.get("TWILIO_AUTH_TOKEN", ""),
        twilio_phone_number=environ.get("TWILIO_PHONE_NUMBER", ""),
        twilio_api_base_url=environ.get("TWILIO_API_BASE_URL", "").rstrip("/"),
        signalwire_project_id=environ.get("SIGNALWIRE_PROJECT_ID", ""),
        signalwire_api_token=environ.get("SIGNALWIRE_API_TOKEN", ""),
        signalwire_space=environ.get("SIGNALWIRE_SPACE", ""),
        signalwire_phone_number=environ.get("SIGNALWIRE_PHONE_NUMBER", ""),
        signalwire_signing_key=environ.get("SIGNALWIRE_SIGNING_KEY", ""),
        provider_timeout_seconds=_float(environ, "PROVIDER_TIMEOUT_SECONDS", 10.0),
        reconcile_settle_seconds=_float(environ, "RECONCILE_SETTLE_SECONDS", 15.0),
        reconcile_lookups=max(_int(environ, "RECONCILE_LOOKUPS", 2), 1),
        retry_policy=policy,
        retry_delay_seconds=_float(environ, "RETRY_DELAY_SECONDS", 25.0),
        retry_max_retries=_int(environ, "RETRY_MAX_RETRIES", 3),
        retry_base_seconds=_float(environ, "RETRY_BASE_SECONDS", 5.0),
        retry_factor=_float(environ, "RETRY_FACTOR", 2.0),
        retry_cap_seconds=_float(environ, "RETRY_CAP_SECONDS", 600.0),
        retry_max_attempts=_int(environ, "RETRY_MAX_ATTEMPTS", 8),
        dispatch_batch_size=_int(environ, "DISPATCH_BATCH_SIZE", 100),
        dispatch_concurrency=_int(environ, "DISPATCH_CONCURRENCY", 64),
        dispatch_lease_seconds=_float(environ, "DISPATCH_LEASE_SECONDS", 60.0),
        dispatch_poll_seconds=_float(environ, "DISPATCH_POLL_SECONDS", 1.0),
        dispatch_grace_seconds=_float(environ, "DISPATCH_GRACE_SECONDS", 20.0),
        provider_pause_seconds=_float(environ, "PROVIDER_PAUSE_SECONDS", 30.0),
        provider_pause_cap_seconds=_float(environ, "PROVIDER_PAUSE_CAP_SECONDS", 1800.0),
        status_sweep_after_seconds=_float(environ, "STATUS_SWEEP_AFTER_SECONDS", 900.0),
        status_sweep_max_age_seconds=_float(environ, "STATUS_SWEEP_MAX_AGE_SECONDS", 3 * 86400.0),
        status_sweep_reads_per_second=_float(environ, "STATUS_SWEEP_READS_PER_SECOND", 50.0),
        alert_webhook_url=environ.get("ALERT_WEBHOOK_URL", ""),
        alert_webhook_secret=environ.get("ALERT_WEBHOOK_SECRET", ""),
        metrics_port=_int(environ, "METRICS_PORT", 0),
        sender_default_mps=_mps(environ, "SENDER_DEFAULT_MPS", 1.0),
        quiet_hours=_quiet_hours(environ, "QUIET_HOURS"),
        api_key_default_rate_per_minute=_limit(environ, "API_KEY_DEFAULT_RATE_PER_MINUTE"),
        api_key_default_daily_message_limit=_limit(environ, "API_KEY_DEFAULT_DAILY_MESSAGE_LIMIT"),
        api_key_default_recipient_hourly_limit=_limit(
            environ, "API_KEY_DEFAULT_RECIPIENT_HOURLY_LIMIT"
        ),
        webhook_concurrency=_at_least_one(environ, "WEBHOOK_CONCURRENCY", 64),
        webhook_timeout_seconds=_positive(environ, "WEBHOOK_TIMEOUT_SECONDS", 10.0),
        webhook_retry_hours=_positive(environ, "WEBHOOK_RETRY_HOURS", 72.0),
        webhook_allow_private_urls=_bool(environ, "WEBHOOK_ALLOW_PRIVATE_URLS", False),
        allow_http_webhooks=_bool(environ, "ALLOW_HTTP_WEBHOOKS", False),
    )
