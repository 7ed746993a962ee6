"""SignalWire via `signalwire-sdk`, run off the event loop; failures become ProviderError."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

import requests
from signalwire.core.security.webhook_validator import validate_webhook_signature
from signalwire.rest import RestClient
from signalwire.rest._base import SignalWireRestError, SignalWireRestTransportError
from signalwire.rest._request_options import RequestOptions
from urllib3.exceptions import NameResolutionError, NewConnectionError

from shared.config import Settings
from shared.providers import signalwire_codes
from shared.providers.base import (
    Category,
    CopyLookup,
    NewestFirst,
    ProviderError,
    RemoteMessage,
    SendRequest,
    SendResult,
    StatusUpdate,
    header,
    parse_retry_after,
)
from shared.providers.twilio import parse_form_callback, parse_uuid

T = TypeVar("T")
CLOCK_SKEW = timedelta(seconds=2)
# Log entries per page of a reconciliation lookup (the log is project-wide, newest first).
PAGE_SIZE = 1000
# Past this many log entries since the attempt, a lookup is inconclusive (looked up again later,
# never a reason to resend): a guard against an endless read, not a window.
SCAN_LIMIT = 200_000


def status_callback_url(public_base_url: str) -> str:
    """Where SignalWire posts statuses; our message id travels in custom_variables instead."""
    return f"{public_base_url.rstrip('/')}/webhook/signalwire/status"


def _never_connected(exc: BaseException | None) -> bool:
    """Whether a requests failure happened before any byte of the request left (refused, DNS)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, requests.ConnectTimeout | NewConnectionError | NameResolutionError):
            return True
        reason = getattr(exc, "reason", None)
        inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        exc = reason if isinstance(reason, BaseException) else inner or exc.__cause__
        seen += 1
    return False


def _error(entry: tuple[Category, str], **details: Any) -> ProviderError:
    category, reason = entry
    opted_out = details.get("code") in signalwire_codes.OPT_OUT
    return ProviderError(category, reason, opted_out=opted_out, **details)


def translate(exc: Exception) -> ProviderError:
    """Map a signalwire-sdk exception to our category."""
    if isinstance(exc, SignalWireRestTransportError):
        if _never_connected(exc.__cause__):
            return _error(signalwire_codes.CONNECT_ERROR)
        return _error(signalwire_codes.READ_TIMEOUT)  # read timeout or reset after sending
    if isinstance(exc, SignalWireRestError):
        status = exc.status_code or 0
        code = _first_code(exc.body)
        details: dict[str, Any] = {"code": code, "http_status": status}
        if status in (401, 403):
            return _error(signalwire_codes.HTTP_401, **details)
        if status == 429:
            headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
            retry_after = parse_retry_after(headers.get("retry-after"))
            entry = signalwire_codes.classify(code) or signalwire_codes.HTTP_429
            return _error(entry, retry_after=retry_after, **details)
        if status >= 500 or 200 <= status < 300:  # 5xx, or a 2xx we could not read
            return _error(signalwire_codes.HTTP_5XX, **details)
        if status == 404:
            return _error(signalwire_codes.HTTP_404, **details)
        return _error(
            signalwire_codes.classify(code) or signalwire_codes.UNCLASSIFIED_4XX, **details
        )
    if isinstance(exc, TimeoutError):
        return _error(signalwire_codes.READ_TIMEOUT)
    return ProviderError(Category.AMBIGUOUS, f"{type(exc).__name__} after the request was sent")


def _first_code(body: Any) -> str | None:
    if isinstance(body, dict):
        items = body.get("errors")
        if isinstance(items, list) and items and isinstance(items[0], dict):
            code = items[0].get("code")
            return str(code) if code is not None else None
    return None


