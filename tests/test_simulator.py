"""The simulator over HTTP: shapes, faults, callbacks, records, and `python -m simulator`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from simulator.config import DEFAULT_TWILIO_ACCOUNT_SID, DEFAULT_TWILIO_AUTH_TOKEN
from tests.fixtures_sim import SIM_TWILIO_NUMBER, CallbackListener, SimHandle, free_port

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = f"/2010-04-01/Accounts/{DEFAULT_TWILIO_ACCOUNT_SID}/Messages.json"


def post_twilio(sim: SimHandle, auth: tuple[str, str] | None = None, **form: str) -> httpx.Response:
    data = {"From": SIM_TWILIO_NUMBER, "To": "+15551230000", "Body": "hi", **form}
    auth = auth or (DEFAULT_TWILIO_ACCOUNT_SID, DEFAULT_TWILIO_AUTH_TOKEN)
    return httpx.post(sim.base_url + MESSAGES, data=data, auth=auth, timeout=5)


def statuses(received: list[Any]) -> list[str]:
    return [parse_qs(r.body.decode())["MessageStatus"][0] for r in received]


def twilio_client(sim: SimHandle) -> Any:
    client = Client(DEFAULT_TWILIO_ACCOUNT_SID, DEFAULT_TWILIO_AUTH_TOKEN, environment={})
    client.api.base_url = sim.base_url
    return client.api.v2010.accounts(DEFAULT_TWILIO_ACCOUNT_SID).messages


def test_bad_credentials_get_twilio_error_shape(sim: SimHandle) -> None:
    """Wrong Basic credentials get 401 with Twilio's {code, message, more_info, status}."""
    response = post_twilio(sim, auth=(DEFAULT_TWILIO_ACCOUNT_SID, "wrong"))
    assert response.status_code == 401
    assert response.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }


def test_messages_count_duplicate_sends(sim: SimHandle) -> None:
    """The record counts every accepted copy and every request of the same content."""
    sim.configure(server_error_rate=1)
    assert post_twilio(sim, Body="dup").status_code == 503
    sim.configure(server_error_rate=0)
    assert post_twilio(sim, Body="dup").status_code == 201
    assert post_twilio(sim, Body="dup").status_code == 201
    rows = sim.messages()
    assert [(r["accepted_count"], r["request_count"]) for r in rows] == [(2, 3), (2, 3)]


def test_reset_forgets_messages_and_runtime_config(sim: SimHandle) -> None:
    """POST /_sim/reset clears the record and restores the start-up faults."""
    post_twilio(sim)
    sim.configure(outage=True)
    sim.reset()
    assert sim.messages() == []
    assert post_twilio(sim).status_code == 201


def test_config_rejects_unknown_settings(sim: SimHandle) -> None:
    """A misspelled fault name is a 400, not silently ignored."""
    response = httpx.post(sim.base_url + "/_sim/config", json={"hang_rte": 1}, timeout=5)
    assert response.status_code == 400 and "hang_rte" in response.json()["error"]


def test_outage_window_answers_503(sim: SimHandle) -> None:
    """Inside a configured outage window every request gets 503."""
    sim.configure(outage_windows=[[0, 60]])
    assert post_twilio(sim).status_code == 503
    sim.configure(outage_windows=[[60, 120]])
    assert post_twilio(sim).status_code == 201


def test_rate_limit_sends_retry_after(sim: SimHandle) -> None:
    """The 429 fault carries a Retry-After header and Twilio's 20429."""
    sim.configure(rate_limit_rate=1, retry_after=3)
    response = post_twilio(sim)
    assert (response.status_code, response.headers["Retry-After"]) == (429, "3")
    assert response.json()["code"] == 20429


def test_error_rate_uses_the_chosen_codes(sim: SimHandle) -> None:
    """The random-error fault refuses with one of the configured codes."""
    sim.configure(error_rate=1, error_codes=["30008"])
    response = post_twilio(sim)
    assert (response.status_code, response.json()["code"]) == (400, 30008)


def test_latency_delays_the_answer(sim: SimHandle) -> None:
    """Configured latency is added to the request."""
    sim.configure(latency=0.3)
    started = time.monotonic()
    post_twilio(sim)
    assert time.monotonic() - started >= 0.3


def test_callbacks_default_sequence(sim: SimHandle, callback_listener: CallbackListener) -> None:
    """An accepted Twilio message posts sent then delivered, and nothing for its initial queued."""
    created = post_twilio(sim, StatusCallback=callback_listener.url + "/cb?message_id=m1")
    assert created.json()["status"] == "queued"
    received = callback_listener.wait_for(2)
    assert statuses(received) == ["sent", "delivered"]
    assert received[0].path == "/cb?message_id=m1"


def test_twilio_callback_fields(sim: SimHandle, callback_listener: CallbackListener) -> None:
    """A Twilio callback carries the standard properties plus MessageStatus, and ErrorCode only
    when the message failed."""
    sid = post_twilio(sim, StatusCallback=callback_listener.url + "/cb").json()["sid"]
    sent = {k: v[0] for k, v in parse_qs(callback_listener.wait_for(1)[0].body.decode()).items()}
    assert sent == {
        "AccountSid": DEFAULT_TWILIO_ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "From": SIM_TWILIO_NUMBER,
        "To": "+15551230000",
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": "sent",
        "SmsStatus": "sent",
    }


def test_delivery_failure_numbers(sim: SimHandle, callback_listener: CallbackListener) -> None:
    """A recipient configured to fail ends in failed with its error code (one callback only)."""
    post_twilio(sim, To="+15005550013", StatusCallback=callback_listener.url + "/cb")
    received = callback_listener.wait_for(1)
    last = parse_qs(received[-1].body.decode())
    assert statuses(received) == ["failed"]
    assert last["ErrorCode"] == ["30006"]


