"""Signed provider status callbacks: verified against the public URL, applied forward-only."""

from __future__ import annotations

import logging
import time
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

from psycopg import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.state import state
from shared import metrics
from shared.queries import q
from shared.status import apply_update

log = logging.getLogger(__name__)

# Status callbacks are a few hundred bytes; anything near this is not one.
MAX_CALLBACK_BYTES: Final = 64 * 1024
TWILIO_PATH: Final = "/webhook/twilio/status"
SIGNALWIRE_PATH: Final = "/webhook/signalwire/status"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_warned: set[str] = set()


def public_urls(public_base_url: str, path: str, query: str) -> list[str]:
    """The URL the provider signed, rebuilt from PUBLIC_BASE_URL (never the request's Host/scheme).

    Also its default-port twin (https :443 / http :80 written or not), since signers differ on it.
    """
    base = urlsplit(public_base_url.rstrip("/"))
    full_path = base.path + path
    netlocs = [base.netloc]
    default = _DEFAULT_PORTS.get(base.scheme)
    if default is not None and base.hostname:
        host = f"[{base.hostname}]" if ":" in base.hostname else base.hostname
        if base.port is None:
            netlocs.append(f"{host}:{default}")
        elif base.port == default:
            netlocs.append(host)
    return [urlunsplit((base.scheme, netloc, full_path, query, "")) for netloc in netlocs]


async def twilio_status(request: Request) -> Response:
    """POST /webhook/twilio/status: Twilio's signed form callback."""
    return await _callback(request, "twilio", TWILIO_PATH)


async def signalwire_status(request: Request) -> Response:
    """POST /webhook/signalwire/status: SignalWire's signed JSON (or compatibility form)."""
    return await _callback(request, "signalwire", SIGNALWIRE_PATH)


async def verified_body(
    request: Request, provider_name: str, path: str, what: str = "status callback"
) -> bytes | Response:
    """The raw body of a webhook `provider_name` signed for PUBLIC_BASE_URL + `path` (+ the query
    string), or the answer that refuses it: 413 past MAX_CALLBACK_BYTES, 403 when the provider is
    not configured (SignalWire: no SIGNALWIRE_SIGNING_KEY) or the signature is bad or missing.
    Checked with the provider's own validator; nothing has been read into the database yet."""
    app = state(request)
    if provider_name == "signalwire" and not app.settings.signalwire_signing_key:
        _warn_once(
            "signalwire-key",
            "SIGNALWIRE_SIGNING_KEY is not set: every SignalWire webhook is refused (403)",
        )
        return Response(status_code=403)
    body = await _read_limited(request, MAX_CALLBACK_BYTES)
    if body is None:
        return Response(status_code=413)
    provider = app.providers.get(provider_name)
    if provider is None:
        _warn_once(
            provider_name, f"{provider_name} is not configured: its webhooks are refused (403)"
        )
        return Response(status_code=403)

    query = request.scope.get("query_string", b"").decode("latin-1")
    urls = public_urls(app.settings.public_base_url, path, query)
    if not any(provider.verify_signature(url, body, request.headers) for url in urls):
        log.warning(
            f"{what} refused: bad or missing signature",
            extra={"action": "callback_forbidden", "provider": provider_name},
        )
        metrics.SIGNATURE_FAILURES.labels(provider_name).inc()
        return Response(status_code=403)
    return body


async def _callback(request: Request, provider_name: str, path: str) -> Response:
    started = time.perf_counter()
    app = state(request)
    body = await verified_body(request, provider_name, path)
    if isinstance(body, Response):
        return body
    provider = app.providers[provider_name]

    try:
        update = provider.parse_callback(
            body, request.headers.get("content-type", ""), dict(request.query_params)
        )
    except Exception as e:
        # Signed by the provider, yet unreadable to us: our parser's fault, not the provider's.
        # Only the exception's type is logged: its text could quote the payload (numbers).
        log.error(
            "status callback unreadable: %s",
            type(e).__name__,
            extra={"action": "callback_unreadable", "provider": provider_name},
        )
        return Response(status_code=400)

    # A database that cannot be reached is api.middleware's 503 (the provider may try again).
    async with app.pool.connection() as conn:
        result = await apply_update(conn, update, settings=app.settings)
        lag = await _callback_lag(conn, result.message_id) if result.recorded else None
    if result.recorded:
        metrics.CALLBACKS.labels(provider_name, update.status or "unrecognized").inc()
    if lag is not None:
        metrics.CALLBACK_LAG.labels(provider_name).observe(max(lag, 0.0))
    log.debug(
        "status callback applied",
        extra={
            "action": "callback_applied",
            "provider": provider_name,
            "message_id": str(result.message_id) if result.message_id else None,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return Response(status_code=204)


async def _callback_lag(conn: AsyncConnection[Any], message_id: UUID | None) -> float | None:
    """Seconds since the message was accepted by its provider, None when unknown."""
    if message_id is None:
        return None
    async with conn.transaction():
        cur = await conn.execute(q("events_callback_lag"), {"id": message_id})
        row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it exceeds `limit` (never buffers more than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _warn_once(key: str, text: str, **extra: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(text, extra={"action": "callback_config", **extra})


routes: list[BaseRoute] = [
    Route(TWILIO_PATH, twilio_status, methods=["POST"], name="twilio_status"),
    Route(SIGNALWIRE_PATH, signalwire_status, methods=["POST"], name="signalwire_status"),
]