class SignalWireProvider:
    """Provider over SignalWire's native Messaging API; calls run on the provider's own threads."""

    name = "signalwire"
    compares_bodies = False

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeout = settings.provider_timeout_seconds
        self._signing_key = settings.signalwire_signing_key
        # The SDK's retries stay off: a retried POST would be a second message.
        self._options = RequestOptions(retries=0, timeout=settings.provider_timeout_seconds)
        # One client per worker thread: requests.Session is not meant to be shared across threads.
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(
            max_workers=max(settings.dispatch_concurrency, 4), thread_name_prefix="signalwire"
        )

    def callback_url(self) -> str:
        return status_callback_url(self._settings.public_base_url)

    def _client(self) -> RestClient:
        client: RestClient | None = getattr(self._local, "client", None)
        if client is None:
            s = self._settings
            client = RestClient(
                project=s.signalwire_project_id,
                token=s.signalwire_api_token,
                host=s.signalwire_space,
                request_options=self._options,
            )
            self._local.client = client
        return client

    async def _call(self, work: Callable[[RestClient], T]) -> T:
        """Run one SDK call on our threads under a hard timeout."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                return await loop.run_in_executor(self._pool, lambda: work(self._client()))
        except (SignalWireRestError, TimeoutError, OSError, ValueError) as e:
            raise translate(e) from e

    async def send(self, request: SendRequest) -> SendResult:
        callback = request.status_callback_url or self.callback_url()
        message = await self._call(
            lambda c: c.messages.create(
                to=request.to_number,
                from_=request.from_number,
                body=request.body,
                status_callback=callback,
                custom_variables={"message_id": str(request.message_id)},
            )
        )
        return SendResult(sid=str(message.get("id")), raw_status=str(message.get("status", "")))

    async def fetch(self, sid: str) -> RemoteMessage:
        entry = await self._call(lambda c: c.logs.messages.get(sid))
        return _remote(dict(entry))

    async def find_copies(self, lookup: CopyLookup) -> list[RemoteMessage]:
        """Outbound log entries from->to created in the lookup's window, with our segment count.

        SignalWire's message log has no body and no from/to filter, so the whole project log of
        the window is read (every page, newest first, until a whole page is older than the
        window). Two of our messages to one recipient in one window both match; the dispatcher
        never adopts a sid that another message of ours holds.
        """
        earliest = lookup.since - CLOCK_SKEW
        latest = lookup.until + CLOCK_SKEW
        day = (earliest - timedelta(days=1)).date().isoformat()  # day filters; compare below

        def scan(c: RestClient) -> list[dict[str, Any]]:
            hits: list[dict[str, Any]] = []
            window = NewestFirst(
                earliest, page_size=PAGE_SIZE, limit=SCAN_LIMIT, what="log entries"
            )
            for entry in c.logs.messages.paginate(created_after=day, page_size=PAGE_SIZE):
                created = _parse_time(entry.get("created_at"))
                where = window.judge(created)
                if where == "done":
                    break
                if where == "in" and _is_copy(entry, lookup, created, latest):
                    hits.append(dict(entry))
            return hits

        hits = await self._call(scan)
        return [_remote(e) for e in sorted(hits, key=lambda e: str(e.get("created_at") or ""))]

    def verify_signature(self, url: str, raw_body: bytes, headers: Mapping[str, str]) -> bool:
        signature = header(headers, "X-SignalWire-Signature") or header(
            headers, "X-Twilio-Signature"
        )
        if not signature or not self._signing_key:
            return False
        return validate_webhook_signature(
            self._signing_key, signature, url, raw_body.decode("utf-8", "replace")
        )

    def parse_callback(
        self, raw_body: bytes, content_type: str, query: Mapping[str, str]
    ) -> StatusUpdate:
        if "json" not in content_type.lower():  # compatibility API: Twilio-style form
            return parse_form_callback(self.name, signalwire_codes.STATUSES, raw_body, query)
        data = json.loads(raw_body or b"{}")
        if not isinstance(data, dict):
            data = {}
        inner = next(
            (data[k] for k in ("params", "message", "data") if isinstance(data.get(k), dict)), data
        )
        variables = inner.get("custom_variables") or data.get("custom_variables") or {}
        raw_status = str(inner.get("status") or inner.get("message_state") or "").lower()
        code = inner.get("error_code")
        sid = inner.get("id") or inner.get("message_id")
        return StatusUpdate(
            provider=self.name,
            message_id=parse_uuid(variables.get("message_id"))
            or parse_uuid(query.get("message_id")),
            sid=str(sid) if sid else None,
            raw_status=raw_status,
            status=signalwire_codes.STATUSES.get(raw_status),
            error_code=str(code) if code not in (None, "") else None,
            raw=data,
        )

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _is_copy(
    entry: Mapping[str, Any], lookup: CopyLookup, created: datetime | None, latest: datetime
) -> bool:
    """Whether a log entry may be the message `lookup` describes (no body to compare)."""
    if entry.get("from") != lookup.from_number or entry.get("to") != lookup.to_number:
        return False
    if created is not None and created > latest:
        return False
    if not str(entry.get("direction") or "outbound").startswith("outbound"):
        return False
    segments = entry.get("number_of_segments")
    return lookup.segments is None or segments is None or int(segments) == lookup.segments


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _remote(entry: dict[str, Any]) -> RemoteMessage:
    raw_status = str(entry.get("status") or "")
    code = entry.get("error_code")
    return RemoteMessage(
        sid=str(entry.get("id")),
        raw_status=raw_status,
        status=signalwire_codes.STATUSES.get(raw_status),
        from_number=str(entry.get("from") or ""),
        to_number=str(entry.get("to") or ""),
        body=entry.get("body"),
        created_at=_parse_time(entry.get("created_at")),
        error_code=str(code) if code not in (None, "") else None,
    )
