"""Segment counting and encoding choice (GSM-7 160/153, UCS-2 70/67, extension characters 2)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.segments import GSM7, GSM7_BASIC, GSM7_EXTENSION, PER_PART, SINGLE, UCS2, count_segments

EURO = "€"
EMOJI = "😀"


@pytest.mark.parametrize(
    ("body", "parts", "encoding"),
    [
        ("a", 1, GSM7),
        ("a" * 160, 1, GSM7),
        ("a" * 161, 2, GSM7),
        ("a" * 306, 2, GSM7),
        ("a" * 307, 3, GSM7),
        ("a" * 1530, 10, GSM7),
        ("a" * 1531, 11, GSM7),
        ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà\n\r", 1, GSM7),
        (EURO * 80, 1, GSM7),  # 160 septets
        (EURO * 81, 2, GSM7),  # 162 septets
        ("a" * 159 + EURO, 2, GSM7),  # 161 septets
        ("a" * 158 + EURO, 1, GSM7),  # 160 septets
        # An escape sequence is never split: the euro moves to part 2 and pushes one 'a' to part 3.
        ("a" * 152 + EURO + "a" * 152, 3, GSM7),
        ("ж" * 70, 1, UCS2),
        ("ж" * 71, 2, UCS2),
        ("ж" * 134, 2, UCS2),
        ("ж" * 135, 3, UCS2),
        ("a" * 69 + "ç", 1, UCS2),  # ç (lowercase) is not in GSM 03.38: the whole body goes UCS-2
        ("a" * 70 + "ç", 2, UCS2),
        ("tab\there", 1, UCS2),  # tab is not a GSM character
        (EMOJI * 35, 1, UCS2),  # 70 UTF-16 code units
        (EMOJI * 36, 2, UCS2),  # 72 units: 33 emoji (66 units) per part, pairs never split
        (EMOJI * 66, 2, UCS2),
        (EMOJI * 67, 3, UCS2),
        ("a" * 66 + EMOJI + "a" * 66, 3, UCS2),  # the pair moves to part 2, one 'a' to part 3
    ],
)
def test_count_segments_table(body: str, parts: int, encoding: str) -> None:
    """Known bodies need the known number of parts in the known encoding."""
    assert count_segments(body) == (parts, encoding)


@pytest.mark.parametrize("char", sorted(GSM7_EXTENSION))
def test_each_extension_character_counts_two(char: str) -> None:
    """Every GSM extension character (^{}\\[~]|€ and form feed) costs two septets."""
    assert count_segments(char * 80) == (1, GSM7)
    assert count_segments(char * 81) == (2, GSM7)


@pytest.mark.parametrize("char", sorted(GSM7_BASIC))
def test_each_basic_character_counts_one(char: str) -> None:
    """Every GSM basic character costs one septet and keeps GSM-7."""
    assert count_segments(char * 160) == (1, GSM7)
    assert count_segments(char * 161) == (2, GSM7)


_plain_gsm = st.text(alphabet=sorted(GSM7_BASIC), min_size=1, max_size=1600)


@given(_plain_gsm)
def test_plain_gsm_parts_follow_the_arithmetic(body: str) -> None:
    """Without escapes, parts are 1 up to 160 septets and ceil(n / 153) beyond."""
    expected = 1 if len(body) <= 160 else math.ceil(len(body) / 153)
    assert count_segments(body) == (expected, GSM7)


def _units(body: str, encoding: str) -> int:
    if encoding == GSM7:
        return sum(2 if c in GSM7_EXTENSION else 1 for c in body)
    return len(body.encode("utf-16-le")) // 2


@given(st.text(min_size=1, max_size=400))
def test_parts_hold_the_body_and_waste_at_most_one_unit_each(body: str) -> None:
    """Any body: GSM-7 iff every character is GSM; the parts hold all its units, and each part
    but the last is at most one unit short of full (an unsplittable pair moved on)."""
    parts, encoding = count_segments(body)
    assert (encoding == GSM7) == all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in body)
    units = _units(body, encoding)
    if units <= SINGLE[encoding]:
        assert parts == 1
    else:
        room = PER_PART[encoding]
        assert math.ceil(units / room) <= parts <= math.ceil(units / (room - 1))


@given(st.text(min_size=1, max_size=300), st.characters())
def test_appending_never_needs_fewer_parts(body: str, extra: str) -> None:
    """Adding a character in the same encoding never lowers the part count."""
    before, encoding = count_segments(body)
    after, encoding_after = count_segments(body + extra)
    if encoding_after == encoding:
        assert after >= before


def test_longest_allowed_body_needs_49_parts() -> None:
    """1,600 astral characters need 49 UCS-2 parts (a surrogate pair never splits across parts)."""
    assert count_segments("\U0001f600" * 1600) == (49, UCS2)
