"""The registration rules of webhook endpoints (shared.webhook_registration), with a stub
resolver: no name is ever looked up for real."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from shared import webhook_registration
from shared.webhook_events import EVENT_TYPES
from shared.webhook_registration import check_registration, events_problems, url_shape_problem
from tests.webhook_support import offline_resolver


@pytest.mark.parametrize(
    ("url", "allow_http", "code"),
    [
        ("https://hooks.example.com/a?b=c", False, None),
        ("http://localhost:3000/hooks", False, None),
        ("http://127.0.0.1/hooks", False, None),
        ("http://[::1]:8080/", False, None),
        ("http://hooks.example.com/", True, None),
        ("http://hooks.example.com/", False, "https_required"),
        (None, False, "required"),
        (["https://x"], False, "invalid_type"),
        ("", False, "invalid_url"),
        ("example.com", False, "invalid_url"),
        ("ftp://example.com/", False, "invalid_url"),
        ("https://", False, "invalid_url"),
        ("https:example.com", False, "invalid_url"),
        ("https://exa mple.com/", False, "invalid_url"),
        ("https://example.com/\u00e9", False, "invalid_url"),
        ("https://example.com:99999/", False, "invalid_url"),
        ("https://a:b@example.com/", False, "invalid_url"),
        ("https://example.com/" + "a" * 2048, False, "invalid_url"),
    ],
)
def test_url_shapes(url: Any, allow_http: bool, code: str | None) -> None:
    """Absolute http(s) URLs in URI characters without credentials; https unless loopback or
    ALLOW_HTTP_WEBHOOKS."""
    problem = url_shape_problem(url, allow_http=allow_http)
    assert (problem.code if problem else None) == code
    if problem is not None:
        assert problem.field == "url"


def test_events_absent_null_or_empty_mean_every_event() -> None:
    """No list, null or [] is every event; a list is kept in order, each name once."""
    assert events_problems(None) == ((), [])
    assert events_problems([]) == ((), [])
    assert events_problems(["message.failed", "message.sent", "message.failed"]) == (
        ("message.failed", "message.sent"),
        [],
    )
    assert events_problems(list(EVENT_TYPES))[0] == EVENT_TYPES


def test_each_bad_event_is_named_by_its_index() -> None:
    """Unknown names and non-strings are problems of events[i]; a non-list of events."""
    _, problems = events_problems(["message.sent", "sent", 3, "webhook.test"])
    assert [(p.field, p.code) for p in problems] == [
        ("events[1]", "unknown_event"),
        ("events[2]", "invalid_type"),
        ("events[3]", "unknown_event"),
    ]
    assert [p.code for p in events_problems({"a": 1})[1]] == ["invalid_type"]


def _check(url: str, *, allow_private: bool = False, resolve: Any = offline_resolver) -> set[str]:
    registration, problems = asyncio.run(
        check_registration(
            url, None, allow_http=False, allow_private=allow_private, resolve=resolve
        )
    )
    assert (registration is None) == bool(problems)
    return {p.code for p in problems}


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://hooks.example.com/", None),
        ("https://93.184.215.14/", None),
        ("https://intranet.example.com/", "address_not_allowed"),
        ("https://mixed.example.com/", "address_not_allowed"),
        ("https://metadata.example.com/", "address_not_allowed"),
        ("https://localhost/", "address_not_allowed"),
        ("https://192.168.1.1/", "address_not_allowed"),
        ("https://100.64.0.1/", "address_not_allowed"),
        ("https://224.0.0.1/", "address_not_allowed"),
        ("https://240.0.0.1/", "address_not_allowed"),
        ("https://0.0.0.0/", "address_not_allowed"),
        ("https://[fe80::1]/", "address_not_allowed"),
        ("https://[::ffff:10.0.0.1]/", "address_not_allowed"),
        ("https://nowhere.invalid/", "unresolvable_host"),
    ],
)
def test_addresses_must_be_public(url: str, code: str | None) -> None:
    """Private, loopback, link-local, shared, multicast, reserved and unspecified addresses
    are refused, literal or resolved, and so is a name with one such address among others."""
    assert _check(url) == ({code} if code else set())


def test_allow_private_admits_private_and_loopback_but_still_needs_a_name_that_resolves() -> None:
    """WEBHOOK_ALLOW_PRIVATE_URLS lifts the address rule, not the look-up."""
    assert _check("https://intranet.example.com/", allow_private=True) == set()
    assert _check("http://localhost:8010/_sim/webhooks/dev", allow_private=True) == set()
    assert _check("https://nowhere.invalid/", allow_private=True) == {"unresolvable_host"}


def test_literals_and_bad_urls_are_never_looked_up() -> None:
    """The resolver is asked only for a well-formed URL whose host is a name."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> Sequence[str]:
        asked.append(f"{host}:{port}")
        return ["93.184.215.14"]

    assert _check("https://10.0.0.1/", resolve=resolve) == {"address_not_allowed"}
    assert _check("http://hooks.example.com/", resolve=resolve) == {"https_required"}
    assert _check("https://hooks.example.com:8443/x", resolve=resolve) == set()
    assert asked == ["hooks.example.com:8443"]


def test_a_slow_resolver_is_an_unresolvable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A look-up past RESOLVE_TIMEOUT_SECONDS refuses the URL instead of hanging the request."""
    monkeypatch.setattr(webhook_registration, "RESOLVE_TIMEOUT_SECONDS", 0.01)

    async def hang(host: str, port: int) -> Sequence[str]:
        await asyncio.sleep(10)
        return []

    assert _check("https://hooks.example.com/", resolve=hang) == {"unresolvable_host"}


def test_the_scheme_is_stored_in_lower_case() -> None:
    """HTTPS://... is registered as https://... (the table's CHECK reads it so)."""
    registration, _ = asyncio.run(
        check_registration(
            "HTTPS://hooks.example.com/A",
            ["message.sent"],
            allow_http=False,
            allow_private=False,
            resolve=offline_resolver,
        )
    )
    assert registration is not None
    assert registration.url == "https://hooks.example.com/A"
    assert registration.events == ("message.sent",)
