"""The simulator's pace per sender (`enforce_mps`), its record of sends, Twilio's ValidityPeriod.

The limiter is tested with an injected clock; the HTTP tests assume nothing about timing beyond
"two requests made one after the other arrive within a second".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from signalwire.rest import RestClient
from signalwire.rest._base import SignalWireRestError
from signalwire.rest._request_options import RequestOptions
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from simulator.__main__ import parse_args
from simulator.config import ConfigError, SimConfig
from simulator.pace import (
    PaceLimiter,
    PaceRule,
    Send,
    in_window,
    max_in_window,
    parse_rules,
    retry_after,
    rule_for,
)
from tests.fixtures_sim import SIM_SIGNALWIRE_NUMBER, SIM_TWILIO_NUMBER, SimHandle
from tests.provider_schemas import problems

PROVIDERS = ["twilio", "signalwire"]
SENDER = {"twilio": SIM_TWILIO_NUMBER, "signalwire": SIM_SIGNALWIRE_NUMBER}
TO = "+15551230000"
TWO_SEGMENTS, THREE_SEGMENTS = "a" * 161, "a" * 307  # GSM-7: 160 in one part, 153 per part


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mps", "burst", "expected_burst", "limit"),
    [
        (1, None, 1, 2),
        (0.5, None, 1, 2),  # burst is at least one segment
        (2.5, None, 3, 6),  # default burst max(1, ceil(mps)); limit ceil(mps) + burst
        (10, 4, 4, 14),
    ],
)
def test_rule_defaults_and_limit(
    mps: float, burst: int | None, expected_burst: int, limit: int
) -> None:
    """The burst defaults to max(1, ceil(mps)) and the limit is ceil(mps) + burst."""
    rule = PaceRule.of(mps, burst)
    assert (rule.burst, rule.limit) == (expected_burst, limit)


@pytest.mark.parametrize(("mps", "burst"), [(0, None), (-1, None), (float("nan"), None), (1, 0)])
def test_rule_rejects_out_of_range(mps: float, burst: int | None) -> None:
    """mps must be positive and burst a whole number of segments of at least one."""
    with pytest.raises(ValueError, match=r"mps|burst"):
        PaceRule.of(mps, burst)


def test_parse_rules_takes_json_flags_and_objects() -> None:
    """enforce_mps comes as JSON, a NUMBER=MPS[:BURST] list or a mapping; null drops a number."""
    expected = {"*": PaceRule(10.0, 10), "+15005550006": PaceRule(1.0, 2)}
    assert parse_rules("*=10,+15005550006=1:2") == expected
    assert parse_rules('{"*": 10, "+15005550006": {"mps": 1, "burst": 2}}') == expected
    assert parse_rules({"*": [10, 10], "+15005550006": "1:2", "+15005550010": None}) == expected


@pytest.mark.parametrize(
    "value",
    [
        "+1555",
        "*=fast",
        '{"*": {"rate": 1}}',
        {"*": True},
        {"*": [1, 1.5]},
        [1, 2],
        {"*": 0},
        {"*": {"mps": 1, "burst": 1, "limit": 5}},  # the limit is derived, not set
    ],
)
def test_parse_rules_rejects_malformed(value: Any) -> None:
    """A malformed pace is a ValueError (a 400 at the control endpoint, a usage error at start)."""
    with pytest.raises(ValueError):
        parse_rules(value)


def test_star_rule_covers_other_numbers_and_an_own_rule_wins() -> None:
    """A number's own rule applies before `*`; without either it is not paced."""
    rules = parse_rules("*=10,+15005550006=1")
    assert rule_for(rules, "+15005550006") == PaceRule(1.0, 1)
    assert rule_for(rules, "+15005550010") == PaceRule(10.0, 10)
    assert rule_for(parse_rules("+15005550006=1"), "+15005550010") is None


# -- the limiter, on an injected clock ---------------------------------------------------------


