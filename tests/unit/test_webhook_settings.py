"""The webhook settings: defaults and refusals (shared.config)."""

from __future__ import annotations

import pytest

from shared.config import load_settings
from shared.errors import ConfigError


def test_webhook_defaults() -> None:
    """64 in flight (as many as DISPATCH_CONCURRENCY's sends), 10 s per POST, 72 h of retries,
    no private addresses."""
    s = load_settings({})
    assert (s.webhook_concurrency, s.webhook_timeout_seconds, s.webhook_retry_hours) == (64, 10, 72)
    assert s.webhook_allow_private_urls is False


def test_webhook_settings_are_read() -> None:
    """Each WEBHOOK_* variable sets its field."""
    s = load_settings(
        {
            "WEBHOOK_CONCURRENCY": "4",
            "WEBHOOK_TIMEOUT_SECONDS": "2.5",
            "WEBHOOK_RETRY_HOURS": "1",
            "WEBHOOK_ALLOW_PRIVATE_URLS": "true",
        }
    )
    assert (s.webhook_concurrency, s.webhook_timeout_seconds, s.webhook_retry_hours) == (4, 2.5, 1)
    assert s.webhook_allow_private_urls is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBHOOK_CONCURRENCY", "0"),
        ("WEBHOOK_CONCURRENCY", "many"),
        ("WEBHOOK_TIMEOUT_SECONDS", "0"),
        ("WEBHOOK_RETRY_HOURS", "-1"),
        ("WEBHOOK_ALLOW_PRIVATE_URLS", "maybe"),
    ],
)
def test_bad_webhook_settings_are_refused_by_name(name: str, value: str) -> None:
    """A bad value is a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})
