"""The vendored provider schemas (README.md) as validators, with the providers' own formats."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs

HERE = Path(__file__).resolve().parent
_FILES = {"twilio": "twilio_api_v2010.json", "signalwire": "signalwire_rest_openapi.json"}
# "Thu, 24 Aug 2023 05:01:45 +0000": RFC 2822 as every date in Twilio's examples is written.
_RFC2822 = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" \d{4} \d{2}:\d{2}:\d{2} \+0000"
)


def _rfc2822(value: str) -> bool:
    if not _RFC2822.fullmatch(value):
        return False
    parsed = parsedate_to_datetime(value)  # also catches a weekday that does not fit the date
    return parsed.strftime("%a") == value[:3]


def _twilio_uri(value: str) -> bool:
    """Twilio's `uri` fields are paths relative to https://api.twilio.com (its own examples)."""
    return value.startswith("/2010-04-01/Accounts/") and " " not in value


def _int32(value: Any) -> bool:
    return isinstance(value, int) and -(2**31) <= value < 2**31


_COMMON: dict[str, Callable[[Any], bool]] = {"int32": _int32, "double": lambda v: True}
FORMATS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "twilio": {
        **_COMMON,
        "date-time-rfc-2822": _rfc2822,
        "phone-number": lambda v: re.fullmatch(r"\+[1-9][0-9]{1,14}", v) is not None,
        "currency": lambda v: re.fullmatch(r"[A-Za-z]{3}", v) is not None,
        "uri": _twilio_uri,
        "uri-map": lambda v: True,  # an object of uris; a string format function never sees it
    },
    "signalwire": dict(_COMMON),
}


@cache
def _validator(provider: str, name: str) -> Any:
    schemas = json.loads((HERE / _FILES[provider]).read_text(encoding="utf-8"))["schemas"]
    return jsonschema_rs.validator_for(
        schemas[name],
        validate_formats=True,
        ignore_unknown_formats=False,
        formats=FORMATS[provider],
    )


def schema_names(provider: str) -> list[str]:
    """The names of one provider's vendored schemas."""
    data = json.loads((HERE / _FILES[provider]).read_text(encoding="utf-8"))
    return sorted(data["schemas"])


def properties(provider: str, name: str) -> set[str]:
    """The property names a vendored object schema declares."""
    data = json.loads((HERE / _FILES[provider]).read_text(encoding="utf-8"))
    return set(data["schemas"][name]["properties"])


def problems(provider: str, name: str, instance: Any) -> list[str]:
    """Every way `instance` breaks the named schema (empty when it validates)."""
    return [
        f"{'/'.join(str(p) for p in e.instance_path) or '(root)'}: {e.message}"
        for e in _validator(provider, name).iter_errors(instance)
    ]
