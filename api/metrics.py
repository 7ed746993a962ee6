"""GET /metrics: the API's Prometheus metrics (every worker process's counts, whichever worker
serves the scrape), with the queue and webhook gauges read from the database at scrape time."""

from __future__ import annotations

import logging
from typing import Final

from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import Response

from api.state import state
from shared import metrics
from shared.queries import q

log = logging.getLogger(__name__)
# A scrape must not hang on a busy pool; the counters are served without the queue gauges then.
QUEUE_TIMEOUT_SECONDS: Final = 2.0


async def metrics_endpoint(request: Request) -> Response:
    scraped = False
    try:
        async with state(request).pool.connection(timeout=QUEUE_TIMEOUT_SECONDS) as conn:
            async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(q("outbox_depth"))
                rows = await cur.fetchall()
                await cur.execute(q("webhook_endpoints_health"))
                hooks = await cur.fetchall()
        metrics.set_queue(rows)
        metrics.set_webhook_health(hooks)
        scraped = True
    except Exception as e:
        log.warning(
            "queue gauges not refreshed",
            extra={"action": "metrics_queue_failed", "error_category": type(e).__name__},
        )
    # Without this scrape's rows the gauges are left out: a worker's last values could be old.
    return Response(metrics.exposition(scraped=scraped), media_type=metrics.CONTENT_TYPE)
