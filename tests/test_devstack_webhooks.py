"""`make run`'s webhook sink: the dev key's endpoint at the simulator, its secret handed over."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from shared import apikeys
from tooling import devstack

SINK = "http://127.0.0.1:8010/_sim/webhooks/dev"


def test_the_dev_endpoint_is_made_once_and_given_a_new_secret_each_run(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    """The first run registers the sink for the dev key (every event); the next one keeps that
    endpoint, enables it if it was disabled, and rotates its secret (the old one still signs)."""
    key_id, key = apikeys.create_key_sync(db, "dev (make run)")
    first = devstack.ensure_dev_webhook(db_url, key, SINK)
    row = db.execute(
        "SELECT id, api_key_id, url, events, secret FROM sms_webhook_endpoints"
    ).fetchone()
    assert row is not None and row[1:] == (key_id, SINK, [], first)
    db.execute(
        "UPDATE sms_webhook_endpoints SET enabled = false, disabled_at = now(),"
        " disabled_reason = 'answered 410 Gone'"
    )
    second = devstack.ensure_dev_webhook(db_url, key, SINK)
    again = db.execute(
        "SELECT id, enabled, secret, previous_secret FROM sms_webhook_endpoints"
    ).fetchall()
    assert again == [(row[0], True, second, first)] and second != first


def test_the_secret_goes_to_the_simulator_beside_other_names() -> None:
    """SIM_WEBHOOK_SECRETS gets the dev name's secret; names already there stay."""
    env = {"SIM_WEBHOOK_SECRETS": json.dumps({"mine": "whsec_x"})}
    devstack.sink_env(env, "whsec_dev")
    assert json.loads(env["SIM_WEBHOOK_SECRETS"]) == {"mine": "whsec_x", "dev": "whsec_dev"}
    fresh: dict[str, str] = {}
    devstack.sink_env(fresh, "whsec_dev")
    assert json.loads(fresh["SIM_WEBHOOK_SECRETS"]) == {"dev": "whsec_dev"}


def test_the_ready_text_shows_the_sink_when_simulated(capsys: pytest.CaptureFixture[str]) -> None:
    """The printed quick start lists the sink's curl line only when the simulator runs."""
    env = {"SIM_PORT": "8010"}
    devstack.print_ready("http://127.0.0.1:8000", "k", env, simulated=True)
    assert (
        "curl -sS 'http://127.0.0.1:8010/_sim/webhooks?message_id=<id>'" in capsys.readouterr().out
    )
    devstack.print_ready("http://127.0.0.1:8000", "k", env, simulated=False)
    assert "_sim/webhooks" not in capsys.readouterr().out