def test_undelivered_number_is_sent_first(
    sim: SimHandle, callback_listener: CallbackListener
) -> None:
    """An unreachable recipient reports sent, then undelivered with its error code."""
    post_twilio(sim, To="+15005550011", StatusCallback=callback_listener.url + "/cb")
    received = callback_listener.wait_for(2)
    assert statuses(received) == ["sent", "undelivered"]
    assert parse_qs(received[-1].body.decode())["ErrorCode"] == ["30003"]
    assert "ErrorCode" not in parse_qs(received[0].body.decode())


def test_signalwire_callbacks_start_at_queued(
    sim: SimHandle, callback_listener: CallbackListener
) -> None:
    """SignalWire posts each state it enters, its initial queued included."""
    sim.post_signalwire(status_callback=callback_listener.url + "/sw")
    received = callback_listener.wait_for(4)
    assert [json.loads(r.body)["status"] for r in received] == [
        "queued",
        "initiated",
        "sent",
        "delivered",
    ]


def test_doubled_and_reordered_callbacks(
    sim: SimHandle, callback_listener: CallbackListener
) -> None:
    """Duplicate and reorder faults send every callback twice, newest first."""
    sim.configure(callback_duplicate_rate=1, callback_reorder_rate=1)
    post_twilio(sim, StatusCallback=callback_listener.url + "/cb")
    received = callback_listener.wait_for(4)
    assert statuses(received) == ["delivered", "delivered", "sent", "sent"]
    assert sim.messages()[0]["status"] == "delivered"


@pytest.mark.parametrize("provider", ["twilio", "signalwire"])
def test_record_rows_carry_our_id_segments_and_ingress_flag(sim: SimHandle, provider: str) -> None:
    """Each /_sim/messages row names our message id from the request, its segment count and
    whether the ingress delay held it, beside the fields it always had."""
    if provider == "twilio":
        post_twilio(sim, Body="€" * 81, StatusCallback="http://127.0.0.1:9/cb?message_id=abc-1")
    else:
        sim.post_signalwire(body="€" * 81, custom_variables={"message_id": "abc-1"})
    [row] = sim.messages()
    assert (row["message_id"], row["segments"], row["ingress_delayed"]) == ("abc-1", 2, False)
    assert set(row) == {
        "sid", "provider", "from", "to", "body", "status", "error_code", "created_at",
        "status_callback", "custom_variables", "message_id", "segments", "ingress_delayed",
        "hung", "accepted_count", "request_count", "validity_period",
    }  # fmt: skip


def test_record_without_our_id(sim: SimHandle) -> None:
    """A send that carries no id of ours is recorded with message_id null."""
    post_twilio(sim)
    sim.post_signalwire(custom_variables={"other": "x"})
    assert [r["message_id"] for r in sim.messages()] == [None, None]


def test_dropped_callbacks_still_move_the_record(
    sim: SimHandle, callback_listener: CallbackListener
) -> None:
    """With every callback dropped the provider's own record still reaches delivered."""
    sim.configure(callback_drop_rate=1, callback_delay=0)
    client = twilio_client(sim)
    sid = client.create(to="+15551230000", from_=SIM_TWILIO_NUMBER, body="x").sid
    for _ in range(200):
        if client(sid).fetch().status == "delivered":
            break
        callback_listener.wait_for(1, timeout=0.01)
    assert client(sid).fetch().status == "delivered"
    assert callback_listener.requests == []


def test_twilio_list_filters_and_pages(sim: SimHandle) -> None:
    """The list endpoint filters by To and pages the way the SDK follows."""
    for to in ("+15551230001", "+15551230001", "+15551230001", "+15551230002"):
        post_twilio(sim, To=to)
    listed = twilio_client(sim).list(to="+15551230001", page_size=2)
    assert len(listed) == 3 and {m.to for m in listed} == {"+15551230001"}


def test_python_m_simulator_serves_the_twilio_sdk(callback_listener: CallbackListener) -> None:
    """`python -m simulator` alone: the twilio SDK sends through it; signed callbacks arrive."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIM_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", str(port), "--callback-delay", "0.01"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(base + "/_sim/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                callback_listener.wait_for(1, timeout=0.1)
        client = Client(DEFAULT_TWILIO_ACCOUNT_SID, DEFAULT_TWILIO_AUTH_TOKEN, environment={})
        client.api.base_url = base
        callback = callback_listener.url + "/webhook/twilio/status?message_id=abc"
        message = client.api.v2010.accounts(DEFAULT_TWILIO_ACCOUNT_SID).messages.create(
            to="+15551230000", from_=SIM_TWILIO_NUMBER, body="hello", status_callback=callback
        )
        received = callback_listener.wait_for(2)
    finally:
        process.terminate()
        process.wait(timeout=10)
    validator = RequestValidator(DEFAULT_TWILIO_AUTH_TOKEN)
    assert statuses(received) == ["sent", "delivered"]
    for r in received:
        params = {k: v[0] for k, v in parse_qs(r.body.decode()).items()}
        assert params["MessageSid"] == message.sid
        assert validator.validate(callback, params, r.headers["X-Twilio-Signature"])


@pytest.mark.parametrize("flag", ["--error-rate", "--outage-windows"])
def test_cli_rejects_bad_fault_values(flag: str) -> None:
    """A malformed fault flag stops the simulator with a usage error instead of running."""
    done = subprocess.run(
        [sys.executable, "-m", "simulator", flag, "not-a-number"],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and b"bad value" in done.stderr
