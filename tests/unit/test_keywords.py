"""shared.keywords: which inbound bodies are opt-out / opt-in keywords (a plain table)."""

from __future__ import annotations

import pytest

from shared.keywords import Keyword, classify


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("STOP", Keyword.STOP),
        ("stop", Keyword.STOP),
        ("  Stop \n", Keyword.STOP),
        ("UNSUBSCRIBE", Keyword.STOP),
        ("cancel", Keyword.STOP),
        ("End", Keyword.STOP),
        ("QUIT", Keyword.STOP),
        ("optout", Keyword.STOP),
        ("Revoke", Keyword.STOP),
        ("STOPALL", Keyword.STOPALL),
        ("stopall\t", Keyword.STOPALL),
        ("START", Keyword.START),
        ("unstop", Keyword.START),
        ("Yes", Keyword.START),
    ],
)
def test_keywords_in_any_case_trimmed(body: str, expected: Keyword) -> None:
    """Each word, alone, in any case and with blanks around it, is its keyword."""
    assert classify(body) is expected


@pytest.mark.parametrize(
    "body",
    ["", "   ", "stop please", "please stop", "STOP STOP", "STOP.", "opt out", "yes!", "Thanks"],
)
def test_anything_else_is_a_reply(body: str) -> None:
    """A body that is not exactly one keyword is a reply, even if it contains one."""
    assert classify(body) is None
