"""Request validation, pure: each field check, the request walks, the verdict on references."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.config import Settings
from shared.validation import (
    MAX_BATCH,
    MAX_BODY_CHARS,
    MAX_IDEMPOTENCY_KEY,
    MAX_NUMBER_INPUT,
    Problem,
    SendInput,
    check_body,
    check_idempotency_key,
    check_recipient,
    judge_references,
    normalize_body,
    number_facts,
    parse_batch,
    parse_send,
    prefixed,
    to_e164,
)

SETTINGS = Settings()
TO = "+14155552671"
SENDER = "+15005550006"
CONVERSATION = uuid.UUID("6d3f1c8e-2b1a-4c55-9a57-2f6f3f0c9e11")
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def codes(problems: list[Problem]) -> set[tuple[str, str]]:
    return {(p.field, p.code) for p in problems}


@dataclass(frozen=True)
class FakeSender:
    phone_number: str
    enabled: bool = True


@pytest.mark.parametrize(
    ("raw", "e164", "expected"),
    [
        ("(415) 555-2671", TO, set()),  # national format in the default region
        (TO, TO, set()),
        ("+18005550199", "+18005550199", set()),  # NANP toll-free may be text-enabled
        (SENDER, SENDER, set()),  # NANP personal number (Twilio's test numbers)
        ("+447911123456", "+447911123456", set()),  # mobile abroad
        ("+442079460000", "+442079460000", {("to", "number_type_not_allowed")}),  # fixed line
        ("+19005550100", "+19005550100", {("to", "number_type_not_allowed")}),  # premium rate
        ("+1415555267", "+1415555267", {("to", "invalid_number")}),  # parses, not valid
        ("hello", "", {("to", "invalid_number")}),
        ("1" * (MAX_NUMBER_INPUT + 1), "", {("to", "invalid_number")}),  # never parsed
    ],
)
def test_check_recipient(raw: str, e164: str, expected: set[tuple[str, str]]) -> None:
    """A recipient is E.164-normalized and refused when invalid or of a type that cannot text."""
    got, problems = check_recipient(raw, SETTINGS)
    assert (got, codes(problems)) == (e164, expected)


def test_check_recipient_allowed_countries() -> None:
    """With ALLOWED_COUNTRIES set, a number of another country is refused, naming the field."""
    only_gb = dataclasses.replace(SETTINGS, allowed_countries=frozenset({"GB"}))
    _, problems = check_recipient(TO, only_gb, field="--to")
    assert codes(problems) == {("--to", "country_not_allowed")}
    assert "(GB)" in problems[0].message


def test_a_recipient_seen_before_is_judged_without_parsing_it_again() -> None:
    """The same recipient text is parsed once (number_facts' cache), also when another key's
    countries judge it, and judged the same each time."""
    number_facts.cache_clear()
    first = check_recipient(TO, SETTINGS)
    only_gb = check_recipient(TO, SETTINGS, countries=frozenset({"GB"}))
    again = check_recipient(TO, SETTINGS)
    info = number_facts.cache_info()
    assert (info.misses, info.hits) == (1, 2)
    assert first == again == (TO, [])
    assert codes(only_gb[1]) == {("to", "country_not_allowed")}


def test_to_e164_does_not_judge_validity() -> None:
    """to_e164 only parses: a short but parseable number comes back, garbage is None."""
    assert to_e164("(415) 555-2671", "US") == TO
    assert to_e164("+1415555267", "US") == "+1415555267"
    assert to_e164("not a number", "US") is None


def test_normalize_body_turns_crlf_into_newlines_only() -> None:
    """CRLF becomes LF; a lone CR and everything else stay as they are."""
    assert normalize_body("a\r\nb\rc\n") == "a\nb\rc\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Hello", set()),
        ("line\nnext\ttab", set()),
        ("x" * MAX_BODY_CHARS, set()),
        ("", {"empty"}),
        (" \n\t", {"empty"}),
        ("x" * (MAX_BODY_CHARS + 1), {"too_long"}),
        ("bell\x07", {"control_characters"}),
        ("bad \ud800 half", {"invalid_characters"}),
        ("\x00" + "x" * MAX_BODY_CHARS, {"too_long", "control_characters"}),
    ],
)
def test_check_body(body: str, expected: set[str]) -> None:
    """A body needs text, at most 1,600 characters, no controls but newline and tab, and no
    unpaired surrogates; every problem is reported at once."""
    assert {p.code for p in check_body(body)} == expected


def test_check_body_names_the_first_control_character() -> None:
    """The control-character problem says which character and where."""
    (problem,) = check_body("ok\x1bthen\x07")
    assert "U+001B at position 2" in problem.message


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        (None, True),
        ("k", True),
        ("a" * MAX_IDEMPOTENCY_KEY, True),
        ("", False),
        ("a" * (MAX_IDEMPOTENCY_KEY + 1), False),
        ("caf\u00e9", False),
        ("tab\there", False),
    ],
)
def test_check_idempotency_key(key: str | None, valid: bool) -> None:
    """An Idempotency-Key is 1-255 printable ASCII characters; no header is no problem."""
    problems = check_idempotency_key(key)
    assert codes(problems) == (set() if valid else {("Idempotency-Key", "invalid_idempotency_key")})


def test_parse_send_valid_request() -> None:
    """A valid request comes out normalized: E.164 numbers, LF line ends, a UUID."""
    payload = {
        "to": "(415) 555-2671",
        "body": "Hi\r\nthere",
        "from": "500-555-0006",
        "conversation_id": str(CONVERSATION),
    }
    given, problems = parse_send(payload, SETTINGS, now=NOW)
    assert problems == []
    assert given == SendInput(TO, "Hi\nthere", SENDER, CONVERSATION, from_named=True)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({}, {("to", "required"), ("body", "required")}),
        ({"to": None, "body": None}, {("to", "required"), ("body", "required")}),
        ({"to": 1, "body": ["x"]}, {("to", "invalid_type"), ("body", "invalid_type")}),
        (
            {"to": TO, "body": "x", "extra": 1},
            {("extra", "unknown_field")},
        ),
        ({"to": "nope", "body": ""}, {("to", "invalid_number"), ("body", "empty")}),
        ({"to": TO, "body": "x", "from": "nope"}, {("from", "invalid_number")}),
        ({"to": TO, "body": "x", "from": 5}, {("from", "invalid_type")}),
        ({"to": TO, "body": "x", "conversation_id": "nope"}, {("conversation_id", "invalid_uuid")}),
        ({"to": TO, "body": "x", "conversation_id": 7}, {("conversation_id", "invalid_type")}),
    ],
)
def test_parse_send_problems(payload: dict[str, Any], expected: set[tuple[str, str]]) -> None:
    """Every problem of the request is found in one walk, each naming its field."""
    _, problems = parse_send(payload, SETTINGS, now=NOW)
    assert codes(problems) == expected


def test_parse_send_unusable_fields_are_none() -> None:
    """A field with a problem is None in the result; an unusable `from` still counts as named."""
    given, _ = parse_send({"to": "nope", "body": "\x07", "from": "nope"}, SETTINGS, now=NOW)
    assert given == SendInput(None, None, None, None, from_named=True)
    given, _ = parse_send({"to": TO, "body": "x", "from": None}, SETTINGS, now=NOW)
    assert given.from_named is False


def test_prefixed_names_the_batch_item() -> None:
    """An item's problems are renamed messages[i].field."""
    assert prefixed(3, [Problem("to", "required", "m")]) == [
        Problem("messages[3].to", "required", "m")
    ]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({}, {("messages", "required")}),
        ({"messages": {}}, {("messages", "invalid_type")}),
        ({"messages": []}, {("messages", "empty")}),
        ({"messages": [{"to": TO, "body": "x"}] * (MAX_BATCH + 1)}, {("messages", "too_many")}),
        ({"messages": [{"to": TO, "body": "x"}], "x": 1}, {("x", "unknown_field")}),
        (
            {"messages": [{"to": TO, "body": "x"}, 5, {"body": "x"}]},
            {("messages[1]", "invalid_type"), ("messages[2].to", "required")},
        ),
    ],
)
def test_parse_batch_problems(payload: dict[str, Any], expected: set[tuple[str, str]]) -> None:
    """The envelope's problems stop the walk; the items' problems name their index."""
    _, problems = parse_batch(payload, SETTINGS, now=NOW)
    assert codes(problems) == expected


