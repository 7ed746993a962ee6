"""Settings: every variable load_settings reads is documented, and bad values are refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.config import load_settings
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_in_the_readme() -> None:
    """README's Environment table names each variable shared/config.py reads."""
    source = (ROOT / "shared" / "config.py").read_text()
    read = set(re.findall(r'environ(?:\.get\(|, )"([A-Z_]+)"', source))
    assert len(read) > 30  # the pattern still finds the reads
    readme = (ROOT / "README.md").read_text()
    missing = sorted(name for name in read if f"`{name}`" not in readme)
    assert missing == []


@pytest.mark.parametrize(
    "environ",
    [
        {"SMS_PROVIDER": "nexmo"},
        {"RETRY_POLICY": "linear"},
        {"RETRY_DELAY_SECONDS": "soon"},
        {"DISPATCH_BATCH_SIZE": "1.5"},
        {"LOG_UNMASKED_NUMBERS": "maybe"},
        {"LOG_LEVEL": "LOUD"},
    ],
)
def test_bad_values_are_refused_with_the_variable_named(environ: dict[str, str]) -> None:
    """A malformed setting stops start-up with an error naming the variable."""
    (name,) = environ
    with pytest.raises(ConfigError, match=name):
        load_settings(environ)


def test_secrets_stay_out_of_repr() -> None:
    """Tokens and keys never show in a logged or printed Settings."""
    settings = load_settings(
        {
            "TWILIO_AUTH_TOKEN": "tok-123",
            "SIGNALWIRE_SIGNING_KEY": "key-456",
            "DATABASE_URL": "postgresql://u:pw-789@h/db",
            "ALERT_WEBHOOK_SECRET": "sec-000",
            "SIGNALWIRE_API_TOKEN": "swt-111",
        }
    )
    text = repr(settings)
    for secret in ("tok-123", "key-456", "pw-789", "sec-000", "swt-111"):
        assert secret not in text
