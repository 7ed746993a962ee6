"""The API's composition root: `uvicorn api.app:app` (settings from the environment at start-up)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Final

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from api.__main__ import workers
from api.batch import routes as batch_routes
from api.customer_webhooks import routes as customer_webhook_routes
from api.errors import ApiError, handle_api_error, handle_http_exception
from api.group_commit import Committer, Hooks, writers_for
from api.health import healthz, readyz, warn_about_senders
from api.inbound import routes as inbound_routes
from api.key_reads import Hooks as KeyReadHooks
from api.key_reads import KeyReads
from api.limits import Quota
from api.messages import get_message
from api.metrics import metrics_endpoint
from api.middleware import RequestContext
from api.openapi import openapi_endpoint
from api.operations import cancel_message, list_messages, retry_message
from api.ops import routes as ops_routes
from api.send import send_sms
from api.state import STATE_KEY, AppState
from api.suppressions import routes as suppression_routes
from api.webhooks import routes as webhook_routes
from shared import metrics, senders
from shared.config import Settings, load_settings
from shared.db import Outage, open_pool, reconnect_delay, unavailable
from shared.errors import ConfigError
from shared.logs import setup_logging
from shared.providers.registry import close_providers, open_providers
from shared.wakeup import Wakeup
from shared.webhook_targets import Resolver, system_resolver

log = logging.getLogger(__name__)
APPLICATION_NAME: Final = "sms-outbox-api"
# Start-up tries the database this long before serving anyway (readyz says 503 meanwhile).
STARTUP_DB_TIMEOUT_SECONDS: Final = 2.0


async def _register_senders(
    pool: AsyncConnectionPool, settings: Settings, outage: Outage, wait: float | None = None
) -> bool:
    try:
        async with pool.connection(timeout=wait) as conn:
            await senders.register(conn, settings)
    except Exception as e:
        down = unavailable(e)
        if down is not None:
            await outage.failed(down)  # one line per outage, naming DATABASE_URL
        else:
            log.warning(
                "sender registration failed; retrying",
                extra={"action": "sender_registration_failed", "error_category": type(e).__name__},
            )
        return False
    outage.recovered()
    return True


async def _register_until_done(
    pool: AsyncConnectionPool,
    settings: Settings,
    outage: Outage,
    rand: Callable[[], float] = random.random,
) -> None:
    failures = 1
    while not await _register_senders(pool, settings, outage):
        await asyncio.sleep(reconnect_delay(failures, rand()))
        failures += 1


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], datetime | None] | None = None,
    resolve: Resolver = system_resolver,
    group_commit: Hooks | None = None,
    key_reads: KeyReadHooks | None = None,
) -> Starlette:
    """The Starlette app. Without `settings`, they are read from os.environ when it starts (and
    logging is set up then); tests pass their own and keep their log capture. `clock` is the
    time the per-key limits count windows in (tests); None: the database's. `resolve` looks up
    webhook URLs' hosts at registration (tests pass a stub that reaches no DNS server);
    `group_commit` hooks into POST /sms/send's group commit, `key_reads` into the send paths'
    grouped key reads (tests)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, AppState]]:
        current = settings
        if current is None:
            current = load_settings(os.environ)
            setup_logging(current.log_level, unmasked_numbers=current.log_unmasked_numbers)
        if not current.database_url:
            raise ConfigError("DATABASE_URL is not set")
        senders.configured(current)  # a malformed sender number stops the start, DB up or not
        warn_about_senders(current)
        timeout = current.database_timeout_seconds
        pool = await open_pool(
            current.database_url,
            application_name=APPLICATION_NAME,
            wait=False,
            timeout_seconds=timeout,
        )
        # Built here, once, so a callback handler never opens a client (the API only verifies
        # and parses callbacks with them; it never sends).
        providers = await open_providers(current)
        outage = Outage(log, pool=pool, timeout=timeout)
        wakeup = Wakeup(pool)
        wakeup.start()
        # The group commit's writers have connections of their own (one each): a group never
        # waits behind the requests for one.
        writers = (group_commit or Hooks()).writers or writers_for(workers(os.environ))
        writers_pool = await open_pool(
            current.database_url,
            application_name=APPLICATION_NAME,
            min_size=writers,
            max_size=writers,
            wait=False,
            timeout_seconds=timeout,
        )
        committer = Committer(writers_pool, pool, wakeup, writers=writers, hooks=group_commit)
        committer.start()
        readers = KeyReads(pool, hooks=key_reads)
        readers.start()
        retrying: asyncio.Task[None] | None = None
        if not await _register_senders(
            pool, current, outage, min(STARTUP_DB_TIMEOUT_SECONDS, timeout)
        ):
            retrying = asyncio.create_task(_register_until_done(pool, current, outage))
        log.info("api started", extra={"action": "api_started"})
        try:
            # Starlette hands this to every request's scope; handlers read it with api.state.state.
            quota = Quota() if clock is None else Quota(clock)
            yield {
                STATE_KEY: AppState(
                    current, pool, providers, wakeup, quota, resolve, committer, readers
                )
            }
        finally:
            if retrying is not None:
                retrying.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retrying
            await committer.stop()  # what is queued is written before the pools close
            await readers.stop()
            await writers_pool.close()
            await wakeup.stop()
            await close_providers(providers)
            await pool.close()
            metrics.process_stopped()
            log.info("api stopped", extra={"action": "api_stopped"})

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/sms/send", send_sms, methods=["POST"]),
        *batch_routes,
        Route("/sms/messages", list_messages, methods=["GET"]),
        Route("/sms/messages/{message_id}", get_message, methods=["GET"]),
        Route("/sms/messages/{message_id}/cancel", cancel_message, methods=["POST"]),
        Route("/sms/messages/{message_id}/retry", retry_message, methods=["POST"]),
        *suppression_routes,
        *customer_webhook_routes,
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_endpoint, methods=["GET"]),
        *webhook_routes,
        *inbound_routes,
        *ops_routes,  # the operators' console (DESIGN section 14)
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequestContext)],
        exception_handlers={ApiError: handle_api_error, HTTPException: handle_http_exception},
        lifespan=lifespan,
    )


def _from_environment() -> Starlette:
    """`uvicorn api.app:app`: a bad or missing setting stops the start with one line naming its
    variable and exit code 2, as the dispatcher does (raised in the lifespan it would be a
    traceback)."""
    try:
        settings = load_settings(os.environ)
        if not settings.database_url:
            raise ConfigError("DATABASE_URL is not set")
        senders.configured(settings)
    except ConfigError as e:
        print(f"api: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return create_app()


_APP: list[Starlette] = []


def __getattr__(name: str) -> Starlette:
    """`api.app:app`, built from the environment when uvicorn first asks for it (PEP 562), so that
    importing create_app (the tests do) reads no environment."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if not _APP:
        _APP.append(_from_environment())
    return _APP[0]