def test_limiter_refuses_over_the_limit_and_forgets_after_a_second() -> None:
    """With mps 1 and burst 1 (limit 2) a third immediate segment is refused; exactly one second
    later the first two have left the trailing window (now - 1, now]."""
    clock = Clock()
    limiter, rule = PaceLimiter(clock), PaceRule.of(1)
    assert [limiter.admit("+1", 1, rule) for _ in range(3)] == [None, None, 1]
    clock.now += 0.5
    assert limiter.admit("+1", 1, rule) == 1
    clock.now += 0.5
    assert limiter.admit("+1", 1, rule) is None
    assert [(s.at, s.segments) for s in limiter.sends("+1")] == [(100, 1), (100, 1), (101, 1)]
    assert limiter.refused["+1"] == 2


def test_limiter_counts_segments_not_requests() -> None:
    """A two-segment send fills a limit of 2 alone; the next one-segment send is refused."""
    clock = Clock()
    limiter, rule = PaceLimiter(clock), PaceRule.of(1)
    assert limiter.admit("+1", 2, rule) is None
    assert limiter.admit("+1", 1, rule) == 1
    clock.now += 1
    assert limiter.admit("+1", 1, rule) is None


def test_a_send_bigger_than_the_limit_never_fits() -> None:
    """More segments than ceil(mps) + burst are refused even on an empty window."""
    limiter = PaceLimiter(Clock())
    assert limiter.admit("+1", 3, PaceRule.of(1)) == 1
    assert limiter.sends("+1") == [] and limiter.refused["+1"] == 1


def test_senders_are_paced_apart_and_unpaced_ones_recorded() -> None:
    """One number's sends do not spend another's pace; a number with no rule is still recorded."""
    limiter, rule = PaceLimiter(Clock()), PaceRule.of(1)
    assert limiter.admit("+1", 2, rule) is None
    assert limiter.admit("+2", 2, rule) is None
    assert [limiter.admit("+3", 5, None) for _ in range(3)] == [None, None, None]
    assert limiter.senders() == ["+1", "+2", "+3"]
    limiter.reset()
    assert limiter.senders() == [] and limiter.sends("+1") == []


def test_retry_after_is_when_enough_segments_leave() -> None:
    """Retry-After is the whole seconds (at least one) until the send would fit."""
    rule = PaceRule.of(4, 1)  # limit 5
    sends = [Send(0.0, 2), Send(0.5, 3)]
    assert retry_after(sends, 0.75, 1, rule) == 1  # the first leaves at 1.0
    assert retry_after(sends, 1.25, 4, rule) == 1  # both must leave: the second at 1.5
    assert retry_after(sends, 0.75, 9, rule) == 1  # never fits: one window


@pytest.mark.parametrize(
    ("sends", "most"),
    [
        ([], 0),
        ([(0.0, 1)], 1),
        ([(0.0, 1), (0.5, 2), (0.75, 1)], 4),
        ([(0.0, 1), (1.0, 1)], 1),  # a window is (t - 1, t]: one second apart never share one
        ([(0.0, 3), (0.5, 1), (1.25, 2)], 4),
        ([(1.25, 2), (0.0, 3), (0.5, 1)], 4),  # order does not matter
    ],
)
def test_max_in_window(sends: list[tuple[float, int]], most: int) -> None:
    """max_in_window is the most segments any one-second window holds."""
    assert max_in_window([Send(at, n) for at, n in sends]) == most


@given(
    st.lists(st.tuples(st.integers(0, 600), st.integers(1, 4)), max_size=60),
    st.sampled_from([0.5, 1, 2, 3.5]),
    st.integers(1, 5),
)
def test_accepted_sends_never_exceed_the_limit(
    attempts: list[tuple[int, int]], mps: float, burst: int
) -> None:
    """Whatever arrives, no one-second window of accepted sends holds more than the limit, and
    a send is refused exactly when it would have put its window over."""
    clock, rule = Clock(0), PaceRule.of(mps, burst)
    limiter = PaceLimiter(clock)
    for gap_ms, segments in attempts:
        clock.now += gap_ms / 1000
        before = in_window(limiter.sends("+1"), clock.now)
        refused = limiter.admit("+1", segments, rule) is not None
        assert refused == (before + segments > rule.limit)
    assert max_in_window(limiter.sends("+1")) <= rule.limit


# -- settings ----------------------------------------------------------------------------------


