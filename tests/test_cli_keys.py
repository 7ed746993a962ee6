"""smsctl api-keys: --operator, limits (defaults from API_KEY_DEFAULT_*), set-limits, list."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from shared import apikeys
from tooling.cli import main

DEFAULTS = (
    "API_KEY_DEFAULT_RATE_PER_MINUTE",
    "API_KEY_DEFAULT_DAILY_MESSAGE_LIMIT",
    "API_KEY_DEFAULT_RECIPIENT_HOURLY_LIMIT",
    "ALLOWED_COUNTRIES",
)
# The key's row: by id, or the newest key when id is NULL.
ROW = (
    "SELECT role, rate_per_minute, daily_message_limit, recipient_hourly_limit, allowed_countries"
    " FROM sms_api_keys WHERE %(id)s::bigint IS NULL OR id = %(id)s ORDER BY id DESC LIMIT 1"
)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    for name in DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", db_url)


def _row(db: psycopg.Connection[Any], key_id: int | None = None) -> tuple[Any, ...]:
    row = db.execute(ROW, {"id": key_id}).fetchone()
    assert row is not None
    return tuple(row)


def test_create_operator_with_limits_and_countries(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """`create NAME --operator --rate-per-minute --daily-limit --recipient-hourly-limit
    --countries` stores them all; stdout is still the key alone."""
    argv = ["api-keys", "create", "ops", "--operator", "--rate-per-minute", "60"]
    argv += ["--daily-limit", "1000", "--recipient-hourly-limit", "5", "--countries", "us, ca"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert apikeys.key_is_active(db, out.strip()) and out.count("\n") == 1
    assert _row(db) == ("operator", 60, 1000, 5, ["CA", "US"])
    assert "operator" in err and "shown only this once" in err


def test_create_takes_the_default_limits_unless_told(
    monkeypatch: pytest.MonkeyPatch, db: psycopg.Connection[Any]
) -> None:
    """API_KEY_DEFAULT_* fill the limits not given; `none` overrides a default; a sender key
    is the default role."""
    monkeypatch.setenv("API_KEY_DEFAULT_RATE_PER_MINUTE", "120")
    monkeypatch.setenv("API_KEY_DEFAULT_DAILY_MESSAGE_LIMIT", "5000")
    monkeypatch.setenv("API_KEY_DEFAULT_RECIPIENT_HOURLY_LIMIT", "")
    assert main(["api-keys", "create", "app"]) == 0
    assert _row(db) == ("sender", 120, 5000, None, None)
    assert main(["api-keys", "create", "batchy", "--daily-limit", "none"]) == 0
    assert _row(db) == ("sender", 120, None, None, None)


def test_create_without_defaults_has_no_limits(db: psycopg.Connection[Any]) -> None:
    """No API_KEY_DEFAULT_*: a new key has no limits."""
    assert main(["api-keys", "create", "free"]) == 0
    assert _row(db) == ("sender", None, None, None, None)


@pytest.mark.parametrize(
    "extra",
    [
        ["--rate-per-minute", "0"],
        ["--daily-limit", "-5"],
        ["--recipient-hourly-limit", "lots"],
        ["--countries", "XX"],
        ["--countries", ","],
    ],
)
def test_bad_limits_are_usage_errors(
    extra: list[str], capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """A malformed limit or region exits 2 and creates nothing."""
    assert main(["api-keys", "create", "x", *extra]) == 2
    assert db.execute("SELECT count(*) FROM sms_api_keys").fetchone() == (0,)
    assert capsys.readouterr().out == ""


def test_set_limits_changes_only_what_it_names(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """set-limits changes the options given, `none` removes a limit, the rest stay."""
    limits = apikeys.KeyLimits(rate_per_minute=60, daily_message_limit=1000)
    key_id, _ = apikeys.create_key_sync(db, "app", limits=limits)
    assert main(["api-keys", "set-limits", str(key_id), "--rate-per-minute", "none"]) == 0
    assert _row(db, key_id) == ("sender", None, 1000, None, None)
    argv = ["api-keys", "set-limits", str(key_id), "--recipient-hourly-limit", "3"]
    assert main([*argv, "--countries", "US"]) == 0
    assert _row(db, key_id) == ("sender", None, 1000, 3, ["US"])
    assert main(["api-keys", "set-limits", str(key_id), "--countries", "none"]) == 0
    assert _row(db, key_id) == ("sender", None, 1000, 3, None)
    assert "now: sender" in capsys.readouterr().err


def test_set_limits_refusals(db: psycopg.Connection[Any]) -> None:
    """No option is a usage error (2); an unknown or revoked key is refused (1)."""
    key_id, _ = apikeys.create_key_sync(db, "app")
    assert main(["api-keys", "set-limits", str(key_id)]) == 2
    assert main(["api-keys", "set-limits", "999999", "--daily-limit", "5"]) == 1
    db.execute("UPDATE sms_api_keys SET revoked_at = now()")
    assert main(["api-keys", "set-limits", str(key_id), "--daily-limit", "5"]) == 1


def test_countries_outside_allowed_countries_are_noted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key's region outside ALLOWED_COUNTRIES is stored, with a note that it cannot apply."""
    monkeypatch.setenv("ALLOWED_COUNTRIES", "US")
    assert main(["api-keys", "create", "x", "--countries", "US,GB"]) == 0
    assert "GB not in ALLOWED_COUNTRIES" in capsys.readouterr().err


