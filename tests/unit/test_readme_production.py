"""The README's production examples are true of the code: the alert webhook's body is what the
dispatcher sends byte for byte, and its signature check accepts what the dispatcher signs."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dispatcher.alert_webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, encode, sign

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def section(title: str) -> str:
    """The text of one `### title` section."""
    start = README.index(f"\n### {title}\n")
    end = README.index("\n### ", start + 1)
    return README[start:end]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def readme_verifier() -> Callable[[bytes, dict[str, str], str], bool]:
    namespace: dict[str, Any] = {}
    (source,) = code_blocks(section("Alert webhook"), "python")
    exec(compile(source, "README.md", "exec"), namespace)  # noqa: S102 - our README's own example
    verifier: Callable[[bytes, dict[str, str], str], bool] = namespace["alert_is_genuine"]
    return verifier


def test_alert_example_body_is_what_the_dispatcher_sends() -> None:
    """The example body is compact key-sorted JSON: encoding its data gives the same bytes."""
    (example,) = code_blocks(section("Alert webhook"), "json")
    raw = example.strip().encode()
    assert encode(json.loads(raw)) == raw


def test_readme_check_accepts_the_dispatchers_signature() -> None:
    """What post_alert signs passes the README's receiver check."""
    raw = encode({"kind": "message_failed", "alert_id": 1})
    now = int(time.time())
    headers = {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign(raw, now, "s3cret")}
    assert readme_verifier()(raw, headers, "s3cret")


def test_readme_check_refuses_another_secret_a_changed_body_or_an_old_timestamp() -> None:
    """A wrong secret, one changed byte, or a timestamp 10 minutes old fails the check."""
    check = readme_verifier()
    raw = encode({"kind": "message_failed", "alert_id": 1})
    now = int(time.time())
    headers = {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign(raw, now, "s3cret")}
    assert not check(raw, headers, "other")
    assert not check(raw.replace(b"1", b"2"), headers, "s3cret")
    old = now - 600
    stale = {TIMESTAMP_HEADER: str(old), SIGNATURE_HEADER: sign(raw, old, "s3cret")}
    assert not check(raw, stale, "s3cret")
