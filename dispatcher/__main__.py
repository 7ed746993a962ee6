"""`python -m dispatcher`: composition root (settings, logging, pool, providers, the loop).

Exits 0 after SIGTERM/SIGINT once in-flight work is finished or released (DISPATCH_GRACE_SECONDS).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Mapping

import httpx
from psycopg_pool import AsyncConnectionPool

from dispatcher import sweeper
from dispatcher.expiry import Expiry
from dispatcher.runner import Runner, Sweep
from dispatcher.service import Dispatcher
from dispatcher.wakeup import Wakeup
from dispatcher.webhook_http import session as webhook_session
from dispatcher.webhook_loop import WebhookLoop
from dispatcher.webhooks import WebhookWorker
from shared import metrics
from shared.config import Settings, load_settings
from shared.db import Outage, conninfo_with_app, open_pool
from shared.errors import ConfigError
from shared.logs import setup_logging
from shared.providers.registry import open_providers

log = logging.getLogger("dispatcher")


def owner_id() -> str:
    """`host:pid:uuid8`: who holds a lease, readable in sms_outbox.lease_owner."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def open_sms_pool(settings: Settings) -> AsyncConnectionPool:
    """The SMS sends' pool. wait=False here and in open_webhook_pool: with the database down the
    dispatcher starts anyway; the Runner reports the outage once (naming DATABASE_URL) and claims
    again with backoff until it is back. Both pools run a few statements very often, so they plan
    each once per connection (generic plans: shared.db)."""
    return await open_pool(
        settings.database_url,
        application_name="sms-dispatcher",
        min_size=2,
        max_size=max(4, min(20, settings.dispatch_concurrency // 4 + 2)),
        wait=False,
        timeout_seconds=settings.database_timeout_seconds,
        generic_plans=True,
    )


async def open_webhook_pool(settings: Settings) -> AsyncConnectionPool:
    """The webhook loop's own pool: a slow or dead endpoint never holds a connection an SMS send
    needs."""
    return await open_pool(
        settings.database_url,
        application_name="sms-dispatcher-webhooks",
        min_size=1,
        max_size=max(2, min(8, settings.webhook_concurrency // 4 + 1)),
        wait=False,
        timeout_seconds=settings.database_timeout_seconds,
        generic_plans=True,
    )


async def serve(environ: Mapping[str, str]) -> int:
    settings = load_settings(environ)
    setup_logging(settings.log_level, unmasked_numbers=settings.log_unmasked_numbers)
    if not settings.database_url:
        raise ConfigError("DATABASE_URL is not set")
    if settings.metrics_port:
        metrics.start_metrics_server(settings.metrics_port)
    timeout = settings.database_timeout_seconds
    pool = await open_sms_pool(settings)
    providers = await open_providers(settings)
    http = httpx.AsyncClient()
    owner = owner_id()
    dispatcher = Dispatcher(
        settings=settings, pool=pool, providers=providers, owner=owner, http=http
    )
    # Customer webhooks get their own pool and HTTP client: a slow or dead endpoint never holds a
    # connection or a slot an SMS send needs. No redirects (a 3xx is a failed attempt) and no
    # proxies from the environment (the address checked is the address connected to).
    webhook_pool = await open_webhook_pool(settings)
    webhook_http = webhook_session(settings.webhook_concurrency, settings.webhook_timeout_seconds)
    webhooks = WebhookLoop(WebhookWorker(webhook_pool, settings, owner, http=webhook_http))
    # SWEEPER HOOK: the status sweeper (dispatcher/sweeper.py, the callbacks work) runs inside this
    # process; Runner runs its passes at the pace each asks for and logs (never raises) failures.
    sweep: Sweep = sweeper.Sweeper(pool, providers, settings)
    runner = Runner(
        dispatcher,
        # LISTEN needs a session of its own: DATABASE_LISTEN_URL (default DATABASE_URL) is the
        # direct one when DATABASE_URL goes through a transaction-pooling PgBouncer.
        Wakeup(
            conninfo_with_app(
                settings.database_listen_url, "sms-dispatcher-listen", timeout=timeout
            )
        ),
        sweep=sweep,
        expire=Expiry(pool, settings),
        webhooks=webhooks,
        outage=Outage(log, pool=pool, timeout=timeout),
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.stop)
    try:
        await runner.run()
    finally:
        await http.aclose()
        await webhook_http.close()
        await webhook_pool.close()
        for provider in providers.values():
            await provider.aclose()
        await pool.close()
    return 0


def main() -> int:
    try:
        return asyncio.run(serve(os.environ))
    except ConfigError as e:
        print(f"dispatcher: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