def test_list_shows_role_and_limits(
    capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]
) -> None:
    """`api-keys list` (text and --json) shows each key's role, limits and countries."""
    limits = apikeys.KeyLimits(rate_per_minute=60, recipient_hourly_limit=5)
    apikeys.create_key_sync(db, "app", limits=limits, countries=frozenset({"US"}))
    apikeys.create_key_sync(db, "ops", role="operator")
    assert main(["api-keys", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t")[:7] == [
        "id", "name", "role", "rate_per_minute", "daily_message_limit",
        "recipient_hourly_limit", "countries",
    ]  # fmt: skip
    assert lines[1].split("\t")[1:7] == ["app", "sender", "60", "-", "5", "US"]
    assert lines[2].split("\t")[1:7] == ["ops", "operator", "-", "-", "-", "-"]
    assert main(["api-keys", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["countries"] == ["US"] and listed[1]["role"] == "operator"
    assert listed[0]["rate_per_minute"] == 60 and listed[1]["daily_message_limit"] is None


def test_prune_drops_spent_quota_windows(db: psycopg.Connection[Any]) -> None:
    """`smsctl prune` deletes sms_api_key_usage windows two days old, whatever --older-than."""
    key_id, _ = apikeys.create_key_sync(db, "app")
    db.execute(
        "INSERT INTO sms_api_key_usage (api_key_id, kind, window_start, used) VALUES"
        " (%(id)s, 'day', date_trunc('day', now(), 'UTC') - interval '3 days', 5),"
        " (%(id)s, 'minute', date_trunc('minute', now(), 'UTC') - interval '3 days', 5),"
        " (%(id)s, 'day', date_trunc('day', now(), 'UTC'), 7),"
        " (%(id)s, 'minute', date_trunc('minute', now(), 'UTC'), 1)",
        {"id": key_id},
    )
    assert main(["prune", "--older-than", "90d"]) == 0
    kept = db.execute("SELECT kind, used FROM sms_api_key_usage ORDER BY kind").fetchall()
    assert kept == [("day", 7), ("minute", 1)]


def test_revoking_a_key_disables_its_webhook_endpoints(db: psycopg.Connection[Any]) -> None:
    """`smsctl api-keys revoke` also disables the key's endpoints and drops their pending
    deliveries: a revoked key's events go nowhere; another key's endpoint is untouched."""
    gone, _ = apikeys.create_key_sync(db, "gone")
    kept, _ = apikeys.create_key_sync(db, "kept")
    secret = "whsec_" + "A" * 32
    for key in (gone, kept):
        db.execute(
            "INSERT INTO sms_webhook_endpoints (api_key_id, url, secret)"
            " VALUES (%s, 'https://hooks.example.test/in', %s)",
            (key, secret),
        )
    assert main(["api-keys", "revoke", str(gone)]) == 0
    rows = db.execute(
        "SELECT api_key_id, enabled, disabled_reason FROM sms_webhook_endpoints ORDER BY api_key_id"
    ).fetchall()
    assert rows == [(gone, False, "API key revoked"), (kept, True, None)]
