"""Provider contract suite: both providers through their real SDKs, over HTTP, to the simulator."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit
from uuid import UUID, uuid4

import pytest

from shared.config import Settings
from shared.providers.base import Category, CopyLookup, Provider, ProviderError, SendRequest
from shared.providers.registry import close_providers, open_providers
from shared.providers.signalwire import status_callback_url as signalwire_callback_url
from shared.providers.twilio import status_callback_url as twilio_callback_url
from tests.fixtures_sim import (
    SIM_SIGNALWIRE_NUMBER,
    SIM_TWILIO_NUMBER,
    CallbackListener,
    SimHandle,
    free_port,
)

T = TypeVar("T")
PROVIDERS = ["twilio", "signalwire"]
SENDER = {"twilio": SIM_TWILIO_NUMBER, "signalwire": SIM_SIGNALWIRE_NUMBER}
RECIPIENT = "+15551230000"


def run(settings: Settings, name: str, work: Callable[[Provider], Awaitable[T]]) -> T:
    """Open the providers inside a fresh loop, run `work` on one, and close them."""

    async def main() -> T:
        providers = await open_providers(settings)
        try:
            return await work(providers[name])
        finally:
            await close_providers(providers)

    return asyncio.run(main())


def request(
    name: str, to: str = RECIPIENT, sender: str | None = None, body: str = "hi"
) -> SendRequest:
    return SendRequest(uuid4(), sender or SENDER[name], to, body, status_callback_url="")


def send_error(settings: Settings, name: str, req: SendRequest) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        run(settings, name, lambda p: p.send(req))
    return caught.value


@pytest.mark.parametrize("name", PROVIDERS)
def test_send_returns_the_sid_the_simulator_recorded(
    provider_settings: Settings, sim: SimHandle, name: str
) -> None:
    """An accepted send returns the provider's sid, and the message carries our id for callbacks."""
    req = request(name)
    result = run(provider_settings, name, lambda p: p.send(req))
    [recorded] = sim.messages()
    assert recorded["sid"] == result.sid and recorded["provider"] == name
    assert result.raw_status == "queued"
    if name == "twilio":
        assert result.sid.startswith("SM")
        assert recorded["status_callback"] == twilio_callback_url(
            provider_settings.public_base_url, req.message_id
        )
    else:
        assert UUID(result.sid)
        assert recorded["custom_variables"] == {"message_id": str(req.message_id)}
        assert recorded["status_callback"] == signalwire_callback_url(
            provider_settings.public_base_url
        )


TEST_NUMBERS = [
    # provider, to, from, category, code
    ("twilio", "+15005550001", None, Category.PERMANENT, "21211"),
    ("twilio", "+15005550002", None, Category.PERMANENT, "21612"),
    ("twilio", "+15005550003", None, Category.PERMANENT, "21408"),
    ("twilio", "+15005550004", None, Category.PERMANENT, "21610"),
    ("twilio", "+15005550009", None, Category.PERMANENT, "21614"),
    ("twilio", RECIPIENT, "+15005550001", Category.CONFIG, "21212"),
    ("twilio", RECIPIENT, "+15005550007", Category.CONFIG, "21606"),
    ("twilio", RECIPIENT, "+15005550008", Category.RETRYABLE, "21611"),
    ("signalwire", "+15005550001", None, Category.PERMANENT, "invalid_to_number"),
    ("signalwire", "+15005550002", None, Category.PERMANENT, "not_routable"),
    ("signalwire", "+15005550003", None, Category.PERMANENT, "not_routable"),
    ("signalwire", "+15005550004", None, Category.PERMANENT, "message_blocked_by_number"),
    ("signalwire", "+15005550009", None, Category.PERMANENT, "invalid_to_number"),
    ("signalwire", RECIPIENT, "+15005550001", Category.CONFIG, "invalid_from_number"),
    ("signalwire", RECIPIENT, "+15005550007", Category.CONFIG, "from_number_not_owned"),
    ("signalwire", RECIPIENT, "+15005550008", Category.RETRYABLE, "rate_limit_exceeded"),
]


@pytest.mark.parametrize(("name", "to", "sender", "category", "code"), TEST_NUMBERS)
def test_each_test_number_raises_its_category(
    provider_settings: Settings,
    sim: SimHandle,
    name: str,
    to: str,
    sender: str | None,
    category: Category,
    code: str,
) -> None:
    """The simulator's test numbers come back as the provider's code and our category."""
    error = send_error(provider_settings, name, request(name, to=to, sender=sender))
    assert (error.category, error.code) == (category, code)
    assert sim.messages() == []


