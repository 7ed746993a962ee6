"""Twilio through the twilio SDK's async client; every failure leaves here as a ProviderError."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode
from uuid import UUID

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from shared.config import Settings
from shared.providers import twilio_codes
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

# Reconciliation looks this far around the attempt's window, for clock skew between us and Twilio
# (its dates have one-second resolution).
CLOCK_SKEW = timedelta(seconds=2)
# Twilio's Messages create takes ValidityPeriod in 1..36000 seconds (API reference, Message
# resource); a longer validity is sent as the maximum. SignalWire's REST send takes none.
MAX_VALIDITY_SECONDS = 36_000
# Messages of one sender->recipient pair per page of a reconciliation lookup (newest first).
PAGE_SIZE = 100
# Past this many messages of the pair since the attempt, a lookup is inconclusive (looked up again
# later, never a reason to resend): a guard against an endless read, not a window.
SCAN_LIMIT = 20_000

_SDK_LOG = logging.getLogger("twilio.async_http_client")
_SDK_LOG.setLevel(logging.WARNING)

# The headers of the last response this task received: TwilioRestException drops them, and a 429's
# Retry-After lives there. A ContextVar keeps concurrent sends on one client apart.
_last_headers: ContextVar[Mapping[str, str] | None] = ContextVar("twilio_headers", default=None)


class _HeaderKeepingClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio is untyped
    """The SDK's aiohttp client, remembering each response's headers for the calling task.

    It also sends Basic credentials as a header itself: aiohttp 3.14 deprecates the BasicAuth
    object the SDK would build.
    """

    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        auth = kwargs.pop("auth", None)
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "Authorization": f"Basic {token}"}
        _last_headers.set(None)
        response = await super().request(method, url, **kwargs)
        _last_headers.set(response.headers)
        return response


def status_callback_url(public_base_url: str, message_id: UUID) -> str:
    """Where Twilio posts a message's status: our message id rides in the query string."""
    query = urlencode({"message_id": str(message_id)})
    return f"{public_base_url.rstrip('/')}/webhook/twilio/status?{query}"


def _error(entry: tuple[Category, str], **details: Any) -> ProviderError:
    category, reason = entry
    opted_out = details.get("code") in twilio_codes.OPT_OUT
    return ProviderError(category, reason, opted_out=opted_out, **details)


def translate(exc: Exception) -> ProviderError:
    """Map an exception from the twilio SDK (or aiohttp under it) to our category."""
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        status = int(getattr(exc, "status", 0) or 0)
        raw_code = getattr(exc, "code", None)
        code = str(raw_code) if raw_code is not None else None
        details: dict[str, Any] = {"code": code, "http_status": status}
        if status == 401 or code == "20003":
            return _error(twilio_codes.CODES["20003"], **details)
        if status == 429 or code == "20429":
            headers = _last_headers.get() or {}
            retry_after = parse_retry_after(headers.get("Retry-After"))
            return _error(twilio_codes.HTTP_429, retry_after=retry_after, **details)
        if status >= 500:
            return _error(twilio_codes.HTTP_5XX, **details)
        return _error(twilio_codes.classify(code) or twilio_codes.UNCLASSIFIED_4XX, **details)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS: nothing was sent
        return _error(twilio_codes.CONNECT_ERROR)
    if isinstance(exc, TimeoutError):  # ours (asyncio.timeout) or aiohttp's read timeout
        return _error(twilio_codes.READ_TIMEOUT)
    # Reset or disconnect after sending, a garbled answer, anything else: it may have been sent.
    return ProviderError(Category.AMBIGUOUS, f"{type(exc).__name__} after the request was sent")


