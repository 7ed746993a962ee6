"""The simulator texts back: POST /_sim/inbound posts each provider's incoming-message webhook,
signed as the provider signs it, to the URL configured for the number (or for all)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import httpx
from signalwire.core.security.webhook_validator import validate_webhook_signature
from twilio.request_validator import RequestValidator

from simulator.config import SimConfig, from_env
from tests.fixtures_sim import SIM_SIGNALWIRE_NUMBER, SIM_TWILIO_NUMBER, CallbackListener, SimHandle
from tests.provider_schemas import problems
from tooling import devstack

PERSON = "+14155552671"


def text(sim: SimHandle, **fields: Any) -> httpx.Response:
    return httpx.post(f"{sim.base_url}/_sim/inbound", json=fields, timeout=10)


def test_twilio_inbound_form_is_signed_as_twilio_signs(
    sim: SimHandle, callback_listener: CallbackListener
) -> None:
    """Twilio's incoming-message form, X-Twilio-Signature valid for the URL it went to (the SDK's
    own validator); the answer names what was posted and the status it got."""
    sim.configure(inbound_url=callback_listener.url + "/in/{provider}")
    r = text(sim, **{"from": PERSON, "to": SIM_TWILIO_NUMBER, "body": "STOP"})
    assert r.status_code == 200, r.text
    answer = r.json()
    url = callback_listener.url + "/in/twilio"
    assert (answer["provider"], answer["url"], answer["status"]) == ("twilio", url, 200)
    (got,) = callback_listener.wait_for(1)
    assert got.path == "/in/twilio"
    form = dict(parse_qsl(got.body.decode(), keep_blank_values=True))
    assert form == answer["posted"]
    assert (form["From"], form["To"], form["Body"], form["MessageSid"]) == (
        PERSON,
        SIM_TWILIO_NUMBER,
        "STOP",
        answer["sid"],
    )
    assert form["SmsSid"] == form["SmsMessageSid"] == answer["sid"] and answer["sid"][:2] == "SM"
    assert (form["NumSegments"], form["NumMedia"], form["SmsStatus"]) == ("1", "0", "received")
    validator = RequestValidator(sim.config.twilio_auth_token)
    assert validator.validate(url, form, got.headers["X-Twilio-Signature"])
    assert not validator.validate(url + "x", form, got.headers["X-Twilio-Signature"])


def test_signalwire_inbound_json_matches_the_published_payload(
    sim: SimHandle, callback_listener: CallbackListener
) -> None:
    """SignalWire's messaging webhook: InboundMessageWebhookPayload (vendored schema), signed with
    the SHA-1 header alone, as the SDK's validator checks it."""
    sim.configure(inbound_url=callback_listener.url + "/in/{provider}")
    r = text(sim, **{"from": PERSON, "to": SIM_SIGNALWIRE_NUMBER, "body": "Hola 👋",
                     "provider": "signalwire"})  # fmt: skip
    answer = r.json()
    (got,) = callback_listener.wait_for(1)
    payload = json.loads(got.body)
    assert payload == answer["posted"] and problems("signalwire", "inbound_message", payload) == []
    message = payload["message"]
    assert (message["message_id"], message["from"], message["to"], message["body"]) == (
        answer["sid"],
        PERSON,
        SIM_SIGNALWIRE_NUMBER,
        "Hola 👋",
    )
    assert (message["direction"], message["segments"], payload["params"]) == ("inbound", 1, {})
    assert "X-SignalWire-SHA256-Signature" not in got.headers
    signature = got.headers["X-SignalWire-Signature"]
    key = sim.config.signalwire_signing_key
    url = callback_listener.url + "/in/signalwire"
    assert validate_webhook_signature(key, signature, url, got.body.decode())
    assert not validate_webhook_signature("other-key", signature, url, got.body.decode())


def test_signalwire_compatibility_form(sim: SimHandle, callback_listener: CallbackListener) -> None:
    """With signalwire_callback_format=form, the cXML form, signed Twilio's way with the key."""
    sim.configure(inbound_url=callback_listener.url + "/in", signalwire_callback_format="form")
    text(sim, **{"from": PERSON, "to": SIM_SIGNALWIRE_NUMBER, "body": "hi",
                 "provider": "signalwire"})  # fmt: skip
    (got,) = callback_listener.wait_for(1)
    form = dict(parse_qsl(got.body.decode()))
    assert sorted(form) == ["AccountSid", "Body", "From", "MessageSid", "NumMedia", "To"]
    validator = RequestValidator(sim.config.signalwire_signing_key)
    assert validator.validate(
        callback_listener.url + "/in", form, got.headers["X-Twilio-Signature"]
    )


def test_per_number_url_and_the_provider_of_the_number(
    sim: SimHandle, callback_listener: CallbackListener
) -> None:
    """inbound_urls[number] wins over inbound_url; without `provider`, a number that sent through
    SignalWire here is texted back through SignalWire (Twilio otherwise)."""
    sim.configure(
        inbound_url="http://127.0.0.1:9/nowhere",
        inbound_urls={SIM_SIGNALWIRE_NUMBER: callback_listener.url + "/sw"},
    )
    assert sim.post_signalwire(to=PERSON).status_code == 201  # from SIM_SIGNALWIRE_NUMBER
    answer = text(sim, **{"from": PERSON, "to": SIM_SIGNALWIRE_NUMBER, "body": "x"}).json()
    assert (answer["provider"], answer["url"], answer["status"]) == (
        "signalwire",
        callback_listener.url + "/sw",
        200,
    )
    unreachable = text(sim, **{"from": PERSON, "to": SIM_TWILIO_NUMBER, "body": "x"})
    assert unreachable.status_code == 502 and unreachable.json()["status"] is None


def test_bad_requests_are_400(sim: SimHandle) -> None:
    """Unknown fields, missing numbers, an unknown provider, or no URL configured: 400."""
    assert text(sim, **{"from": PERSON, "to": SIM_TWILIO_NUMBER}).status_code == 400  # no URL
    sim.configure(inbound_url="http://127.0.0.1:9/in")
    for fields in (
        {"from": PERSON},
        {"from": PERSON, "to": SIM_TWILIO_NUMBER, "body": 5},
        {"from": PERSON, "to": SIM_TWILIO_NUMBER, "channel": "sms"},
        {"from": PERSON, "to": SIM_TWILIO_NUMBER, "provider": "vonage"},
    ):
        r = text(sim, **fields)
        assert r.status_code == 400 and r.json()["error"], fields


def test_inbound_urls_are_settings_like_the_others() -> None:
    """SIM_INBOUND_URL / SIM_INBOUND_URLS (JSON) at start, shown by GET /_sim/config."""
    config = SimConfig()
    config.update(
        from_env(
            {
                "SIM_INBOUND_URL": "http://127.0.0.1:8000/webhook/{provider}/inbound",
                "SIM_INBOUND_URLS": json.dumps({SIM_TWILIO_NUMBER: "http://a/in"}),
            }
        )
    )
    shown = config.public()
    assert shown["inbound_url"] == "http://127.0.0.1:8000/webhook/{provider}/inbound"
    assert shown["inbound_urls"] == {SIM_TWILIO_NUMBER: "http://a/in"}


def test_make_run_points_the_simulator_at_the_api() -> None:
    """make run's simulator texts back to the API's own inbound webhooks (PUBLIC_BASE_URL)."""
    env = {"API_PORT": "8000", "PUBLIC_BASE_URL": "http://127.0.0.1:8000"}
    assert devstack.provider_env(env)
    assert env["SIM_INBOUND_URL"] == "http://127.0.0.1:8000/webhook/{provider}/inbound"
