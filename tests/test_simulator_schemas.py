"""The simulator's bodies and callbacks against the providers' published schemas (vendored)."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import pytest

from tests.fixtures_sim import CallbackListener, SimHandle, wait_until
from tests.provider_schemas import problems, properties

SW_LOGS = "/api/messaging/logs"


def valid(provider: str, name: str, body: Any) -> bool:
    """Assert-friendly: the body validates, or the failure names every problem."""
    found = problems(provider, name, body)
    assert found == [], f"{provider} {name}: {found}\n{json.dumps(body, indent=1)}"
    return True


def final_at_sim(sim: SimHandle, count: int = 1) -> list[dict[str, Any]]:
    """Wait until `count` messages reached a final status at the simulator."""
    final = ("delivered", "undelivered", "failed")
    return wait_until(lambda: [r for r in sim.messages() if r["status"] in final][count - 1 :])


# -- Twilio ------------------------------------------------------------------------------------


def test_twilio_create_matches_the_message_schema(sim: SimHandle) -> None:
    """A Twilio create answers 201 with all 20 Message properties, as the spec's examples do."""
    response = sim.post_twilio(Body="Hello! 👍")
    body = response.json()
    assert response.status_code == 201 and valid("twilio", "message", body)
    assert set(body) == properties("twilio", "message")
    assert (body["status"], body["direction"], body["api_version"]) == (
        "queued",
        "outbound-api",
        "2010-04-01",
    )
    assert (body["num_segments"], body["num_media"], body["date_sent"], body["price"]) == (
        "1",
        "0",
        None,
        None,
    )
    assert body["date_created"].endswith(" +0000")
    assert body["uri"] == f"/2010-04-01/Accounts/{body['account_sid']}/Messages/{body['sid']}.json"
    assert body["subresource_uris"]["media"] == body["uri"].removesuffix(".json") + "/Media.json"


def test_twilio_fetch_of_a_delivered_message(sim: SimHandle) -> None:
    """A delivered message reads back with date_sent and a price for each of its segments."""
    sid = sim.post_twilio(Body="x" * 161).json()["sid"]
    final_at_sim(sim)
    body = sim.get(f"/2010-04-01/Accounts/{sim.config.twilio_account_sid}/Messages/{sid}.json",
                   "twilio").json()  # fmt: skip
    assert valid("twilio", "message", body)
    assert (body["status"], body["num_segments"], body["error_code"]) == ("delivered", "2", None)
    assert body["date_sent"] is not None and body["price"] == "-0.01580"
    assert body["price_unit"] == "USD"


@pytest.mark.parametrize(
    ("to", "status", "code", "text"),
    [
        ("+15005550013", "failed", 30006, "Landline or unreachable carrier"),
        ("+15005550011", "undelivered", 30003, "Unreachable destination handset"),
    ],
)
def test_twilio_failed_message_has_error_code_and_message(
    sim: SimHandle, to: str, status: str, code: int, text: str
) -> None:
    """A message that failed delivery carries error_code as an integer and its error_message."""
    sid = sim.post_twilio(To=to).json()["sid"]
    final_at_sim(sim)
    path = f"/2010-04-01/Accounts/{sim.config.twilio_account_sid}/Messages/{sid}.json"
    body = sim.get(path, "twilio").json()
    assert valid("twilio", "message", body)
    assert (body["status"], body["error_code"], body["error_message"]) == (status, code, text)
    assert (body["price"] is None) == (status == "failed")  # failed messages are not charged


def test_twilio_list_page_matches_the_list_schema(sim: SimHandle) -> None:
    """A list page has the ListMessageResponse keys, Message items and relative paging URIs."""
    for _ in range(3):
        sim.post_twilio(To="+15551239999")
    body = sim.get(sim.twilio_messages_path(), "twilio", To="+15551239999", PageSize=2).json()
    assert valid("twilio", "message_list", body)
    assert set(body) == properties("twilio", "message_list")
    assert (body["page"], body["page_size"], body["start"], body["end"]) == (0, 2, 0, 1)
    assert body["previous_page_uri"] is None and "PageToken=PA" in body["next_page_uri"]
    second = sim.get(body["next_page_uri"], "twilio").json()
    assert valid("twilio", "message_list", second)
    assert (second["page"], second["start"], second["end"], len(second["messages"])) == (1, 2, 2, 1)
    assert second["next_page_uri"] is None and "PageToken=PB" in second["previous_page_uri"]


@pytest.mark.parametrize(
    ("configure", "form", "status", "code"),
    [
        ({}, {"To": "+15005550001"}, 400, 21211),
        ({}, {"Body": ""}, 400, 21602),
        ({"rate_limit_rate": 1}, {}, 429, 20429),
        ({"server_error_rate": 1, "server_error_status": 500}, {}, 500, 20500),
        ({"outage": True}, {}, 503, 20503),
    ],
)
def test_twilio_errors_match_the_error_schema(
    sim: SimHandle, configure: dict[str, Any], form: dict[str, str], status: int, code: int
) -> None:
    """Every Twilio refusal is {code, message, more_info, status} with its own code."""
    sim.configure(**configure)
    response = sim.post_twilio(**form)
    body = response.json()
    assert (response.status_code, body["code"], body["status"]) == (status, code, status)
    assert valid("twilio", "error", body) and set(body) == properties("twilio", "error")
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"


