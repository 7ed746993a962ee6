"""The ingress_delay fault: a slow path in front of the provider that still delivers the send."""

from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
import pytest

from shared.config import Settings
from shared.providers.base import Category, CopyLookup, Provider, ProviderError, SendRequest
from shared.providers.registry import close_providers, open_providers
from simulator.__main__ import parse_args
from simulator.app import create_app
from simulator.config import SimConfig
from simulator.faults import FaultEngine
from tests.fixtures_sim import SIM_SIGNALWIRE_NUMBER, SIM_TWILIO_NUMBER, SimHandle, wait_until

PROVIDERS = ["twilio", "signalwire"]
HOLD = 0.4  # seconds a held send waits in these tests; clients give up after a quarter of it


def post(sim: SimHandle, provider: str, timeout: float = 5.0, **fields: Any) -> httpx.Response:
    if provider == "twilio":
        return sim.post_twilio(timeout=timeout, **fields)
    return sim.post_signalwire(timeout=timeout, **fields)


def held(sim: SimHandle) -> int:
    count: int = sim.report()["ingress_held"]
    return count


def listed_sids(sim: SimHandle, provider: str) -> list[str]:
    """The sids the provider's own list endpoint (Twilio) or message log (SignalWire) returns."""
    if provider == "twilio":
        page = sim.get(sim.twilio_messages_path(), "twilio").json()
        return [m["sid"] for m in page["messages"]]
    return [e["id"] for e in sim.get("/api/messaging/logs", "signalwire").json()["data"]]


# -- settings ----------------------------------------------------------------------------------


def test_settings_come_from_flags_env_and_the_control_endpoint(sim: SimHandle) -> None:
    """ingress_delay_rate/min/max are set like every fault: by flag, SIM_* variable or POST."""
    _, config = parse_args(
        ["--ingress-delay-rate", "0.25", "--ingress-delay-min", "1.5"],
        {"SIM_INGRESS_DELAY_MAX": "4", "SIM_INGRESS_DELAY_MIN": "9"},
    )
    assert (config.ingress_delay_rate, config.ingress_delay_min, config.ingress_delay_max) == (
        0.25,
        1.5,
        4.0,
    )
    changed = sim.configure(ingress_delay_rate=1, ingress_delay_min=0.1, ingress_delay_max=0.2)
    assert (changed["ingress_delay_rate"], changed["ingress_delay_max"]) == (1.0, 0.2)


