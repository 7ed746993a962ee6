"""The simulator's segment count: GSM-7 160/153 septets, UCS-2 70/67 units, as Twilio documents."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.segments import count_segments
from simulator import segments
from tests.fixtures_sim import SimHandle

EURO, EMOJI = "€", "😀"


@pytest.mark.parametrize(
    ("body", "parts"),
    [
        ("a", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("é" * 160, 1),  # é is in the GSM-7 basic table: no switch to UCS-2
        ("é" * 161, 2),
        ("{" * 80, 1),  # escape-table characters cost two septets
        ("{" * 81, 2),
        ("a" * 159 + EURO, 2),
        ("a" * 158 + EURO, 1),
        ("a" * 152 + EURO + "a" * 152, 3),  # an escape pair never straddles two parts
        ("ç" * 70, 1),  # lowercase ç is not GSM-7: the whole body goes UCS-2
        ("ç" + "a" * 70, 2),
        ("ж" * 134, 2),
        ("ж" * 135, 3),
        (EMOJI * 35, 1),  # astral characters are two UTF-16 units
        (EMOJI * 36, 2),
        ("a" * 66 + EMOJI + "a" * 66, 3),  # a surrogate pair never straddles two parts
    ],
)
def test_count_table(body: str, parts: int) -> None:
    """Known bodies are billed as the known number of parts."""
    assert segments.count(body) == parts


@pytest.mark.parametrize("char", sorted(segments.GSM7_EXTENSION))
def test_every_escape_character_costs_two_septets(char: str) -> None:
    """Each of ^ { } \\ [ ~ ] | € and form feed takes two septets and keeps the body GSM-7."""
    assert segments.is_gsm7(char)
    assert (segments.count(char * 80), segments.count(char * 81)) == (1, 2)


_ALPHABET = st.sampled_from(
    [*sorted(segments.GSM7_BASIC | segments.GSM7_EXTENSION), "ç", "ж", EMOJI, "\t", "中"]
)


@given(st.text(alphabet=_ALPHABET, max_size=400))
def test_count_agrees_with_our_own_counter(body: str) -> None:
    """The simulator and shared.segments, written apart, count every body alike."""
    assert segments.count(body) == count_segments(body)[0]


@pytest.mark.parametrize(
    ("body", "twilio", "signalwire"),
    [("{" * 81, "2", 2), ("é" * 160, "1", 1), (EMOJI * 36, "2", 2)],
)
def test_both_apis_report_the_count(
    sim: SimHandle, body: str, twilio: str, signalwire: int
) -> None:
    """Twilio's num_segments (a string) and SignalWire's number_of_segments use the count."""
    assert sim.post_twilio(Body=body).json()["num_segments"] == twilio
    assert sim.post_signalwire(body=body).json()["number_of_segments"] == signalwire