def test_parse_batch_keeps_item_order() -> None:
    """One SendInput per item, in order; a non-object item is an empty placeholder."""
    payload = {"messages": [{"to": TO, "body": "a"}, "x", {"to": TO, "body": "b", "from": "x"}]}
    parsed, _ = parse_batch(payload, SETTINGS, now=NOW)
    assert [g.body for g in parsed] == ["a", None, "b"]
    assert [g.from_named for g in parsed] == [False, False, True]


DEFAULT = FakeSender(SENDER)
OTHER = FakeSender("+15005550010")


def given(
    from_number: str | None = None, conversation: uuid.UUID | None = None, named: bool = False
) -> SendInput:
    return SendInput(TO, "x", from_number, conversation, from_named=named or bool(from_number))


@pytest.mark.parametrize(
    ("request_", "named", "default", "pair", "sender", "expected"),
    [
        # No `from`: the default sender, or no_default_sender.
        (given(), None, DEFAULT, None, DEFAULT, set()),
        (given(), None, None, None, None, {("from", "no_default_sender")}),
        # An unusable `from` (its problem is parse_send's): no sender, no default, no more problems.
        (given(named=True), None, DEFAULT, None, None, set()),
        # A named sender: found and enabled, unknown, or disabled.
        (given(OTHER.phone_number), OTHER, DEFAULT, None, OTHER, set()),
        (given(OTHER.phone_number), None, DEFAULT, None, None, {("from", "unknown_sender")}),
        (
            given(OTHER.phone_number),
            FakeSender(OTHER.phone_number, enabled=False),
            DEFAULT,
            None,
            None,
            {("from", "sender_disabled")},
        ),
        # A named conversation: unknown, of this pair, of another pair.
        (
            given(conversation=CONVERSATION),
            None,
            DEFAULT,
            None,
            DEFAULT,
            {("conversation_id", "unknown_conversation")},
        ),
        (given(conversation=CONVERSATION), None, DEFAULT, (SENDER, TO), DEFAULT, set()),
        (
            given(conversation=CONVERSATION),
            None,
            DEFAULT,
            (OTHER.phone_number, TO),
            DEFAULT,
            {("conversation_id", "conversation_mismatch")},
        ),
        # Without a sender the pair cannot be compared: only the sender's problem.
        (
            given(OTHER.phone_number, CONVERSATION),
            None,
            DEFAULT,
            (OTHER.phone_number, "+14155550000"),
            None,
            {("from", "unknown_sender")},
        ),
    ],
)
def test_judge_references(
    request_: SendInput,
    named: FakeSender | None,
    default: FakeSender | None,
    pair: tuple[str, str] | None,
    sender: FakeSender | None,
    expected: set[tuple[str, str]],
) -> None:
    """The sender chosen and the problems, for every combination the database can answer."""
    chosen, problems = judge_references(request_, named, default, pair)
    assert (chosen, codes(problems)) == (sender, expected)
