"""What the API's handlers work with, built once by the lifespan (api.app) and typed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from api.group_commit import Committer
from api.key_reads import KeyReads
from api.limits import Quota
from shared.config import Settings
from shared.providers.base import Provider
from shared.wakeup import Wakeup
from shared.webhook_targets import Resolver, system_resolver

# The key of the AppState in the lifespan state, which the server copies into every request.
STATE_KEY: Final = "app_state"


@dataclass(frozen=True)
class AppState:
    """The settings, the pool, the provider clients (by name, configured ones only), the
    dispatcher wake-up, this process's share of the keys' quotas, the send path's group commit
    and its grouped key reads: the real things the composition root made."""

    settings: Settings
    pool: AsyncConnectionPool[Any]
    providers: Mapping[str, Provider]
    wakeup: Wakeup
    quota: Quota = field(default_factory=Quota)
    # How webhook URLs' host names are resolved at registration (tests pass a stub).
    resolve: Resolver = system_resolver
    # POST /sms/send's group commit (None: each request writes its own transaction).
    committer: Committer | None = None
    # The send paths' grouped key reads (None: each request reads its own key).
    key_reads: KeyReads | None = None


def state(request: Request) -> AppState:
    """The running app's AppState; a request served without the lifespan is a programming error."""
    found = request.scope.get("state", {}).get(STATE_KEY)
    if not isinstance(found, AppState):
        raise RuntimeError("the API's lifespan did not run: no AppState in the request")
    return found
