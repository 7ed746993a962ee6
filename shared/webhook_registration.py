"""Whether a webhook endpoint may be registered: its URL and its events, each problem naming its
field. No I/O but the resolver passed in (tests pass a stub and never resolve a name).

The rules: an absolute http(s) URL without credentials, in plain URI characters; https unless the
host is loopback or ALLOW_HTTP_WEBHOOKS is set; a host that resolves, to public addresses only
unless WEBHOOK_ALLOW_PRIVATE_URLS is set (loopback is no exception: a webhook to 127.0.0.1 would
reach the operator's own services). The dispatcher checks the address again before each POST.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from shared.validation import Problem
from shared.webhook_events import EVENT_TYPES
from shared.webhook_targets import (
    MAX_URL_LENGTH,
    Resolver,
    TargetRefused,
    check_target,
    is_loopback_host,
    split_url,
)

# The type of a test delivery (POST /sms/webhooks/{id}/test): no event anyone subscribes to.
TEST_EVENT: Final = "webhook.test"
# Fan-out multiplies every status change by the number of a key's endpoints: a few are plenty.
MAX_ENDPOINTS_PER_KEY: Final = 10
# A name that takes longer than this to resolve is refused (the request should not hang on DNS).
RESOLVE_TIMEOUT_SECONDS: Final = 5.0
# RFC 3986 characters: unreserved, reserved and '%'. Anything else (spaces, quotes, non-ASCII)
# must be percent-encoded, or the host written in punycode.
_URI_CHARACTERS: Final = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


@dataclass(frozen=True)
class Registration:
    """A checked endpoint: its URL as given and its events (empty = every event)."""

    url: str
    events: tuple[str, ...]


def url_shape_problem(url: Any, *, allow_http: bool, field: str = "url") -> Problem | None:
    """What is wrong with `url` before any look-up (type, form, scheme, https), or None."""
    if url is None:
        return Problem(field, "required", "the https URL to POST events to is required")
    if not isinstance(url, str):
        return Problem(field, "invalid_type", "must be a string")
    if not url:
        return Problem(field, "invalid_url", "must be an absolute URL starting with https://")
    if len(url) > MAX_URL_LENGTH:
        return Problem(field, "invalid_url", f"at most {MAX_URL_LENGTH} characters")
    if not _URI_CHARACTERS.fullmatch(url):
        return Problem(
            field,
            "invalid_url",
            "not a URL: spaces, quotes and non-ASCII characters must be percent-encoded",
        )
    try:
        scheme, host, _ = split_url(url)
    except TargetRefused as e:
        return Problem(field, "invalid_url", e.reason)
    if scheme == "http" and not allow_http and not is_loopback_host(host):
        return Problem(
            field,
            "https_required",
            "must use https (http only to loopback, or with ALLOW_HTTP_WEBHOOKS)",
        )
    if "@" in urlsplit(url).netloc:
        return Problem(field, "invalid_url", "credentials in the URL are not supported")
    return None


def events_problems(raw: Any, *, field: str = "events") -> tuple[tuple[str, ...], list[Problem]]:
    """The events asked for (absent, null or empty: every event), each once, in the order
    given; or the problems, one per unknown name (`events[2]`)."""
    if raw is None:
        return (), []
    if not isinstance(raw, list):
        return (), [Problem(field, "invalid_type", "must be a list of event names")]
    problems: list[Problem] = []
    for i, name in enumerate(raw):
        if not isinstance(name, str):
            problems.append(Problem(f"{field}[{i}]", "invalid_type", "must be a string"))
        elif name not in EVENT_TYPES:
            problems.append(
                Problem(
                    f"{field}[{i}]",
                    "unknown_event",
                    f"unknown event {name[:60]!r}; expected one of {', '.join(EVENT_TYPES)}",
                )
            )
    if problems:
        return (), problems
    return tuple(dict.fromkeys(raw)), []


async def address_problem(
    url: str, *, resolve: Resolver, allow_private: bool, field: str = "url"
) -> Problem | None:
    """Why `url`'s host may not be sent to (it does not resolve, or to an address that is not
    public), or None. `url` has passed url_shape_problem."""
    unresolved: list[str] = []

    async def tracked(host: str, port: int) -> Sequence[str]:
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
                found = await resolve(host, port)
        except TimeoutError:
            unresolved.append(host)
            raise OSError("timed out") from None
        except OSError:
            unresolved.append(host)
            raise
        if not found:
            unresolved.append(host)
        return found

    try:
        await check_target(url, resolve=tracked, allow_private=allow_private)
    except TargetRefused as e:
        if unresolved:
            return Problem(field, "unresolvable_host", f"{e.reason}; check the host name")
        return Problem(
            field,
            "address_not_allowed",
            f"{e.reason}: webhooks go to public addresses only",
        )
    return None


async def check_registration(
    url: Any,
    events: Any,
    *,
    allow_http: bool,
    allow_private: bool,
    resolve: Resolver,
    url_field: str = "url",
    events_field: str = "events",
) -> tuple[Registration | None, list[Problem]]:
    """The registration, or every problem with it (the address is looked up only for a URL
    that is well formed)."""
    problems: list[Problem] = []
    shape = url_shape_problem(url, allow_http=allow_http, field=url_field)
    if shape is not None:
        problems.append(shape)
    chosen, found = events_problems(events, field=events_field)
    problems += found
    if shape is None:
        address = await address_problem(
            url, resolve=resolve, allow_private=allow_private, field=url_field
        )
        if address is not None:
            problems.append(address)
    if problems:
        return None, problems
    scheme, rest = url.split(":", 1)
    return Registration(url=scheme.lower() + ":" + rest, events=chosen), []