def test_enforce_mps_from_flags_and_environment() -> None:
    """--enforce-mps and SIM_ENFORCE_MPS set the pace at start, the flag winning."""
    _, config = parse_args([], {"SIM_ENFORCE_MPS": '{"*": 5}'})
    assert config.enforce_mps == {"*": PaceRule(5.0, 5)}
    _, config = parse_args(["--enforce-mps", "+15005550006=2:3"], {"SIM_ENFORCE_MPS": "*=5"})
    assert config.enforce_mps == {"+15005550006": PaceRule(2.0, 3)}
    with pytest.raises(ConfigError):
        SimConfig().update({"enforce_mps": "*=0"})


def test_enforce_mps_at_run_time_shown_and_reset(sim: SimHandle) -> None:
    """POST /_sim/config sets the pace, GET shows it with its limit, reset restores the start."""
    shown = sim.configure(enforce_mps={SIM_TWILIO_NUMBER: 1, "*": {"mps": 2.5}})
    assert shown["enforce_mps"] == {
        SIM_TWILIO_NUMBER: {"mps": 1.0, "burst": 1, "limit": 2},
        "*": {"mps": 2.5, "burst": 3, "limit": 6},
    }
    again = sim.configure(enforce_mps=shown["enforce_mps"])  # what GET shows can be POSTed back
    assert again["enforce_mps"] == shown["enforce_mps"]
    bad = sim._http.post("/_sim/config", json={"enforce_mps": {"*": -1}})
    assert bad.status_code == 400 and "enforce_mps" in bad.json()["error"]
    sim.reset()
    assert sim._http.get("/_sim/config").json()["enforce_mps"] == {}


# -- over HTTP, through the real SDKs ----------------------------------------------------------


@pytest.fixture
def twilio(sim: SimHandle) -> Any:
    """The twilio SDK's Messages resource at the simulator."""
    client = Client(sim.config.twilio_account_sid, sim.config.twilio_auth_token, environment={})
    client.api.base_url = sim.base_url
    return client.api.v2010.accounts(sim.config.twilio_account_sid).messages


@pytest.fixture
def signalwire(sim: SimHandle) -> Iterator[RestClient]:
    """signalwire-sdk's RestClient at the simulator, its retries off (as our provider has them)."""
    yield RestClient(
        project=sim.config.signalwire_project,
        token=sim.config.signalwire_token,
        host=f"127.0.0.1:{sim.port}",
        request_options=RequestOptions(retries=0, timeout=5),
    )


def sdk_send(provider: str, twilio: Any, signalwire: RestClient, body: str = "hi") -> int:
    """Send through the provider's SDK; the HTTP status it got (201, or the refusal's)."""
    try:
        if provider == "twilio":
            twilio.create(to=TO, from_=SENDER[provider], body=body)
        else:
            signalwire.messages.create(to=TO, from_=SENDER[provider], body=body)
    except TwilioRestException as e:
        return int(e.status)
    except SignalWireRestError as e:
        return int(e.status_code or 0)
    return 201


def raw_send(sim: SimHandle, provider: str, body: str = "hi") -> Any:
    if provider == "twilio":
        return sim.post_twilio(Body=body)
    return sim.post_signalwire(body=body)


def refusal_body(provider: str) -> dict[str, Any]:
    """The provider's own 429 body, as its rate-limit fault already answers."""
    if provider == "twilio":
        return {
            "code": 20429,
            "message": "Too Many Requests",
            "more_info": "https://www.twilio.com/docs/errors/20429",
            "status": 429,
        }
    return {
        "errors": [
            {
                "type": "validation_error",
                "code": "rate_limit_exceeded",
                "message": "Too many requests.",
                "attribute": None,
                "url": "https://developer.signalwire.com/rest/overview/error-codes/#rate_limit_exceeded",
            }
        ]
    }