def test_twilio_unknown_sid_is_a_404_error_body(sim: SimHandle) -> None:
    """Fetching a sid the account does not have is 404 with code 20404."""
    path = f"/2010-04-01/Accounts/{sim.config.twilio_account_sid}/Messages/SM{'0' * 32}.json"
    response = sim.get(path, "twilio")
    assert response.status_code == 404 and valid("twilio", "error", response.json())
    assert response.json()["code"] == 20404


# -- SignalWire --------------------------------------------------------------------------------


def test_signalwire_create_matches_the_message_schema(sim: SimHandle) -> None:
    """A SignalWire create answers 201 with a closed Message.Message (no custom_variables)."""
    callback = "http://127.0.0.1:9/webhook/signalwire/status"
    response = sim.post_signalwire(
        body="ж" * 71, status_callback=callback, custom_variables={"message_id": "m"}
    )
    body = response.json()
    assert response.status_code == 201 and valid("signalwire", "message", body)
    assert (body["status"], body["number_of_segments"], body["status_callback_url"]) == (
        "queued",
        2,
        callback,
    )
    assert body["message_uri"] == f"/api/messaging/logs/{body['id']}"


def test_signalwire_log_entry_and_list_match_their_schemas(sim: SimHandle) -> None:
    """Log entries (one by id, and in a page) validate, carry no body, and report failures."""
    good = sim.post_signalwire().json()["id"]
    bad = sim.post_signalwire(to="+15005550013").json()["id"]
    final_at_sim(sim, 2)
    entry = sim.get(f"{SW_LOGS}/{bad}", "signalwire").json()
    assert valid("signalwire", "log_retrieve", entry) and valid("signalwire", "message_log", entry)
    assert (entry["status"], entry["error_code"], entry["error_message"]) == (
        "failed",
        "30006",
        "Landline or unreachable carrier",
    )
    assert "body" not in entry and entry["charge_details"] == []
    page = sim.get(SW_LOGS, "signalwire", page_size=1).json()
    assert valid("signalwire", "log_list", page)
    assert [e["id"] for e in page["data"]] == [bad]  # newest first
    assert set(page["links"]) == {"self", "first", "next"}
    following = sim.get(page["links"]["next"], "signalwire").json()
    assert valid("signalwire", "log_list", following)
    assert [e["id"] for e in following["data"]] == [good] and "next" not in following["links"]
    assert following["data"][0]["charge"] > 0 and following["data"][0]["error_code"] is None


@pytest.mark.parametrize(
    ("configure", "fields", "status", "name"),
    [
        ({}, {"to": "+15005550001"}, 422, "create_422"),
        ({}, {"from": "+15005550007"}, 422, "create_422"),
        ({}, {"body": ""}, 422, "create_422"),
        ({"error_rate": 1, "error_codes": ["invalid_parameter"]}, {}, 422, "create_422"),
        ({"server_error_rate": 1, "server_error_status": 500}, {}, 500, "server_error_500"),
    ],
)
def test_signalwire_errors_match_their_schemas(
    sim: SimHandle, configure: dict[str, Any], fields: dict[str, str], status: int, name: str
) -> None:
    """SignalWire's refusals use the errors[] body for 422 and the bare error body for 5xx."""
    sim.configure(**configure)
    response = sim.post_signalwire(**fields)
    assert response.status_code == status and valid("signalwire", name, response.json())


def test_signalwire_bad_credentials_and_unknown_id(sim: SimHandle) -> None:
    """A wrong token is StatusCode401 and an unknown log id StatusCode404."""
    denied = sim._http.get(SW_LOGS, auth=(sim.config.signalwire_project, "wrong"))
    assert denied.status_code == 401 and valid("signalwire", "unauthorized_401", denied.json())
    missing = sim.get(f"{SW_LOGS}/{uuid4()}", "signalwire")
    assert missing.status_code == 404 and valid("signalwire", "not_found_404", missing.json())


def test_signalwire_bad_filter_is_a_422(sim: SimHandle) -> None:
    """A created_before that is not a date is 422 naming the attribute, as the spec's example."""
    response = sim.get(SW_LOGS, "signalwire", created_before="yesterday")
    body = response.json()
    assert response.status_code == 422 and valid("signalwire", "log_list_422", body)
    assert (body["errors"][0]["code"], body["errors"][0]["attribute"]) == (
        "datetime_required",
        "created_before",
    )


@pytest.mark.parametrize(
    ("to", "variables", "final", "code"),
    [
        ("+15551230000", {"message_id": "m-1"}, "delivered", None),
        ("+15005550013", {"message_id": "m-2"}, "failed", "30006"),
        ("+15551230000", {}, "delivered", None),
    ],
)
def test_signalwire_callbacks_match_the_payload_schema(
    sim: SimHandle,
    callback_listener: CallbackListener,
    to: str,
    variables: dict[str, str],
    final: str,
    code: str | None,
) -> None:
    """Every JSON status callback is a flat MessageStatusCallbackPayload, custom_variables only
    when the send had them."""
    sim.post_signalwire(
        to=to, status_callback=callback_listener.url + "/sw", custom_variables=variables
    )
    count = 4 if final == "delivered" else 3
    payloads = [json.loads(r.body) for r in callback_listener.wait_for(count)]
    assert len(payloads) == count
    for payload in payloads:
        assert valid("signalwire", "status_callback", payload)
        assert payload.get("custom_variables") == (variables or None)
    assert (payloads[-1]["status"], payloads[-1]["error_code"]) == (final, code)
    assert (payloads[-1]["error_message"] is None) == (code is None)
    stamps = [p["timestamp"] for p in payloads]
    assert stamps == sorted(stamps)  # each names the time of its own transition
