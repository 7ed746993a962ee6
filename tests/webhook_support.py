"""A resolver for webhook URLs that reaches no DNS server: tests talk to 127.0.0.1 only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from shared.webhook_targets import Resolver

# Names the stub knows; every other name does not resolve. The example.* names stand for the
# public and private hosts of the registration tests: registering one connects to nothing.
KNOWN: Final = {
    "localhost": ["127.0.0.1"],
    "hooks.example.com": ["93.184.215.14"],
    "intranet.example.com": ["10.1.2.3"],
    "mixed.example.com": ["93.184.215.14", "192.168.0.7"],
    "metadata.example.com": ["169.254.169.254"],
}


def stub_resolver(table: Mapping[str, Sequence[str]] = KNOWN) -> Resolver:
    """A resolver that answers from `table` and raises OSError for any other name."""

    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise OSError(f"{host}: not in the test resolver's table")
        return list(table[host])

    return resolve


offline_resolver: Final = stub_resolver()