@pytest.mark.parametrize("name", PROVIDERS)
def test_rate_limit_carries_retry_after(
    provider_settings: Settings, sim: SimHandle, name: str
) -> None:
    """A 429 is retryable and carries the provider's Retry-After in seconds."""
    sim.configure(rate_limit_rate=1, retry_after=7)
    error = send_error(provider_settings, name, request(name))
    assert (error.category, error.http_status, error.retry_after) == (Category.RETRYABLE, 429, 7.0)


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize("status", [500, 503])
def test_server_error_is_ambiguous(
    provider_settings: Settings, sim: SimHandle, name: str, status: int
) -> None:
    """A 5xx after the request was sent is ambiguous: the provider may have created the message."""
    sim.configure(server_error_rate=1, server_error_status=status)
    error = send_error(provider_settings, name, request(name))
    assert (error.category, error.http_status) == (Category.AMBIGUOUS, status)


@pytest.mark.parametrize("name", PROVIDERS)
def test_accept_then_hang_is_ambiguous_at_our_timeout(
    provider_settings: Settings, sim: SimHandle, name: str
) -> None:
    """A provider that records the message and never answers ends at our hard timeout, ambiguous."""
    sim.configure(hang_rate=1, callbacks=False)
    settings = dataclasses.replace(provider_settings, provider_timeout_seconds=0.5)
    started = datetime.now(UTC)
    error = send_error(settings, name, request(name))
    assert error.category is Category.AMBIGUOUS
    assert datetime.now(UTC) - started < timedelta(seconds=3)
    [recorded] = sim.messages()
    assert recorded["hung"] is True


@pytest.mark.parametrize("name", PROVIDERS)
def test_connection_refused_is_retryable(
    provider_settings: Settings, sim: SimHandle, name: str
) -> None:
    """Nobody listening means the request never left: safe to retry."""
    port = free_port()
    settings = dataclasses.replace(
        provider_settings,
        twilio_api_base_url=f"http://127.0.0.1:{port}",
        signalwire_space=f"127.0.0.1:{port}",
    )
    assert send_error(settings, name, request(name)).category is Category.RETRYABLE


@pytest.mark.parametrize("name", PROVIDERS)
def test_bad_credentials_are_config(provider_settings: Settings, sim: SimHandle, name: str) -> None:
    """A rejected token is a configuration problem, not the message's."""
    settings = dataclasses.replace(
        provider_settings, twilio_auth_token="wrong", signalwire_api_token="wrong"
    )
    error = send_error(settings, name, request(name))
    assert (error.category, error.http_status) == (Category.CONFIG, 401)


def lookup(req: SendRequest, since: datetime, *, body: str | None = None) -> CopyLookup:
    """What reconciliation asks about `req`, for an attempt that started at `since`."""
    return CopyLookup(
        from_number=req.from_number,
        to_number=req.to_number,
        body=req.body if body is None else body,
        segments=1,
        since=since,
        until=since + timedelta(seconds=60),
    )


@pytest.mark.parametrize("name", PROVIDERS)
def test_find_copies_finds_the_accepted_message(
    provider_settings: Settings, sim: SimHandle, name: str
) -> None:
    """Reconciliation finds a message the provider accepted since the attempt started."""
    since = datetime.now(UTC)
    req = request(name, body="reconcile me")

    async def work(p: Provider) -> tuple[str, list[Any]]:
        sent = await p.send(req)
        return sent.sid, await p.find_copies(lookup(req, since))

    sid, found = run(provider_settings, name, work)
    assert [f.sid for f in found] == [sid]
    assert (found[0].from_number, found[0].to_number) == (req.from_number, req.to_number)


@pytest.mark.parametrize("name", PROVIDERS)
def test_find_copies_finds_nothing_that_was_not_sent(
    provider_settings: Settings, sim: SimHandle, name: str
) -> None:
    """Reconciliation finds nothing for another recipient or for messages older than the attempt."""
    req = request(name)

    async def work(p: Provider) -> tuple[Any, Any]:
        await p.send(req)
        later = datetime.now(UTC) + timedelta(seconds=30)
        other = await p.find_copies(
            dataclasses.replace(lookup(req, later), to_number="+15557770000")
        )
        too_old = await p.find_copies(lookup(req, later))
        return other, too_old

    assert run(provider_settings, name, work) == ([], [])


@pytest.mark.parametrize("name", PROVIDERS)
def test_find_copies_sees_past_sixty_newer_messages_to_the_pair(
    provider_settings: Settings, sim: SimHandle, name: str
) -> None:
    """The copy is found behind 60 newer messages of the same pair: every page is read."""
    sim.reset()
    since = datetime.now(UTC)
    req = request(name, to="+15551239999", body="the one")

    async def work(p: Provider) -> tuple[str, list[Any]]:
        sent = await p.send(req)
        for i in range(60):
            await p.send(dataclasses.replace(req, message_id=uuid4(), body=f"newer {i}"))
        return sent.sid, await p.find_copies(lookup(req, since))

    sid, found = run(provider_settings, name, work)
    assert sid in [f.sid for f in found]


def test_twilio_find_copies_compares_the_body(provider_settings: Settings, sim: SimHandle) -> None:
    """Twilio returns bodies, so the same pair with a different body is no match."""
    since = datetime.now(UTC)
    req = request("twilio", body="first")

    async def work(p: Provider) -> Any:
        await p.send(req)
        return await p.find_copies(lookup(req, since, body="second"))

    assert run(provider_settings, "twilio", work) == []


