"""Rendering the console's pages: the Jinja2 environment (autoescaped), its filters, and the
headers every page carries."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from api.ops.session import CSRF_FIELD, Operator
from shared.alerts import masked_recipient

HERE: Final = Path(__file__).resolve().parent
TEMPLATES: Final = Jinja2Templates(directory=HERE / "templates")
STATIC_DIR: Final = HERE / "static"
# No script at all, styles and images from us only, no framing, forms post only to us.
HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_NUMBER = re.compile(r"\+[1-9][0-9]{6,14}")


def when(value: datetime | None) -> str:
    """A time as the console prints it: UTC, to the second."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: float | Decimal | None) -> str:
    """A duration for people: '42 s', '3 min 5 s', '2 h 10 min'."""
    if seconds is None:
        return "-"
    total = int(seconds)
    if total < 60:
        return f"{max(total, 0)} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def mask(number: str | None) -> str:
    """A phone number with only its country code and last 4 digits."""
    return "-" if number is None else masked_recipient(number)


def detail(value: Any, reveal: bool = False) -> str:
    """An event's detail as compact JSON, every phone number in it masked unless revealed."""
    if value is None:
        return ""
    text = json.dumps(value, sort_keys=True, default=str)
    return text if reveal else _NUMBER.sub(lambda m: masked_recipient(m.group(0)), text)


def number(value: float | Decimal | int | None) -> str:
    """A count or rate without trailing zeros ('2.5', '10'); '-' for none."""
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return f"{value:g}" if isinstance(value, float) else str(value)


TEMPLATES.env.filters.update(when=when, age=age, mask=mask, detail=detail, number=number)
TEMPLATES.env.globals["csrf_field"] = CSRF_FIELD


def page(
    request: Request,
    template: str,
    operator: Operator | None,
    status: int = 200,
    **context: Any,
) -> Response:
    """A rendered page with the console's headers."""
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {"operator": operator, "path": request.url.path, **context},
        status_code=status,
        headers=HEADERS,
    )