def test_help_documents_the_ingress_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m simulator --help` lists the three ingress-delay flags with their meaning."""
    with pytest.raises(SystemExit):
        parse_args(["--help"], {})
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--ingress-delay-rate", "--ingress-delay-min", "--ingress-delay-max"):
        assert flag in text
    assert "held before the provider sees it" in text and "SIM_INGRESS_DELAY_RATE" in text


# -- the dice ----------------------------------------------------------------------------------


def test_no_ingress_delay_draws_no_dice() -> None:
    """At rate 0 nothing is held and the seeded dice of the other faults are untouched."""
    engine = FaultEngine(SimConfig(seed=5))
    before = engine.rng.getstate()
    assert [engine.ingress_delay() for _ in range(20)] == [None] * 20
    assert engine.rng.getstate() == before


def test_delays_are_uniform_between_min_and_max_and_follow_the_seed() -> None:
    """Held sends wait between min and max seconds, and a seed repeats the same draws."""
    config = SimConfig(seed=11, ingress_delay_rate=0.5, ingress_delay_min=2, ingress_delay_max=3)
    engine, again = FaultEngine(config), FaultEngine(config)
    draws = [engine.ingress_delay() for _ in range(200)]
    assert draws == [again.ingress_delay() for _ in range(200)]
    delays = [d for d in draws if d is not None]
    assert 60 < len(delays) < 140 and all(2 <= d <= 3 for d in delays)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_seed_repeats_which_sends_are_held(sim: SimHandle, provider: str) -> None:
    """With the same seed, the same sends of a run are held (ingress_delayed in the record)."""
    runs = []
    for _ in range(2):
        sim.reset()
        sim.configure(seed=3, ingress_delay_rate=0.5, ingress_delay_min=0, ingress_delay_max=0)
        body_field = "Body" if provider == "twilio" else "body"
        for i in range(12):
            assert post(sim, provider, **{body_field: f"b{i}"}).status_code == 201
        rows = sorted(sim.messages(), key=lambda r: r["body"])
        runs.append([r["ingress_delayed"] for r in rows])
    assert runs[0] == runs[1] and 0 < sum(runs[0]) < 12


# -- held sends over HTTP ------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_send_is_created_after_the_client_gave_up(sim: SimHandle, provider: str) -> None:
    """A held send times out at its client, yet after the delay the provider has the message in
    its record, its list or log, and the simulator's record flags it as held."""
    sim.configure(ingress_delay_rate=1, ingress_delay_min=HOLD, ingress_delay_max=HOLD)
    with pytest.raises(httpx.TimeoutException):
        post(sim, provider, timeout=HOLD / 4)
    assert (sim.messages(), held(sim)) == ([], 1)  # the client gave up; the send is still held
    [row] = wait_until(sim.messages)
    assert (row["provider"], row["ingress_delayed"], row["request_count"]) == (provider, True, 1)
    assert held(sim) == 0
    assert listed_sids(sim, provider) == [row["sid"]]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_patient_client_gets_the_normal_answer(sim: SimHandle, provider: str) -> None:
    """A client that waits out the delay gets the usual 201 with the message it created."""
    sim.configure(ingress_delay_rate=1, ingress_delay_min=HOLD / 4, ingress_delay_max=HOLD / 4)
    response = post(sim, provider)
    [row] = sim.messages()
    assert response.status_code == 201 and row["ingress_delayed"] is True
    assert row["sid"] == response.json().get("sid", response.json().get("id"))


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("before", "after", "status"), [(False, True, 503), (True, False, 201)])
def test_refusals_are_decided_after_the_delay(
    sim: SimHandle, provider: str, before: bool, after: bool, status: int
) -> None:
    """An outage is judged when the provider finally sees the send, not when it was sent."""
    sim.configure(
        outage=before, ingress_delay_rate=1, ingress_delay_min=HOLD, ingress_delay_max=HOLD
    )
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post, sim, provider)
        wait_until(lambda: held(sim) == 1)
        sim.configure(outage=after)
        assert answer.result().status_code == status
    assert len(sim.messages()) == (1 if status == 201 else 0)


def test_reset_drops_held_sends(sim: SimHandle) -> None:
    """POST /_sim/reset forgets sends still in the slow path, so none lands in the next test."""
    sim.configure(ingress_delay_rate=1, ingress_delay_min=HOLD, ingress_delay_max=HOLD)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post, sim, "twilio")
        wait_until(lambda: held(sim) == 1)
        sim.reset()
        assert answer.result().status_code == 503
    assert (sim.messages(), held(sim)) == ([], 0)


def test_cancelled_request_cannot_cancel_the_creation() -> None:
    """Cancelling the request handler mid-delay (a server reacting to a disconnect) still leaves
    the message created once the delay is over."""
    config = SimConfig(
        callbacks=False, ingress_delay_rate=1, ingress_delay_min=HOLD, ingress_delay_max=HOLD
    )
    app = create_app(config)
    state = app.state.sim

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            request = asyncio.create_task(
                client.post(
                    f"/2010-04-01/Accounts/{config.twilio_account_sid}/Messages.json",
                    data={"From": SIM_TWILIO_NUMBER, "To": "+15551230000", "Body": "x"},
                    auth=(config.twilio_account_sid, config.twilio_auth_token),
                )
            )
            for _ in range(400):  # bounded: up to ~2 s for the send to reach its hold
                if state.ingress_held:
                    break
                await asyncio.sleep(0.005)
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
            assert state.store.messages == {}
            for _ in range(400):  # bounded: up to ~2 s
                if state.store.messages:
                    break
                await asyncio.sleep(0.005)
        [message] = state.store.messages.values()
        assert message.ingress_delayed is True

    asyncio.run(main())


# -- the real SDKs, through our providers --------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_sdk_timeout_then_reconciliation_finds_the_message(
    provider_settings: Settings, sim: SimHandle, provider: str
) -> None:
    """Through the real SDK a held send times out as ambiguous, and after the delay the
    provider's own list finds the message it accepted anyway."""
    sim.configure(ingress_delay_rate=1, ingress_delay_min=HOLD, ingress_delay_max=HOLD)
    settings = dataclasses.replace(provider_settings, provider_timeout_seconds=HOLD / 4)
    sender = SIM_TWILIO_NUMBER if provider == "twilio" else SIM_SIGNALWIRE_NUMBER
    req = SendRequest(uuid4(), sender, "+15551230042", f"slow {provider}", "")
    since = datetime.now(UTC)
    lookup = CopyLookup(
        req.from_number, req.to_number, req.body, 1, since, since + timedelta(seconds=60)
    )

    async def main() -> tuple[ProviderError, list[Any]]:
        providers = await open_providers(settings)
        p: Provider = providers[provider]
        try:
            with pytest.raises(ProviderError) as caught:
                await p.send(req)
            await asyncio.to_thread(wait_until, sim.messages)
            return caught.value, await p.find_copies(lookup)
        finally:
            await close_providers(providers)

    error, found = asyncio.run(main())
    [row] = sim.messages()
    assert error.category is Category.AMBIGUOUS
    assert [f.sid for f in found] == [row["sid"]]
    assert row["message_id"] == str(req.message_id)
