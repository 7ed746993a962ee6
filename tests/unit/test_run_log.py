"""The run-wide log watch of tests/conftest.py catches what it is there to catch."""

from __future__ import annotations

import json

from tests.conftest import leaked_lines


def test_masked_number_passes_and_unmasked_number_is_caught() -> None:
    """A masked recipient is fine; a full E.164 number anywhere in a line is a leak."""
    masked = json.dumps({"message": "submitted", "to": "+1******2671"})
    unmasked = json.dumps({"message": "submitted", "to": "+14155552671"})
    assert leaked_lines(masked) == []
    assert leaked_lines(unmasked) == [unmasked]


def test_body_field_is_caught() -> None:
    """A log line with a body field is a leak, whatever it says."""
    line = json.dumps({"message": "created", "body": "hi"})
    assert leaked_lines(line) == [line]
