"""Where a customer webhook may be sent: URL rules, and the address check against server-side
request forgery (no webhook into the operator's own network).

The check takes the resolver as an argument, so tests pass a stub and never resolve or reach an
outside address; `system_resolver` is the one piece with I/O. The API checks at registration and
the dispatcher again before every delivery (DNS answers change), and the dispatcher then connects
to the very address it checked, so a name cannot resolve to a public address for the check and
to a private one for the connection (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from shared.errors import SmsOutboxError

# (host, port) -> the addresses the name resolves to, in the order to try them.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
MAX_URL_LENGTH: Final = 2048
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})


class TargetRefused(SmsOutboxError):
    """A webhook URL we will not send to (its reason is safe to show the endpoint's owner)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Target:
    """A checked destination: the URL's host and port, and the address to connect to."""

    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int
    address: str


def split_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; TargetRefused when it is not one."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise TargetRefused(f"not a valid URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise TargetRefused("the URL must start with https:// (or http://)")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise TargetRefused("the URL has no host")
    return scheme, host, port or _DEFAULT_PORTS[scheme]


def is_loopback_host(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1 (a name or literal that never leaves the machine)."""
    if host in _LOOPBACK_NAMES:
        return True
    ip = _ip(host)
    return ip is not None and ip.is_loopback


def url_problem(url: str, *, allow_http: bool) -> str | None:
    """Why `url` cannot be registered (https only, http to loopback or when allowed), or None."""
    try:
        scheme, host, _ = split_url(url)
    except TargetRefused as e:
        return e.reason
    if scheme == "http" and not allow_http and not is_loopback_host(host):
        return "the URL must use https (http only to loopback, or with ALLOW_HTTP_WEBHOOKS)"
    return None


def address_problem(address: str) -> str | None:
    """Why a webhook may not go to this IP address (the kind of address it is), or None."""
    ip = _ip(address)
    if ip is None:
        return "invalid"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-public"
    return None


async def check_target(url: str, *, resolve: Resolver, allow_private: bool) -> Target:
    """Resolve `url`'s host and check every address it has; the first one is the one to use.

    TargetRefused when the URL is no http(s) URL, the name does not resolve, or (unless
    `allow_private`) any of its addresses is private, loopback, link-local, multicast, reserved
    or otherwise not public: one bad address among good ones is refused too, as the connection
    could go to any of them.
    """
    scheme, host, port = split_url(url)
    if _ip(host) is not None:
        addresses: Sequence[str] = [host]
    else:
        try:
            addresses = await resolve(host, port)
        except OSError as e:
            raise TargetRefused(f"{host} does not resolve ({type(e).__name__})") from None
        if not addresses:
            raise TargetRefused(f"{host} does not resolve")
    if not allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem is not None:
                raise TargetRefused(f"{host} resolves to a {problem} address ({address})")
    return Target(scheme=scheme, host=host, port=port, address=addresses[0])


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for `host`, without blocking the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in found:
            found.append(address)
    return found


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone id is not part of it
    except ValueError:
        return None
