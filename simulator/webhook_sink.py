"""A receiver for the status webhooks sms-outbox sends, to watch them locally (`make run`).

`POST /_sim/webhooks/{name}` records the request (headers and body) and answers
`webhook_sink_status` (204); when `webhook_secrets` has a secret for `name` the record says
whether the Standard Webhooks signature verifies with it (the `standardwebhooks` library's own
check, timestamp tolerance included), else `verified` is null. `GET /_sim/webhooks` lists the
records, oldest first (`?name=`, `?type=`, `?message_id=` filter them). `POST /_sim/reset`
forgets them. The last MAX_RECORDS are kept.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from datetime import UTC, datetime
from typing import Any, Final

from standardwebhooks import Webhook
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from simulator.config import SimConfig

MAX_RECORDS: Final = 1000
# A webhook body is a small JSON object; more than this is not one of ours.
MAX_BODY_BYTES: Final = 256 * 1024
_FILTERS: Final = ("name", "type", "message_id")


def verify(secret: str | None, raw: bytes, headers: dict[str, str]) -> tuple[bool | None, str]:
    """(verified, why not): None when there is no secret to verify with."""
    if secret is None:
        return None, "no secret for this name (webhook_secrets)"
    try:
        Webhook(secret).verify(raw, headers, json_parse=False)
    except Exception as e:  # the library raises more than WebhookVerificationError on bad input
        return False, f"{type(e).__name__}: {e}"
    return True, ""


class WebhookSink:
    """The records of one simulator's sink."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.records: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDS)
        self._seq = itertools.count(1)

    def record(self, name: str, raw: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """Verify and keep one request; the record."""
        verified, why = verify(self.config.webhook_secrets.get(name), raw, headers)
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        data = body.get("data") if isinstance(body, dict) else None
        found = {
            "seq": next(self._seq),
            "name": name,
            "received_at": datetime.now(UTC).isoformat(),
            "webhook_id": headers.get("webhook-id"),
            "type": body.get("type") if isinstance(body, dict) else None,
            "message_id": data.get("id") if isinstance(data, dict) else None,
            "verified": verified,
            "verify_error": why or None,
            "headers": headers,
            "body": body,
        }
        self.records.append(found)
        return found

    def matching(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        return [r for r in self.records if all(r.get(k) == v for k, v in filters.items())]

    def clear(self) -> None:
        self.records.clear()


def routes(sink: WebhookSink) -> list[BaseRoute]:
    async def receive(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return JSONResponse({"error": "body too large for a webhook"}, status_code=413)
        headers = {k.lower(): v for k, v in request.headers.items()}
        sink.record(request.path_params["name"], raw, headers)
        return Response(status_code=sink.config.webhook_sink_status)

    async def listing(request: Request) -> Response:
        filters = {k: v for k, v in request.query_params.items() if k in _FILTERS}
        found = sink.matching(filters)
        return JSONResponse({"count": len(found), "webhooks": found})

    return [
        Route("/_sim/webhooks", listing, methods=["GET"]),
        Route("/_sim/webhooks/{name}", receive, methods=["POST"]),
    ]
