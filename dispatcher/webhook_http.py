"""One webhook POST to a customer's endpoint, with httpx: check the address, sign, send.

The URL's host is resolved and every address checked first (shared.webhook_targets); the request
then goes to the checked address itself, with the URL's host in `Host` and, for https, in SNI and
the certificate check, so the name is never resolved a second time (no rebinding between check
and connect). No redirects are followed (a 3xx is a failed attempt) and at most MAX_ANSWER_BYTES
of an answer are read. Every failure comes back as a value, never an exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Final
from uuid import UUID

import httpx

from shared.webhook_signing import encode, headers, webhook_id
from shared.webhook_targets import Resolver, TargetRefused, check_target

# A receiver's answer is not ours to keep: read this much of it (so that the connection can be
# used again) and no more.
MAX_ANSWER_BYTES: Final = 64 * 1024


async def post(
    http: httpx.AsyncClient,
    url: str,
    *,
    delivery_id: UUID,
    payload: Mapping[str, Any],
    keys: Sequence[str],
    resolve: Resolver,
    allow_private: bool,
    within_seconds: float,
    timestamp: int,
) -> tuple[int | None, str | None]:
    """(HTTP status, None) when the endpoint answered; (None, why) when it did not or the address
    was refused. `keys` sign (the secrets in force); `timestamp` is the signing time."""
    try:
        target = await check_target(url, resolve=resolve, allow_private=allow_private)
    except TargetRefused as e:
        return None, f"address refused: {e.reason}"
    body = encode(payload)
    sent = headers(webhook_id(delivery_id), timestamp, body, keys)
    parsed = httpx.URL(url)
    sent["host"] = parsed.netloc.decode("ascii")
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        async with asyncio.timeout(within_seconds):
            async with http.stream(
                "POST",
                parsed.copy_with(host=target.address),
                content=body.encode("ascii"),
                headers=sent,
                extensions=extensions,
            ) as response:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read > MAX_ANSWER_BYTES:
                        break
                return response.status_code, None
    except TimeoutError:
        return None, f"no answer within {within_seconds:g} s"
    except httpx.HTTPError as e:
        return None, f"no answer: {type(e).__name__}"
