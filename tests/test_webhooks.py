"""The signed status callback endpoints, through the real API app and the real database."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import pytest
from twilio.request_validator import RequestValidator

from api.app import create_app
from api.webhooks import public_urls
from dispatcher.outbox import Outbox, Sent
from shared.config import Settings
from shared.db import open_pool
from tests.api_support import LiveServer
from tests.dispatch_support import ensure_sender
from tests.fixtures_sim import SIM_TWILIO_NUMBER, CallbackListener, SimHandle
from tests.status_support import events, insert_message, message, snapshot
from tests.test_sweeper import SENDERS, send_at_sim

TWILIO_SID = "SM" + "e" * 32
SW_SID = "9b1b3a2e-0c3c-4a55-8a57-2f6f3f0c9e11"
SW_KEY = "PSK_test_signing_key"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def sw_settings(settings: Settings) -> Settings:
    """Test settings with SignalWire configured beside Twilio, signing key included."""
    return dataclasses.replace(
        settings,
        signalwire_project_id="11111111-2222-3333-4444-555555555555",
        signalwire_api_token="PT" + "0" * 32,
        signalwire_space="127.0.0.1:1",
        signalwire_phone_number="+15005550010",
        signalwire_signing_key=SW_KEY,
    )


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[httpx.Client]:
    """The real API app under uvicorn on a loopback port, and a client of it."""
    with LiveServer(create_app(settings)) as live, httpx.Client(base_url=live.url, timeout=10) as c:
        yield c


@pytest.fixture
def client(sw_settings: Settings) -> Iterator[httpx.Client]:
    """The API app whose PUBLIC_BASE_URL (http://testserver) is not the address it listens on."""
    with serving(sw_settings) as c:
        yield c


def twilio_params(status: str, sid: str = TWILIO_SID, code: str | None = None) -> dict[str, str]:
    params = {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "To": "+14155550123",
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
    }
    if code:
        params["ErrorCode"] = code
    return params


def twilio_post(
    client: httpx.Client,
    params: dict[str, str],
    *,
    query: str,
    signed_url: str | None = None,
    token: str = "test-auth-token",  # noqa: S107 - the test settings' token
    signature: str | None = None,
    path: str = "/webhook/twilio/status",
) -> int:
    """POST a Twilio form callback signed with the SDK's own RequestValidator; the status code."""
    url = signed_url or f"http://testserver{path}?{query}"
    sig = (
        signature
        if signature is not None
        else RequestValidator(token).compute_signature(url, params)
    )
    headers = {"Content-Type": FORM}
    if sig:
        headers["X-Twilio-Signature"] = sig
    response = client.post(f"{path}?{query}", content=urlencode(params), headers=headers)
    return response.status_code


def sw_body(status: str, message_id: uuid.UUID | None, code: str | None = None) -> bytes:
    return json.dumps(
        {
            "event_type": "messaging.state",
            "id": SW_SID,
            "project_id": "11111111-2222-3333-4444-555555555555",
            "from": "+15005550010",
            "to": "+14155550123",
            "direction": "outbound",
            "kind": "sms",
            "status": status,
            "error_code": code,
            "number_of_segments": 1,
            "custom_variables": {"message_id": str(message_id)} if message_id else {},
        }
    ).encode()


def sw_sign(url: str, body: bytes, key: str = SW_KEY) -> str:
    """SignalWire's native scheme: hex HMAC-SHA1 of url + raw body."""
    return hmac.new(key.encode(), url.encode() + body, hashlib.sha1).hexdigest()


def sw_post(
    client: httpx.Client,
    body: bytes,
    *,
    signed_url: str = "http://testserver/webhook/signalwire/status",
    signed_body: bytes | None = None,
    key: str = SW_KEY,
    query: str = "",
    signature: str | None = None,
) -> int:
    """POST a native SignalWire JSON callback; the status code."""
    sig = signature if signature is not None else sw_sign(signed_url, signed_body or body, key)
    headers = {"Content-Type": "application/json"}
    if sig:
        headers["X-SignalWire-Signature"] = sig
    path = "/webhook/signalwire/status" + (f"?{query}" if query else "")
    return client.post(path, content=body, headers=headers).status_code


# -- vocabularies ------------------------------------------------------------------------------

TWILIO_WORDS = [
    ("accepted", "queued"),
    ("scheduled", "queued"),
    ("queued", "queued"),
    ("sending", "sending"),
    ("sent", "sent"),
    ("delivered", "delivered"),
    ("undelivered", "undelivered"),
    ("failed", "failed"),
    ("read", "read"),
    ("canceled", "failed"),
    ("partially_delivered", "undelivered"),
    ("teleported", "pending"),
]
SIGNALWIRE_WORDS = [
    ("queued", "queued"),
    ("initiated", "sending"),
    ("sending", "sending"),
    ("sent", "sent"),
    ("delivered", "delivered"),
    ("undelivered", "undelivered"),
    ("failed", "failed"),
    ("read", "read"),
    ("teleported", "pending"),
]


@pytest.mark.parametrize(("word", "expected"), TWILIO_WORDS)
def test_twilio_status_word(
    client: httpx.Client, db: psycopg.Connection[Any], word: str, expected: str
) -> None:
    """Each Twilio status word moves a pending message to its status, once however often sent."""
    mid = insert_message(db, provider="twilio")
    code = "30003" if expected in ("failed", "undelivered") else None
    for _ in range(2):
        assert twilio_post(client, twilio_params(word, code=code), query=f"message_id={mid}") == 204
    _assert_applied_once(db, mid, word, expected)


@pytest.mark.parametrize(("word", "expected"), SIGNALWIRE_WORDS)
def test_signalwire_status_word(
    client: httpx.Client, db: psycopg.Connection[Any], word: str, expected: str
) -> None:
    """Each SignalWire status word moves a pending message to its status, once however sent."""
    mid = insert_message(db, provider="signalwire", from_number="+15005550010")
    code = "30003" if expected in ("failed", "undelivered") else None
    for _ in range(2):
        assert sw_post(client, sw_body(word, mid, code)) == 204
    _assert_applied_once(db, mid, word, expected)


def _assert_applied_once(
    db: psycopg.Connection[Any], mid: uuid.UUID, word: str, expected: str
) -> None:
    row = message(db, mid)
    assert row["delivery_status"] == expected
    assert [e["to_status"] for e in events(db, mid, "callback")] == [word]
    transitions = [(e["from_status"], e["to_status"]) for e in events(db, mid, "transition")]
    assert transitions == ([] if expected == "pending" else [("pending", expected)])
    if expected in ("failed", "undelivered"):
        assert (row["error_code"], row["error_category"]) == ("30003", "delivery")
        assert db.execute(
            "SELECT count(*) FROM sms_alerts WHERE message_id = %s", (mid,)
        ).fetchone() == (1,)


def test_signalwire_compatibility_form_is_accepted(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """SignalWire's compatibility (Twilio-shaped, base64 signed) form callback is applied too."""
    mid = insert_message(db, provider="signalwire", from_number="+15005550010")
    query = f"message_id={mid}"
    params = twilio_params("delivered", sid=SW_SID)
    url = f"http://testserver/webhook/signalwire/status?{query}"
    sig = RequestValidator(SW_KEY).compute_signature(url, params)
    response = client.post(
        f"/webhook/signalwire/status?{query}",
        content=urlencode(params),
        headers={"Content-Type": FORM, "X-SignalWire-Signature": sig},
    )
    assert response.status_code == 204
    assert message(db, mid)["delivery_status"] == "delivered"


def test_unknown_message_answers_2xx_and_is_kept(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """A genuine callback for no message of ours gets 2xx (the provider stops) and is kept raw."""
    assert (
        twilio_post(client, twilio_params("delivered"), query=f"message_id={uuid.uuid4()}") == 204
    )
    assert [e["to_status"] for e in events(db, None)] == ["delivered"]


# -- forgeries ---------------------------------------------------------------------------------


def _twilio_forgeries(query: str) -> dict[str, dict[str, Any]]:
    good = twilio_params("delivered")
    url = f"http://testserver/webhook/twilio/status?{query}"
    sig = RequestValidator("test-auth-token").compute_signature(url, good)
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    return {
        "no header": {"params": good, "signature": ""},
        "wrong key": {"params": good, "token": "not-the-token"},
        "flipped byte": {"params": good, "signature": flipped},
        "parameter added": {"params": {**good, "ErrorCode": "30003"}, "signature": sig},
        "parameter removed": {
            "params": {k: v for k, v in good.items() if k != "SmsStatus"},
            "signature": sig,
        },
        "parameter changed": {"params": {**good, "MessageStatus": "failed"}, "signature": sig},
        "scheme changed": {"params": good, "signed_url": url.replace("http://", "https://")},
        "host changed": {"params": good, "signed_url": url.replace("testserver", "evil.example")},
        "port changed": {
            "params": good,
            "signed_url": url.replace("testserver", "testserver:8080"),
        },
        "query changed": {"params": good, "signed_url": url + "&x=1"},
        "path changed": {
            "params": good,
            "signed_url": url.replace("twilio/status", "twilio/other"),
        },
    }


@pytest.mark.parametrize("kind", list(_twilio_forgeries("q")))
def test_forged_twilio_callback_is_refused_and_changes_nothing(
    client: httpx.Client, db: psycopg.Connection[Any], kind: str
) -> None:
    """A Twilio callback that is not exactly what Twilio signed gets 403 and changes nothing."""
    mid = insert_message(db, provider="twilio", status="queued", sid=TWILIO_SID)
    query = f"message_id={mid}"
    before = snapshot(db)
    forgery = _twilio_forgeries(query)[kind]
    assert twilio_post(client, query=query, **forgery) == 403
    assert snapshot(db) == before


def test_twilio_query_swapped_under_valid_signature_is_refused(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """A valid signature for one message's URL does not carry over to another message id."""
    mine = insert_message(db, provider="twilio", status="queued", sid=TWILIO_SID)
    other = insert_message(
        db, provider="twilio", status="queued", sid="SM" + "f" * 32, to_number="+14155550199"
    )
    before = snapshot(db)
    params = twilio_params("failed", sid="SM" + "f" * 32)
    signed = f"http://testserver/webhook/twilio/status?message_id={mine}"
    sig = RequestValidator("test-auth-token").compute_signature(signed, params)
    assert twilio_post(client, params, query=f"message_id={other}", signature=sig) == 403
    assert snapshot(db) == before


def _signalwire_forgeries(mid: uuid.UUID) -> dict[str, dict[str, Any]]:
    url = "http://testserver/webhook/signalwire/status"
    good = sw_body("delivered", mid)
    sig = sw_sign(url, good)
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    return {
        "no header": {"body": good, "signature": ""},
        "wrong key": {"body": good, "key": "PSK_wrong"},
        "flipped byte": {"body": good, "signature": flipped},
        "body swapped": {"body": sw_body("failed", mid, "30003"), "signature": sig},
        "field added": {"body": good[:-1] + b', "extra": 1}', "signature": sig},
        "scheme changed": {"body": good, "signed_url": url.replace("http://", "https://")},
        "host changed": {"body": good, "signed_url": url.replace("testserver", "evil.example")},
        "port changed": {"body": good, "signed_url": url.replace("testserver", "testserver:8080")},
        "query changed": {"body": good, "query": "x=1"},
    }


@pytest.mark.parametrize("kind", list(_signalwire_forgeries(uuid.UUID(int=0))))
def test_forged_signalwire_callback_is_refused_and_changes_nothing(
    client: httpx.Client, db: psycopg.Connection[Any], kind: str
) -> None:
    """A SignalWire callback not exactly as SignalWire signed it gets 403 and changes nothing."""
    mid = insert_message(
        db, provider="signalwire", status="queued", sid=SW_SID, from_number="+15005550010"
    )
    before = snapshot(db)
    assert sw_post(client, **_signalwire_forgeries(mid)[kind]) == 403
    assert snapshot(db) == before


def test_signalwire_refuses_everything_without_signing_key(
    settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """With SIGNALWIRE_SIGNING_KEY unset, even a well-formed SignalWire callback gets 403."""
    mid = insert_message(
        db, provider="signalwire", status="queued", sid=SW_SID, from_number="+15005550010"
    )
    before = snapshot(db)
    with serving(settings) as c:
        assert sw_post(c, sw_body("delivered", mid), key="") in (403,)
    assert snapshot(db) == before


def test_oversized_callback_is_refused_unread(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """A callback body over 64 KiB gets 413 and changes nothing."""
    before = snapshot(db)
    response = client.post(
        "/webhook/twilio/status",
        content=b"a=" + b"x" * (64 * 1024),
        headers={"Content-Type": FORM, "X-Twilio-Signature": "x"},
    )
    assert response.status_code == 413
    assert snapshot(db) == before


# -- behind a proxy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public", "signed_base"),
    [
        ("https://sms.example.com", "https://sms.example.com"),
        ("https://sms.example.com", "https://sms.example.com:443"),
        ("https://sms.example.com:443", "https://sms.example.com"),
        ("http://sms.example.com", "http://sms.example.com:80"),
        ("https://sms.example.com:8443/outbox", "https://sms.example.com:8443/outbox"),
    ],
)
def test_genuine_callbacks_pass_behind_tls_terminating_proxy(
    sw_settings: Settings, db: psycopg.Connection[Any], public: str, signed_base: str
) -> None:
    """Signed for PUBLIC_BASE_URL (https outside, default port or not), received as http inside."""
    behind = dataclasses.replace(sw_settings, public_base_url=public)
    tw = insert_message(db, provider="twilio", status="queued", sid=TWILIO_SID)
    sw = insert_message(
        db, provider="signalwire", status="queued", sid=SW_SID, from_number="+15005550010"
    )
    with serving(behind) as inside:
        query = f"message_id={tw}"
        signed = f"{signed_base}/webhook/twilio/status?{query}"
        assert (
            twilio_post(inside, twilio_params("delivered"), query=query, signed_url=signed) == 204
        )
        signed = f"{signed_base}/webhook/signalwire/status"
        assert sw_post(inside, sw_body("delivered", sw), signed_url=signed) == 204
    assert message(db, tw)["delivery_status"] == "delivered"
    assert message(db, sw)["delivery_status"] == "delivered"


def test_public_urls_add_or_drop_only_the_default_port() -> None:
    """The rebuilt URL comes from PUBLIC_BASE_URL, with only its default-port twin beside it."""
    assert public_urls("https://a.example", "/p", "q=1") == [
        "https://a.example/p?q=1",
        "https://a.example:443/p?q=1",
    ]
    assert public_urls("http://a.example:80/base/", "/p", "") == [
        "http://a.example:80/base/p",
        "http://a.example/base/p",
    ]
    assert public_urls("http://a.example:8000", "/p", "") == ["http://a.example:8000/p"]


# -- callbacks signed by the simulator ---------------------------------------------------------

_RELAYED = ("content-type", "x-twilio-signature", "x-signalwire-signature")


def relay(listener: CallbackListener, client: httpx.Client, count: int) -> list[int]:
    """Replay what the simulator posted to PUBLIC_BASE_URL (the listener) into the API, as is.

    Like a proxy in front of the API: signed for the public address, received at another one.
    """
    got = listener.wait_for(count)
    assert len(got) == count, got
    return [
        client.post(
            r.path,
            content=r.body,
            headers={k: v for k, v in r.headers.items() if k.lower() in _RELAYED},
        ).status_code
        for r in got
    ]


@pytest.mark.parametrize(
    ("provider", "fmt", "to", "final", "count"),
    [
        ("twilio", "json", "+14155550123", "delivered", 2),  # no callback for initial queued
        ("signalwire", "json", "+14155550123", "delivered", 4),
        ("signalwire", "form", "+14155550123", "delivered", 4),
        ("twilio", "json", "+15005550011", "undelivered", 2),
        ("signalwire", "json", "+15005550013", "failed", 3),
    ],
)
def test_simulator_signed_callbacks_are_applied(
    sim: SimHandle,
    sim_settings: Settings,
    callback_listener: CallbackListener,
    db: psycopg.Connection[Any],
    provider: str,
    fmt: str,
    to: str,
    final: str,
    count: int,
) -> None:
    """Genuine callbacks signed by the simulator pass verification and move the message on."""
    sim.configure(signalwire_callback_format=fmt)
    mid = insert_message(db, provider=provider, from_number=SENDERS[provider], to_number=to)
    sid = send_at_sim(sim_settings, provider, mid, to)
    # The dispatcher's record (a compatibility-form callback carries no id of ours: sid only).
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'queued', provider_sid = %s,"
        " submitted_at = now() WHERE id = %s",
        (sid, mid),
    )
    with serving(sim_settings) as api:
        assert relay(callback_listener, api, count) == [204] * count
    row = message(db, mid)
    assert (row["delivery_status"], row["provider_sid"]) == (final, sid)
    assert len(events(db, mid, "callback")) == count


def test_callback_before_dispatcher_records_sid_lands_on_its_message(
    sim: SimHandle,
    sim_settings: Settings,
    callback_listener: CallbackListener,
    db: psycopg.Connection[Any],
) -> None:
    """Callbacks beating the dispatcher's record of the sid find the message; the record agrees."""
    mid = insert_message(db, provider="twilio", from_number=SIM_TWILIO_NUMBER)
    other = insert_message(
        db, provider="twilio", from_number=SIM_TWILIO_NUMBER, to_number="+14155550199"
    )
    ensure_sender(db, SIM_TWILIO_NUMBER)
    db.execute(
        "INSERT INTO sms_outbox (kind, message_id, provider, sender)"
        " SELECT 'send_sms', id, provider, from_number FROM sms_messages WHERE id = %s",
        (mid,),
    )

    async def claim_and_start() -> Any:
        pool = await open_pool(sim_settings.database_url, application_name="race-test", min_size=1)
        try:
            outbox = Outbox(pool, "race-test", sim_settings)
            [work] = await outbox.claim(10)
            assert await outbox.start([work]) == {work.id}
            return work
        finally:
            await pool.close()

    work = asyncio.run(claim_and_start())
    sid = send_at_sim(sim_settings, "twilio", mid, "+14155550123")  # the dispatcher's provider call
    with serving(sim_settings) as api:
        assert relay(callback_listener, api, 2) == [204] * 2  # ... answered before it records
    assert (message(db, mid)["delivery_status"], message(db, mid)["provider_sid"]) == (
        "delivered",
        sid,
    )

    async def record() -> list[dict[str, Any]]:
        pool = await open_pool(sim_settings.database_url, application_name="race-test", min_size=1)
        try:
            return await Outbox(pool, "race-test", sim_settings).record_sent(
                [Sent(work, sid, "queued")]
            )
        finally:
            await pool.close()

    assert len(asyncio.run(record())) == 1  # the dispatcher's record still succeeds
    row = message(db, mid)
    assert (row["delivery_status"], row["provider_sid"]) == ("delivered", sid)
    assert message(db, other)["delivery_status"] == "pending"
    assert db.execute("SELECT count(*) FROM sms_outbox").fetchone() == (0,)
