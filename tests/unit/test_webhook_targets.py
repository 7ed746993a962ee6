"""shared.webhook_targets: URL rules and the address check, with a stub resolver (no DNS, no
traffic)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from shared.webhook_targets import (
    Target,
    TargetRefused,
    address_problem,
    check_target,
    split_url,
    url_problem,
)


class Stub:
    """A resolver answering from a table (an unknown name fails as a real lookup does); it
    remembers what it was asked."""

    def __init__(self, answers: dict[str, Sequence[str]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append((host, port))
        if host not in self.answers:
            raise OSError("Name or service not known")
        return self.answers[host]


def check(url: str, answers: dict[str, Sequence[str]], *, allow_private: bool = False) -> Target:
    return asyncio.run(check_target(url, resolve=Stub(answers), allow_private=allow_private))


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address under test, not a bind
        ("::", "unspecified"),
        ("240.0.0.1", "private"),  # reserved 240/4 is in the stdlib's private table
        ("100.64.0.1", "non-public"),  # shared address space (carrier NAT)
        ("192.0.2.10", "private"),  # documentation
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6 is checked as the IPv4 it maps
        ("::ffff:10.0.0.1", "private"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("not an address", "invalid"),
    ],
)
def test_address_problem_names_the_kind_of_address_refused(
    address: str, problem: str | None
) -> None:
    """Private, loopback, link-local, multicast, unspecified, reserved and other non-public
    addresses are refused by kind; public ones pass."""
    assert address_problem(address) == problem


def test_a_public_name_resolves_to_its_first_address_and_keeps_the_url_host() -> None:
    """The target is the URL's host and port (default 443) and the first address to connect to."""
    target = check("https://Hooks.Example.com./in?x=1", {"hooks.example.com": ["93.184.215.14"]})
    assert target == Target("https", "hooks.example.com", 443, "93.184.215.14")


def test_one_private_address_among_public_ones_refuses_the_url() -> None:
    """The connection could go to any address of the name, so every one must be public."""
    with pytest.raises(TargetRefused, match=r"resolves to a private address \(10\.0\.0\.7\)"):
        check("https://mixed.example/x", {"mixed.example": ["93.184.215.14", "10.0.0.7"]})


def test_a_private_literal_is_refused_without_resolving() -> None:
    """An IP literal is checked as it is; the resolver is not asked."""
    resolve = Stub({})
    with pytest.raises(TargetRefused, match="loopback"):
        asyncio.run(check_target("http://127.0.0.1:8080/", resolve=resolve, allow_private=False))
    assert resolve.asked == []


def test_allow_private_lets_loopback_through() -> None:
    """WEBHOOK_ALLOW_PRIVATE_URLS (tests, labs): private and loopback addresses are allowed."""
    target = check("http://localhost:9000/hook", {"localhost": ["127.0.0.1"]}, allow_private=True)
    assert (target.address, target.port) == ("127.0.0.1", 9000)


def test_a_name_that_does_not_resolve_is_refused() -> None:
    """No address (or a failed lookup) is a refusal, never an exception of the resolver."""
    with pytest.raises(TargetRefused, match="does not resolve"):
        check("https://nowhere.example/", {})
    with pytest.raises(TargetRefused, match="does not resolve"):
        check("https://empty.example/", {"empty.example": []})


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "must start with https://"),
        ("example.com/hook", "must start with https://"),
        ("https:///path", "no host"),
        ("https://example.com:99999/", "not a valid URL"),
        ("https://example.com/" + "a" * 2100, "longer than 2048"),
    ],
)
def test_split_url_refuses_what_is_no_http_url(url: str, reason: str) -> None:
    """Bad URLs are refused with a reason an API can show as a 400."""
    with pytest.raises(TargetRefused, match=reason):
        split_url(url)


@pytest.mark.parametrize(
    ("url", "allow_http", "problem"),
    [
        ("https://example.com/hook", False, None),
        ("http://example.com/hook", False, "must use https"),
        ("http://example.com/hook", True, None),
        ("http://127.0.0.1:8000/hook", False, None),
        ("http://localhost/hook", False, None),
        ("http://[::1]:8000/hook", False, None),
        ("gopher://example.com/", True, "must start with https://"),
    ],
)
def test_url_problem_wants_https_except_to_loopback(
    url: str, allow_http: bool, problem: str | None
) -> None:
    """Registration: https only; http to loopback, or anywhere with ALLOW_HTTP_WEBHOOKS."""
    found = url_problem(url, allow_http=allow_http)
    assert (found is None) if problem is None else (found is not None and problem in found)