@pytest.mark.parametrize("provider", PROVIDERS)
def test_under_the_pace_is_accepted_over_it_is_429(
    sim: SimHandle, twilio: Any, signalwire: RestClient, provider: str
) -> None:
    """mps 1, burst 1 (limit 2): two immediate sends are accepted, the third gets the
    provider's 429 with Retry-After, through the SDK as through plain HTTP."""
    sim.configure(enforce_mps={SENDER[provider]: {"mps": 1, "burst": 1}})
    assert [sdk_send(provider, twilio, signalwire) for _ in range(3)] == [201, 201, 429]
    refused = raw_send(sim, provider)
    assert (refused.status_code, refused.headers["Retry-After"]) == (429, "1")
    assert refused.json() == refusal_body(provider)
    if provider == "twilio":
        assert problems("twilio", "error", refused.json()) == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_refused_send_creates_no_message(sim: SimHandle, provider: str) -> None:
    """A pace refusal leaves no message behind: not in the record, not in the provider's list."""
    sim.configure(enforce_mps={"*": 1})
    statuses = [raw_send(sim, provider, body=f"n{i}").status_code for i in range(4)]
    assert statuses == [201, 201, 429, 429]
    report = sim.report()
    assert [m["body"] for m in report["messages"]] == ["n0", "n1"]
    assert report["outcomes"] == {"accepted": 2, "pace_limited": 2}
    if provider == "twilio":
        listed = sim.get(sim.twilio_messages_path(), "twilio").json()["messages"]
    else:
        listed = sim.get("/api/messaging/logs", "signalwire").json()["data"]
    assert len(listed) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_window_counts_segments(
    sim: SimHandle, twilio: Any, signalwire: RestClient, provider: str
) -> None:
    """A two-segment body fills a limit of 2, so a one-segment send after it is refused; a
    three-segment body never fits; another number's pace is its own."""
    sim.configure(enforce_mps={SENDER[provider]: 1})
    assert sdk_send(provider, twilio, signalwire, body=TWO_SEGMENTS) == 201
    assert sdk_send(provider, twilio, signalwire) == 429
    other = "twilio" if provider == "signalwire" else "signalwire"
    assert sdk_send(other, twilio, signalwire, body=THREE_SEGMENTS) == 201  # not paced
    sim.reset()
    sim.configure(enforce_mps={SENDER[provider]: 1})
    assert sdk_send(provider, twilio, signalwire, body=THREE_SEGMENTS) == 429


def test_sends_endpoint_lists_accepted_sends_and_refusals(
    sim: SimHandle, twilio: Any, signalwire: RestClient
) -> None:
    """GET /_sim/sends?from= lists each accepted send's monotonic time and segments, the most
    segments in any one-second window, the rule and the pace refusals; without from, every
    number."""
    sim.configure(enforce_mps={SIM_TWILIO_NUMBER: 1})
    assert [sdk_send("twilio", twilio, signalwire, b) for b in ("a", "b", TWO_SEGMENTS)] == [
        201,
        201,
        429,
    ]
    assert sdk_send("signalwire", twilio, signalwire, body=TWO_SEGMENTS) == 201
    report = sim.sends(SIM_TWILIO_NUMBER)
    sends = [Send(s["at"], s["segments"]) for s in report["sends"]]
    assert [s.segments for s in sends] == [1, 1] and sends[0].at <= sends[1].at
    assert report["max_window_segments"] == max_in_window(sends) <= 2
    assert sim.max_window_segments(SIM_TWILIO_NUMBER) == report["max_window_segments"]
    assert (report["from"], report["clock"], report["segments"], report["refused"]) == (
        SIM_TWILIO_NUMBER,
        "monotonic",
        2,
        1,
    )
    assert report["rule"] == {"mps": 1.0, "burst": 1, "limit": 2}
    every = sim.sends()
    assert set(every["senders"]) == {SIM_TWILIO_NUMBER, SIM_SIGNALWIRE_NUMBER}
    signalwire_report = every["senders"][SIM_SIGNALWIRE_NUMBER]
    assert (signalwire_report["segments"], signalwire_report["rule"]) == (2, None)
    assert sim.sends("+15559990000")["sends"] == []
    sim.reset()
    assert sim.sends() == {"clock": "monotonic", "senders": {}}