class TwilioProvider:
    """Provider over Twilio's Messages API; build it inside the running event loop."""

    name = "twilio"
    compares_bodies = True

    def __init__(self, settings: Settings) -> None:
        self._timeout = settings.provider_timeout_seconds
        self._public_base_url = settings.public_base_url
        self._validator = RequestValidator(settings.twilio_auth_token)
        # Never pass max_retries: aiohttp-retry would re-POST a create on 5xx and duplicate it.
        # The SDK logs every request's query (recipient numbers) at INFO: its logger stays quiet.
        self._http = _HeaderKeepingClient(logger=_SDK_LOG)
        client = Client(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            environment={},  # no TWILIO_EDGE/REGION from the process env rewriting the host
            http_client=self._http,
        )
        if settings.twilio_api_base_url:
            client.api.base_url = settings.twilio_api_base_url
        self._messages = client.api.v2010.accounts(settings.twilio_account_sid).messages

    def callback_url(self, message_id: UUID) -> str:
        return status_callback_url(self._public_base_url, message_id)

    async def _call(self, make: Any) -> Any:
        """Await one SDK call under our hard timeout (the async client ignores `timeout`)."""
        try:
            async with asyncio.timeout(self._timeout):
                return await make()
        except ProviderError:
            raise
        except (TwilioException, aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            raise translate(e) from e

    async def send(self, request: SendRequest) -> SendResult:
        callback = request.status_callback_url or self.callback_url(request.message_id)
        extra: dict[str, Any] = {}
        if request.validity_seconds is not None:
            # ValidityPeriod: 1-36000 s in Twilio's queue (its default is the maximum, 36000).
            extra["validity_period"] = max(1, min(request.validity_seconds, MAX_VALIDITY_SECONDS))
        message = await self._call(
            lambda: self._messages.create_async(
                to=request.to_number,
                from_=request.from_number,
                body=request.body,
                status_callback=callback,
                **extra,
            )
        )
        return SendResult(sid=str(message.sid), raw_status=str(message.status))

    async def fetch(self, sid: str) -> RemoteMessage:
        return _remote(await self._call(lambda: self._messages(sid).fetch_async()))

    async def find_copies(self, lookup: CopyLookup) -> list[RemoteMessage]:
        """Messages of the pair with this exact body created in the lookup's window.

        Every page of the pair is read, newest first, until a whole page is older than the window
        (no DateSent filter: date_sent stays null while a message is queued, which is exactly the
        state an ambiguous attempt's message is likely in).
        """
        earliest = lookup.since - CLOCK_SKEW
        latest = lookup.until + CLOCK_SKEW

        async def scan() -> list[Any]:
            stream = await self._messages.stream_async(
                to=lookup.to_number, from_=lookup.from_number, page_size=PAGE_SIZE
            )
            hits: list[Any] = []
            window = NewestFirst(earliest, page_size=PAGE_SIZE, limit=SCAN_LIMIT, what="messages")
            async for m in stream:
                created = m.date_created
                where = window.judge(created)
                if where == "done":
                    break
                if (
                    where == "in"
                    and m.body == lookup.body
                    and (created is None or created <= latest)
                ):
                    hits.append(m)
            return hits

        found = await self._call(scan)
        oldest_first = sorted(
            found, key=lambda m: m.date_created or datetime.max.replace(tzinfo=UTC)
        )
        return [_remote(m) for m in oldest_first]

    def verify_signature(self, url: str, raw_body: bytes, headers: Mapping[str, str]) -> bool:
        signature = header(headers, "X-Twilio-Signature")
        if not signature:
            return False
        params = dict(parse_qsl(raw_body.decode("utf-8", "replace"), keep_blank_values=True))
        return bool(self._validator.validate(url, params, signature))

    def parse_callback(
        self, raw_body: bytes, content_type: str, query: Mapping[str, str]
    ) -> StatusUpdate:
        return parse_form_callback(self.name, twilio_codes.STATUSES, raw_body, query)

    async def aclose(self) -> None:
        await self._http.close()


def parse_form_callback(
    provider: str, statuses: Mapping[str, str | None], raw_body: bytes, query: Mapping[str, str]
) -> StatusUpdate:
    """A Twilio-style form callback (also SignalWire's compatibility API) as a StatusUpdate."""
    form = dict(parse_qsl(raw_body.decode("utf-8", "replace"), keep_blank_values=True))
    raw_status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
    return StatusUpdate(
        provider=provider,
        message_id=parse_uuid(query.get("message_id")),
        sid=form.get("MessageSid") or form.get("SmsSid") or None,
        raw_status=raw_status,
        status=statuses.get(raw_status),
        error_code=form.get("ErrorCode") or None,
        raw=form,
    )


def parse_uuid(value: object) -> UUID | None:
    try:
        return UUID(str(value)) if value else None
    except ValueError:
        return None


def _remote(m: Any) -> RemoteMessage:
    raw_status = str(m.status or "")
    return RemoteMessage(
        sid=str(m.sid),
        raw_status=raw_status,
        status=twilio_codes.STATUSES.get(raw_status),
        from_number=str(m.from_ or ""),
        to_number=str(m.to or ""),
        body=m.body,
        created_at=m.date_created,
        error_code=str(m.error_code) if m.error_code is not None else None,
    )
