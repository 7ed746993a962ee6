"""Signed status callbacks after acceptance; dropped, doubled, reordered or late on request."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
from twilio.request_validator import RequestValidator

from simulator.config import SimConfig
from simulator.faults import FaultEngine
from simulator.numbers import error_message
from simulator.store import SimMessage, Transition, iso_time

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One status a message goes through; `silent` ones change the record but post nothing."""

    status: str
    error_code: str | None = None
    silent: bool = False


def sequence(message: SimMessage, config: SimConfig) -> list[Step]:
    """The statuses a message goes through after acceptance, at this provider.

    Twilio posts no callback for a message's initial status (`queued` without a Messaging
    Service; outbound-message-status-in-status-callbacks), so its first callback is `sent` or
    `failed`. SignalWire posts one "each time a message transitions to a new state".
    """
    failure = config.delivery_failures.get(message.to_number)
    if message.provider == "twilio":
        start = [Step("queued", silent=True)]
    else:
        start = [Step("queued"), Step("initiated")]
    if failure is None:
        return [*start, Step("sent"), Step("delivered")]
    status, code = failure
    if status == "failed":
        return [*start, Step("failed", code)]
    return [*start, Step("sent"), Step(status, code)]


def twilio_params(message: SimMessage, change: Transition) -> dict[str, str]:
    """The form fields of a Twilio (or SignalWire compatibility) status callback.

    A subset of the standard webhook properties plus MessageStatus and ErrorCode
    (track-outbound-message-status; webhook-request for the standard ones).
    """
    params = {
        "AccountSid": message.account,
        "ApiVersion": "2010-04-01",
        "From": message.from_number,
        "To": message.to_number,
        "MessageSid": message.sid,
        "SmsSid": message.sid,
        "MessageStatus": change.status,
        "SmsStatus": change.status,
    }
    if change.error_code is not None:
        params["ErrorCode"] = change.error_code
    return params


def signalwire_payload(message: SimMessage, change: Transition) -> dict[str, object]:
    """The JSON body of a native SignalWire status callback (MessageStatusCallbackPayload)."""
    payload: dict[str, object] = {
        "id": message.sid,
        "project_id": message.account,
        "status": change.status,
        "to": message.to_number,
        "from": message.from_number,
        "body": message.body,
        "number_of_segments": message.segments,
        "timestamp": iso_time(change.at),
        "error_code": change.error_code,
        "error_message": error_message(change.error_code),
    }
    if message.custom_variables:  # "included only when the message was sent with" them
        payload["custom_variables"] = message.custom_variables
    return payload


# Callback requests in flight at once. Past about 100 waiting on httpx's pool, the pool's own
# bookkeeping took the simulator's CPU and it stopped answering sends (seen in make chaos); a real
# provider also posts at a bounded rate, so excess callbacks wait their turn here.
CALLBACK_CONCURRENCY = 32


class CallbackSender:
    """Posts each accepted message's status sequence to its callback URL in the background."""

    def __init__(self, config: SimConfig, faults: FaultEngine) -> None:
        self.config = config
        self.faults = faults
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._gate = asyncio.Semaphore(CALLBACK_CONCURRENCY)

    def schedule(self, message: SimMessage) -> None:
        """Move a just-accepted message through its statuses, posting callbacks if it has a URL."""
        task = asyncio.get_running_loop().create_task(self._run(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _run(self, message: SimMessage) -> None:
        cfg = self.config
        steps = sequence(message, cfg)
        if cfg.callback_extra_delay > 0:
            await asyncio.sleep(cfg.callback_extra_delay)
        # The provider's own record moves in the real order; only the deliveries misbehave.
        reorder = self.faults.roll_callback(cfg.callback_reorder_rate)
        held: list[Transition] = []
        for i, step in enumerate(steps):
            if i > 0 and cfg.callback_delay > 0:
                await asyncio.sleep(cfg.callback_delay)
            change = message.move(step.status, step.error_code)
            if step.silent or self.faults.roll_callback(cfg.callback_drop_rate):
                continue
            copies = 2 if self.faults.roll_callback(cfg.callback_duplicate_rate) else 1
            for _ in range(copies):
                if reorder:
                    held.append(change)
                else:
                    await self._post(message, change)
        for change in reversed(held):  # newest first: every callback out of order
            await self._post(message, change)

    async def _post(self, message: SimMessage, change: Transition) -> None:
        url = message.status_callback
        if not url or not self.config.callbacks:
            return
        if self._client is None:
            limits = httpx.Limits(max_connections=CALLBACK_CONCURRENCY)
            self._client = httpx.AsyncClient(timeout=5.0, limits=limits)
        if message.provider == "twilio":
            params = twilio_params(message, change)
            signature = RequestValidator(self.config.twilio_auth_token).compute_signature(
                url, params
            )
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            }
            content = urlencode(params).encode()
        elif self.config.signalwire_callback_format == "form":
            params = twilio_params(message, change)
            key = self.config.signalwire_signing_key
            signature = RequestValidator(key).compute_signature(url, params)  # same scheme B
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-SignalWire-Signature": signature,
                "X-Twilio-Signature": signature,
            }
            content = urlencode(params).encode()
        else:
            content = json.dumps(signalwire_payload(message, change)).encode()
            secret = self.config.signalwire_signing_key.encode()
            signed = url.encode() + content  # hex HMAC of url + raw body (SignalWire scheme A)
            headers = {
                "Content-Type": "application/json",
                "X-SignalWire-Signature": hmac.new(secret, signed, hashlib.sha1).hexdigest(),
                "X-SignalWire-Sha256-Signature": hmac.new(
                    secret, signed, hashlib.sha256
                ).hexdigest(),
            }
        try:
            async with self._gate:
                await self._client.post(url, content=content, headers=headers)
        except httpx.HTTPError as e:
            logger.info("callback to %s failed: %s", url, e, extra={"action": "sim_callback"})