def test_signalwire_find_copies_compares_the_segment_count(
    provider_settings: Settings, sim: SimHandle
) -> None:
    """SignalWire's log has no body: a copy must at least have our message's segment count."""
    since = datetime.now(UTC)
    req = request("signalwire", to="+15551238888", body="one segment")

    async def work(p: Provider) -> tuple[list[Any], list[Any]]:
        await p.send(req)
        same = await p.find_copies(lookup(req, since))
        longer = await p.find_copies(dataclasses.replace(lookup(req, since), segments=3))
        return same, longer

    same, longer = run(provider_settings, "signalwire", work)
    assert len(same) == 1 and longer == []


@pytest.mark.parametrize("name", PROVIDERS)
def test_fetch_reports_the_provider_status(
    provider_settings: Settings, sim: SimHandle, callback_listener: CallbackListener, name: str
) -> None:
    """Fetch returns the provider's current status mapped to ours."""
    req = request(name)
    # Twilio sends no callback for the initial queued: sent, delivered; SignalWire all four.
    final = 2 if name == "twilio" else 4

    async def work(p: Provider) -> Any:
        sent = await p.send(req)
        await asyncio.to_thread(callback_listener.wait_for, final)
        return await p.fetch(sent.sid)

    remote = run(provider_settings, name, work)
    assert (remote.raw_status, remote.status) == ("delivered", "delivered")


@pytest.mark.parametrize("name", PROVIDERS)
def test_simulator_signed_callbacks_pass_and_tampered_ones_fail(
    provider_settings: Settings, sim: SimHandle, callback_listener: CallbackListener, name: str
) -> None:
    """The vendors' validators accept the simulator's callbacks and reject a changed body."""
    req = request(name)
    run(provider_settings, name, lambda p: p.send(req))
    first = callback_listener.wait_for(1)[0]
    url = callback_listener.url + first.path

    first_status = "sent" if name == "twilio" else "queued"  # Twilio skips the initial queued

    async def check(p: Provider) -> tuple[bool, bool, Any]:
        tampered = first.body.replace(first_status.encode(), b"delivered")
        update = p.parse_callback(first.body, first.headers["Content-Type"], _query(first.path))
        return (
            p.verify_signature(url, first.body, first.headers),
            p.verify_signature(url, tampered, first.headers),
            update,
        )

    valid, tampered_valid, update = run(provider_settings, name, check)
    assert (valid, tampered_valid) == (True, False)
    assert (update.message_id, update.raw_status, update.status) == (
        req.message_id,
        first_status,
        first_status,
    )


def test_signalwire_compatibility_form_callbacks_validate_and_parse(
    provider_settings: Settings, sim: SimHandle, callback_listener: CallbackListener
) -> None:
    """SignalWire's form-encoded (compatibility) callbacks are validated and parsed too."""
    sim.configure(
        signalwire_callback_format="form", delivery_failures={RECIPIENT: ["failed", "30007"]}
    )
    req = request("signalwire")
    sent = run(provider_settings, "signalwire", lambda p: p.send(req))
    received = callback_listener.wait_for(3)
    last = received[-1]
    url = callback_listener.url + last.path

    async def check(p: Provider) -> tuple[bool, Any]:
        ok = p.verify_signature(url, last.body, last.headers)
        return ok, p.parse_callback(last.body, last.headers["Content-Type"], _query(last.path))

    ok, update = run(provider_settings, "signalwire", check)
    assert ok is True
    assert (update.sid, update.status, update.error_code) == (sent.sid, "failed", "30007")


def test_signalwire_json_callback_carries_custom_variables(
    provider_settings: Settings, sim: SimHandle, callback_listener: CallbackListener
) -> None:
    """SignalWire's JSON callback names our message id in custom_variables, not in the URL."""
    req = request("signalwire")
    run(provider_settings, "signalwire", lambda p: p.send(req))
    first = callback_listener.wait_for(1)[0]
    assert first.path == "/webhook/signalwire/status"
    assert json.loads(first.body)["custom_variables"] == {"message_id": str(req.message_id)}


def _query(path: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}


def test_sim_settings_point_both_providers_at_the_simulator(
    sim_settings: Settings, sim: SimHandle, db_url: str
) -> None:
    """The shared `sim_settings` fixture configures both providers, the senders and the database."""
    assert sim_settings.database_url == db_url
    assert sim_settings.twilio_api_base_url == sim.base_url
    assert sim_settings.signalwire_space == f"127.0.0.1:{sim.port}"
    assert (sim_settings.twilio_phone_number, sim_settings.signalwire_phone_number) == (
        SIM_TWILIO_NUMBER,
        SIM_SIGNALWIRE_NUMBER,
    )
    result = run(sim_settings, "signalwire", lambda p: p.send(request("signalwire")))
    assert [m["sid"] for m in sim.messages()] == [result.sid]
