"""The one base error of sms-outbox; each boundary translates library errors into these."""


class SmsOutboxError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(SmsOutboxError):
    """Settings are missing or malformed."""
