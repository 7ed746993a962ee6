"""mask_number: the calling-code table agrees with phonenumbers on every plain E.164 input."""

from __future__ import annotations

import phonenumbers
from hypothesis import given
from hypothesis import strategies as st

from shared.logs import mask_number


def _by_parse(number: str) -> str:
    if not number.startswith("+") or len(number) < 8:
        return "***"
    try:
        cc = str(phonenumbers.parse(number).country_code)
    except phonenumbers.NumberParseException:
        return "***"
    digits = number[1:]
    return "+" + cc + "*" * max(len(digits) - len(cc) - 4, 0) + digits[-4:]


@given(st.text(alphabet="0123456789", min_size=5, max_size=18))
def test_table_matches_phonenumbers(digits: str) -> None:
    """The fast calling-code table masks exactly as phonenumbers.parse would."""
    number = "+" + digits
    assert mask_number(number) == _by_parse(number)


def test_examples() -> None:
    """Country code and last four digits stay; punctuated input still goes through phonenumbers."""
    assert mask_number("+14155550123") == "+1******0123"
    assert mask_number("+447911123456") == "+44******3456"
    assert mask_number("+2125551234567") == "+212******4567"
    assert mask_number("+1 415 555 0123") == _by_parse("+1 415 555 0123")
    assert mask_number("+9991234567") == "***"  # no such calling code
    assert mask_number("12345678") == "***"
    assert mask_number(None) is None
