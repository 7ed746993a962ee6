"""Texts people send to our numbers: the simulator posts each provider's signed incoming-message
webhook (POST /_sim/inbound) over loopback HTTP to the real API under uvicorn, on a real
PostgreSQL. Keywords suppress and lift, replies land in their conversation, forgeries change
nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import httpx
import psycopg
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send
from twilio.request_validator import RequestValidator

from api.app import create_app
from api.inbound import EMPTY_SWML, EMPTY_XML
from shared import apikeys
from shared.config import Settings
from tests.api_support import LiveServer
from tests.fixtures_sim import SIM_SIGNALWIRE_NUMBER, SIM_TWILIO_NUMBER, SimHandle

PERSON = "+14155552671"
OTHER_PERSON = "+14155552672"
FORM = "application/x-www-form-urlencoded"


class _Late:
    """An ASGI app whose real app is built once the server's port (its public URL) is known."""

    app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


@dataclass
class Stack:
    """The API (PUBLIC_BASE_URL = where it listens) and the simulator texting back to it."""

    api: httpx.Client
    url: str
    auth: dict[str, str]
    key_id: int
    sim: SimHandle

    def text(
        self, body: str, *, from_: str = PERSON, to: str = SIM_TWILIO_NUMBER, **extra: str
    ) -> dict[str, Any]:
        """A person texts `body` to our number `to`: what the simulator posted and got back."""
        r = httpx.post(
            f"{self.sim.base_url}/_sim/inbound",
            json={"from": from_, "to": to, "body": body, **extra},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    def send(self, to: str = PERSON, from_: str = SIM_TWILIO_NUMBER) -> httpx.Response:
        return self.api.post(
            "/sms/send", json={"to": to, "body": "hi", "from": from_}, headers=self.auth
        )


@pytest.fixture
def stack(sim: SimHandle, sim_settings: Settings, db: psycopg.Connection[Any]) -> Iterator[Stack]:
    late = _Late()
    live = LiveServer(late)  # its port is known from here on
    late.app = create_app(dataclasses.replace(sim_settings, public_base_url=live.url))
    sim.configure(inbound_url=live.url + "/webhook/{provider}/inbound")
    key_id, key = apikeys.create_key_sync(db, "inbound tests")
    auth = {"Authorization": f"Bearer {key}"}
    with live, httpx.Client(base_url=live.url, timeout=10) as client:
        yield Stack(client, live.url, auth, key_id, sim)


def rows(db: psycopg.Connection[Any]) -> tuple[int, int, int, int]:
    """(messages, conversations, events, suppressions)."""
    row = db.execute(
        "SELECT (SELECT count(*) FROM sms_messages), (SELECT count(*) FROM sms_conversations),"
        " (SELECT count(*) FROM sms_message_events), (SELECT count(*) FROM sms_suppressions)"
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], row[3]


def suppressions(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT phone_number, sender_number, reason FROM sms_suppressions ORDER BY id"
    ).fetchall()


def refused(response: httpx.Response) -> bool:
    if response.status_code != 422:
        assert response.status_code == 202, response.text
        return False
    assert response.json()["errors"] == [
        {
            "field": "to",
            "code": "recipient_opted_out",
            "message": "the recipient opted out of messages from this sender",
        }
    ]
    return True


def test_stop_refuses_the_next_send_from_that_sender_only(
    stack: Stack, db: psycopg.Connection[Any]
) -> None:
    """STOP texted to our Twilio number: answered with empty TwiML, stored, and the next send to
    that person from that number is 422 with nothing written; from our other number it goes."""
    posted = stack.text("STOP")
    assert (posted["provider"], posted["status"]) == ("twilio", 200)
    assert posted["answer"] == EMPTY_XML and posted["answer_content_type"].startswith("text/xml")
    inbound = db.execute(
        "SELECT id FROM sms_messages WHERE direction = 'inbound' AND provider_sid = %s",
        (posted["sid"],),
    ).fetchone()
    assert inbound is not None
    assert db.execute(
        "SELECT phone_number, sender_number, reason, source_message_id FROM sms_suppressions"
    ).fetchall() == [(PERSON, SIM_TWILIO_NUMBER, "stop_keyword", inbound[0])]
    before = rows(db)
    assert refused(stack.send())
    assert rows(db) == before
    assert not refused(stack.send(from_=SIM_SIGNALWIRE_NUMBER))
    assert not refused(stack.send(to=OTHER_PERSON))


def test_stopall_refuses_every_sender(stack: Stack, db: psycopg.Connection[Any]) -> None:
    """STOPALL (any case, blanks around it) suppresses the person for every sender."""
    stack.text("  stopall ")
    assert suppressions(db) == [(PERSON, None, "stop_keyword")]
    assert refused(stack.send()) and refused(stack.send(from_=SIM_SIGNALWIRE_NUMBER))


@pytest.mark.parametrize("stop", ["STOP", "STOPALL", "unsubscribe"])
@pytest.mark.parametrize("start", ["START", "unstop", "Yes"])
def test_start_lifts_what_a_stop_set(
    stack: Stack, db: psycopg.Connection[Any], stop: str, start: str
) -> None:
    """START / UNSTOP / YES to the number the person stopped lifts their STOP (or STOPALL)."""
    stack.text(stop)
    assert refused(stack.send())
    stack.text(start)
    assert suppressions(db) == []
    assert not refused(stack.send())


def test_start_lifts_the_providers_opt_out_but_never_an_operators(
    stack: Stack, db: psycopg.Connection[Any]
) -> None:
    """START lifts the person's own opt-outs of this number (their STOP, the provider's 21610
    record); an operator's or an API call's suppression, or a STOP of another number, stays."""
    db.execute(
        "INSERT INTO sms_suppressions (phone_number, sender_number, reason) VALUES"
        " (%(p)s, %(tw)s, 'provider_opt_out'), (%(p)s, NULL, 'operator'),"
        " (%(p)s, %(sw)s, 'stop_keyword'), (%(o)s, %(tw)s, 'api')",
        {"p": PERSON, "o": OTHER_PERSON, "tw": SIM_TWILIO_NUMBER, "sw": SIM_SIGNALWIRE_NUMBER},
    )
    stack.text("START")
    assert suppressions(db) == [
        (PERSON, None, "operator"),
        (PERSON, SIM_SIGNALWIRE_NUMBER, "stop_keyword"),
        (OTHER_PERSON, SIM_TWILIO_NUMBER, "api"),
    ]
    assert refused(stack.send())


def test_a_reply_is_stored_in_its_conversation_and_listed(
    stack: Stack, db: psycopg.Connection[Any]
) -> None:
    """A reply that is no keyword is stored as an inbound `received` message in the thread of the
    message it answers (which moves on), for the key that wrote; both directions are listed."""
    sent = stack.send()
    assert sent.status_code == 202
    conversation = sent.json()["conversation_id"]
    before = db.execute("SELECT last_message_at FROM sms_conversations").fetchone()
    posted = stack.text("Stop please, ok? Gracias 👍")
    listed = stack.api.get(
        "/sms/messages", params={"conversation_id": conversation}, headers=stack.auth
    ).json()["messages"]
    assert [(m["direction"], m["status"]) for m in listed] == [
        ("inbound", "received"),
        ("outbound", "pending"),
    ]
    reply = listed[0]
    assert (reply["from"], reply["to"], reply["body"], reply["provider"]) == (
        PERSON,
        SIM_TWILIO_NUMBER,
        "Stop please, ok? Gracias 👍",
        "twilio",
    )
    assert (reply["provider_sid"], reply["segments"], reply["encoding"]) == (
        posted["sid"],
        1,
        "UCS-2",
    )
    assert reply["final_at"] is not None and reply["conversation_id"] == conversation
    one = stack.api.get(f"/sms/messages/{reply['id']}", headers=stack.auth).json()
    assert [e["type"] for e in one["events"]] == ["received"]
    assert one["events"][0]["detail"]["keyword"] is None
    assert "Body" not in one["events"][0]["detail"]["payload"]
    after = db.execute("SELECT last_message_at FROM sms_conversations").fetchone()
    assert before is not None and after is not None and after[0] > before[0]
    owner = db.execute(
        "SELECT api_key_id FROM sms_messages WHERE id = %s", (UUID(reply["id"]),)
    ).fetchone()
    assert owner == (stack.key_id,)
    assert suppressions(db) == []  # "Stop please" is a reply, not the keyword


def test_a_first_text_opens_a_conversation_of_no_key(
    stack: Stack, db: psycopg.Connection[Any]
) -> None:
    """A person texting first opens the (our number, their number) thread; no key wrote in it,
    so the message belongs to none."""
    stack.text("Hello?")
    assert db.execute(
        "SELECT c.from_number, c.to_number, m.api_key_id FROM sms_messages m"
        " JOIN sms_conversations c ON c.id = m.conversation_id"
    ).fetchall() == [(SIM_TWILIO_NUMBER, PERSON, None)]
    sent = stack.send()
    conversation = db.execute("SELECT id FROM sms_conversations").fetchone()
    assert conversation is not None and sent.json()["conversation_id"] == str(conversation[0])


def test_the_same_webhook_twice_is_stored_once(stack: Stack, db: psycopg.Connection[Any]) -> None:
    """A webhook the provider posts again (same sid) answers 200 and changes nothing: one message,
    one event, and its STOP does not undo a START texted since."""
    stop = stack.text("STOP")
    stack.text("START")
    before = rows(db)
    url, params = stop["url"], stop["posted"]
    signature = RequestValidator(stack.sim.config.twilio_auth_token).compute_signature(url, params)
    again = httpx.post(
        url,
        content=urlencode(params),
        headers={"Content-Type": FORM, "X-Twilio-Signature": signature},
    )
    assert again.status_code == 200 and again.text == EMPTY_XML
    assert rows(db) == before
    assert suppressions(db) == []
    assert db.execute(
        "SELECT count(*) FROM sms_messages WHERE provider_sid = %s", (stop["sid"],)
    ).fetchone() == (1,)


def test_signalwire_messaging_webhook(stack: Stack, db: psycopg.Connection[Any]) -> None:
    """SignalWire's native messaging webhook (JSON, X-SignalWire-Signature): answered with a SWML
    document that only receives; STOP suppresses for our SignalWire number only."""
    posted = stack.text("Stop", to=SIM_SIGNALWIRE_NUMBER, provider="signalwire")
    assert posted["content_type"] == "application/json" and posted["status"] == 200
    assert json.loads(posted["answer"]) == json.loads(EMPTY_SWML)
    assert posted["answer_content_type"].startswith("application/json")
    stored = db.execute(
        "SELECT provider, provider_sid, from_number, to_number FROM sms_messages"
    ).fetchall()
    assert stored == [("signalwire", posted["sid"], PERSON, SIM_SIGNALWIRE_NUMBER)]
    assert suppressions(db) == [(PERSON, SIM_SIGNALWIRE_NUMBER, "stop_keyword")]
    assert refused(stack.send(from_=SIM_SIGNALWIRE_NUMBER)) and not refused(stack.send())


def test_signalwire_compatibility_form(stack: Stack, db: psycopg.Connection[Any]) -> None:
    """SignalWire's compatibility (cXML) form is read too, and answered with empty cXML."""
    stack.sim.configure(signalwire_callback_format="form")
    posted = stack.text("hi there", to=SIM_SIGNALWIRE_NUMBER, provider="signalwire")
    assert (posted["status"], posted["answer"]) == (200, EMPTY_XML)
    assert db.execute("SELECT provider, body FROM sms_messages").fetchall() == [
        ("signalwire", "hi there")
    ]


def _sw_sign(url: str, body: bytes, key: str) -> str:
    return hmac.new(key.encode(), url.encode() + body, hashlib.sha1).hexdigest()


def _twilio_form(stack: Stack) -> dict[str, str]:
    return {
        "MessageSid": "SM" + "b" * 32,
        "AccountSid": stack.sim.config.twilio_account_sid,
        "From": PERSON,
        "To": SIM_TWILIO_NUMBER,
        "Body": "STOP",
    }


def _sw_body() -> bytes:
    message = {"message_id": "c2d3e4f5-a6b7-4901-8def-234567890abc", "from": PERSON,
               "to": SIM_SIGNALWIRE_NUMBER, "body": "STOP"}  # fmt: skip
    return json.dumps({"message": message, "params": {}}).encode()


def _twilio_signature(stack: Stack, path: str, form: dict[str, str], token: str = "") -> str:
    validator = RequestValidator(token or stack.sim.config.twilio_auth_token)
    return str(validator.compute_signature(stack.url + path, form))


TW_PATH = "/webhook/twilio/inbound"
SW_PATH = "/webhook/signalwire/inbound"


def _forgeries(stack: Stack) -> dict[str, tuple[str, bytes, dict[str, str]]]:
    """(path, body, headers) of webhooks that are not exactly what a provider signed."""
    form = _twilio_form(stack)
    body = urlencode(form).encode()
    good = _twilio_signature(stack, TW_PATH, form)
    sw_body = _sw_body()
    key = stack.sim.config.signalwire_signing_key
    sw_json = {"Content-Type": "application/json"}
    return {
        "twilio, no signature": (TW_PATH, body, {"Content-Type": FORM}),
        "twilio, wrong token": (
            TW_PATH,
            body,
            {
                "Content-Type": FORM,
                "X-Twilio-Signature": _twilio_signature(stack, TW_PATH, form, "wrong"),
            },
        ),
        "twilio, body changed": (
            TW_PATH,
            urlencode({**form, "Body": "START"}).encode(),
            {"Content-Type": FORM, "X-Twilio-Signature": good},
        ),
        "twilio, signed for the status URL": (
            TW_PATH,
            body,
            {
                "Content-Type": FORM,
                "X-Twilio-Signature": _twilio_signature(stack, "/webhook/twilio/status", form),
            },
        ),
        "signalwire, no signature": (SW_PATH, sw_body, sw_json),
        "signalwire, wrong key": (
            SW_PATH,
            sw_body,
            {**sw_json, "X-SignalWire-Signature": _sw_sign(stack.url + SW_PATH, sw_body, "x")},
        ),
        "signalwire, body changed": (
            SW_PATH,
            sw_body.replace(b"STOP", b"START"),
            {**sw_json, "X-SignalWire-Signature": _sw_sign(stack.url + SW_PATH, sw_body, key)},
        ),
    }


FORGERIES = [
    "twilio, no signature",
    "twilio, wrong token",
    "twilio, body changed",
    "twilio, signed for the status URL",
    "signalwire, no signature",
    "signalwire, wrong key",
    "signalwire, body changed",
]


@pytest.mark.parametrize("kind", FORGERIES)
def test_forged_or_unsigned_webhooks_are_403_and_write_nothing(
    stack: Stack, db: psycopg.Connection[Any], kind: str
) -> None:
    """A webhook not exactly as the provider signed it for its URL: 403, no message, thread,
    event or suppression."""
    path, body, headers = _forgeries(stack)[kind]
    assert stack.api.post(path, content=body, headers=headers).status_code == 403
    assert rows(db) == (0, 0, 0, 0)


def test_the_same_payloads_signed_right_are_stored(
    stack: Stack, db: psycopg.Connection[Any]
) -> None:
    """The forgery table is not vacuous: its payloads, signed as the providers sign, are stored
    (the real SDK validators pass them)."""
    form = _twilio_form(stack)
    headers = {"Content-Type": FORM, "X-Twilio-Signature": _twilio_signature(stack, TW_PATH, form)}
    assert stack.api.post(TW_PATH, content=urlencode(form), headers=headers).status_code == 200
    body = _sw_body()
    signature = _sw_sign(stack.url + SW_PATH, body, stack.sim.config.signalwire_signing_key)
    headers = {"Content-Type": "application/json", "X-SignalWire-Signature": signature}
    assert stack.api.post(SW_PATH, content=body, headers=headers).status_code == 200
    assert rows(db)[0] == 2 and len(suppressions(db)) == 2


def test_a_signed_text_from_a_short_code_is_400_and_writes_nothing(
    stack: Stack, db: psycopg.Connection[Any]
) -> None:
    """Genuine, but not a conversation we can keep (the sender is no E.164 number): 400."""
    posted = stack.text("STOP", from_="72345")
    assert posted["status"] == 400
    assert rows(db) == (0, 0, 0, 0)


def test_inbound_messages_are_listed_by_status_received(stack: Stack) -> None:
    """`GET /sms/messages?status=received` lists the replies, and only them."""
    assert stack.send().status_code == 202
    posted = stack.text("see you")
    listed = stack.api.get(
        "/sms/messages", params={"status": "received"}, headers=stack.auth
    ).json()["messages"]
    assert [(m["direction"], m["provider_sid"]) for m in listed] == [("inbound", posted["sid"])]