def test_sends_not_accepted_for_other_reasons_are_not_recorded(sim: SimHandle) -> None:
    """A send refused by a test number or a fault spends no pace and is not in /_sim/sends."""
    sim.configure(enforce_mps={"*": 1})
    assert sim.post_twilio(To="+15005550001").status_code == 400
    sim.configure(server_error_rate=1)
    assert sim.post_twilio().status_code == 503
    sim.configure(server_error_rate=0)
    assert [sim.post_twilio().status_code for _ in range(2)] == [201, 201]
    assert len(sim.sends(SIM_TWILIO_NUMBER)["sends"]) == 2


# -- Twilio ValidityPeriod; SignalWire takes none ----------------------------------------------


@pytest.mark.parametrize("seconds", [1, 600, 36000])
def test_twilio_validity_period_is_recorded(sim: SimHandle, twilio: Any, seconds: int) -> None:
    """ValidityPeriod (1-36000 s) is accepted and kept in the simulator's record, not the body."""
    message = twilio.create(to=TO, from_=SIM_TWILIO_NUMBER, body="otp", validity_period=seconds)
    [row] = sim.messages()
    assert (row["sid"], row["validity_period"]) == (message.sid, seconds)
    fetched = sim.get(
        f"{sim.twilio_messages_path().removesuffix('.json')}/{message.sid}.json", "twilio"
    ).json()
    assert "validity_period" not in fetched and problems("twilio", "message", fetched) == []


def test_twilio_without_validity_period_records_none(sim: SimHandle, twilio: Any) -> None:
    """A send without ValidityPeriod is recorded with validity_period null."""
    twilio.create(to=TO, from_=SIM_TWILIO_NUMBER, body="hi")
    assert [r["validity_period"] for r in sim.messages()] == [None]


@pytest.mark.parametrize("seconds", [0, 36001, -5])
def test_twilio_validity_period_out_of_range_through_the_sdk(
    sim: SimHandle, twilio: Any, seconds: int
) -> None:
    """Out of range, the SDK gets 400 with Twilio's 21624 and no message is created."""
    with pytest.raises(TwilioRestException) as caught:
        twilio.create(to=TO, from_=SIM_TWILIO_NUMBER, body="hi", validity_period=seconds)
    assert (caught.value.status, caught.value.code) == (400, 21624)
    assert sim.messages() == []


@pytest.mark.parametrize("raw", ["abc", "1.5", "", "60s", "1_0"])
def test_twilio_validity_period_not_an_integer(sim: SimHandle, raw: str) -> None:
    """A ValidityPeriod that is not a whole number is Twilio's 400 error body with 21624."""
    response = sim.post_twilio(ValidityPeriod=raw)
    body = response.json()
    assert (response.status_code, body["code"], body["status"]) == (400, 21624, 400)
    assert body["more_info"] == "https://www.twilio.com/docs/errors/21624"
    assert problems("twilio", "error", body) == [] and sim.messages() == []


def test_signalwire_refuses_unknown_properties(sim: SimHandle, signalwire: RestClient) -> None:
    """Message.CreateMessageRequest allows no other properties: a validity field (or any other)
    is a 422 errors[] naming each, and no message is created."""
    with pytest.raises(SignalWireRestError) as caught:
        signalwire.messages.create(
            to=TO,
            from_=SIM_SIGNALWIRE_NUMBER,
            body="hi",
            extras={"validity_period": 60, "ttl": 5},
        )
    assert caught.value.status_code == 422
    body = caught.value.body
    assert problems("signalwire", "create_422", body) == []
    assert [(e["code"], e["attribute"]) for e in body["errors"]] == [
        ("invalid_parameter", "ttl"),
        ("invalid_parameter", "validity_period"),
    ]
    assert sim.messages() == []


def test_signalwire_sdk_requests_with_every_declared_property_pass(
    sim: SimHandle, signalwire: RestClient
) -> None:
    """The SDK's own requests, with every property the SMS schema declares, are still accepted."""
    created = signalwire.messages.create(
        to=TO,
        from_=SIM_SIGNALWIRE_NUMBER,
        body="hi",
        media=[],
        send_as_mms=False,
        status_callback="http://127.0.0.1:9/cb",
        custom_variables={"message_id": "m-1"},
    )
    assert created["status"] == "queued" and len(sim.messages()) == 1
