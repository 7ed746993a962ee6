"""JSON log lines with stable keys; phone numbers masked unless LOG_UNMASKED_NUMBERS is set."""

from __future__ import annotations

import contextvars
import functools
import logging
import sys

from pythonjsonlogger.json import JsonFormatter

# Set per HTTP request (or per dispatched job) so every line carries it without passing it around.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

# Set per HTTP request by the API's middleware: what the request did (a message created, a replay),
# written in that request's one access line instead of a line of its own (`annotate`).
request_fields_var: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "request_fields", default=None
)

_unmasked = False


def annotate(**fields: object) -> bool:
    """Add `fields` to the current HTTP request's access line; False outside a request (the caller
    then logs a line of its own)."""
    found = request_fields_var.get()
    if found is None:
        return False
    found.update(fields)
    return True


def mask_number(number: str | None) -> str | None:
    """'+14155550123' -> '+1******0123': country code and last 4 digits only."""
    if number is None or _unmasked:
        return number
    if not number.startswith("+") or len(number) < 8:
        return "***"
    digits = number[1:]
    # Hot path (a log line per message): plain E.164 needs only the calling-code table.
    cc = _calling_code(digits) if digits.isdigit() and len(digits) <= 15 else _parsed_code(number)
    if cc is None:
        return "***"
    hidden = len(digits) - len(cc) - 4
    return "+" + cc + "*" * max(hidden, 0) + digits[-4:]


@functools.cache
def _calling_codes() -> frozenset[str]:
    # Read once from phonenumbers' own metadata; calling codes are prefix-free (ITU E.164).
    import phonenumbers

    return frozenset(str(cc) for cc in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def _calling_code(digits: str) -> str | None:
    codes = _calling_codes()
    for size in (1, 2, 3):
        if digits[:size] in codes:
            return digits[:size]
    return None


@functools.lru_cache(maxsize=1024)
def _parsed_code(number: str) -> str | None:
    # Anything but plain E.164 digits (spaces, punctuation): phonenumbers decides, as before.
    import phonenumbers

    try:
        return str(phonenumbers.parse(number).country_code)
    except phonenumbers.NumberParseException:
        return None


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


def setup_logging(level: str = "INFO", *, unmasked_numbers: bool = False) -> None:
    """Send JSON lines to stderr from the root logger; call once per process."""
    global _unmasked
    _unmasked = unmasked_numbers
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that log request URLs or bodies at INFO stay quiet: they could leak numbers or text.
    for noisy in (
        "twilio",
        "twilio.http_client",
        "httpx",
        "httpcore",
        "uvicorn.access",
        "signalwire",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
