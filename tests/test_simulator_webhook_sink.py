"""The simulator's webhook sink: POST /_sim/webhooks/{name} records each request and verifies
its Standard Webhooks signature when it knows the name's secret; GET /_sim/webhooks lists them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from shared.webhook_signing import new_secret
from simulator.config import SimConfig, from_env
from tests.fixtures_sim import SimHandle

SECRET = new_secret()


def _post(
    sim: SimHandle, name: str, payload: dict[str, Any], secret: str = SECRET, msg_id: str = "msg_1"
) -> httpx.Response:
    """POST `payload` to the sink, signed with `secret` as the dispatcher signs."""
    body = json.dumps(payload)
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=datetime.now(UTC), data=body)
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(datetime.now(UTC).timestamp())),
        "webhook-signature": signature,
    }
    return httpx.post(f"{sim.base_url}/_sim/webhooks/{name}", content=body, headers=headers)


def _listed(sim: SimHandle, **params: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{sim.base_url}/_sim/webhooks", params=params)
    assert r.status_code == 200
    found: list[dict[str, Any]] = r.json()["webhooks"]
    assert r.json()["count"] == len(found)
    return found


def _event(kind: str, message_id: str) -> dict[str, Any]:
    return {"type": kind, "timestamp": "2026-01-01T00:00:00.000000Z", "data": {"id": message_id}}


def test_the_sink_records_and_verifies_with_the_names_secret(sim: SimHandle) -> None:
    """Signed with the name's secret: verified true; with another secret: false with the
    reason; a name without a secret: null. Headers and body are kept."""
    sim.configure(webhook_secrets={"app": SECRET})
    assert _post(sim, "app", _event("message.sent", "m1")).status_code == 204
    assert _post(sim, "app", _event("message.sent", "m2"), secret=new_secret()).status_code == 204
    assert _post(sim, "other", _event("message.sent", "m3")).status_code == 204
    got = {r["message_id"]: r for r in _listed(sim)}
    assert got["m1"]["verified"] is True and got["m1"]["verify_error"] is None
    assert got["m1"]["headers"]["webhook-id"] == "msg_1" and got["m1"]["type"] == "message.sent"
    assert got["m1"]["body"] == _event("message.sent", "m1")
    assert got["m2"]["verified"] is False and "signature" in got["m2"]["verify_error"]
    assert got["m3"]["verified"] is None


def test_a_tampered_body_does_not_verify(sim: SimHandle) -> None:
    """The signature covers the body: the same headers with another body verify false."""
    sim.configure(webhook_secrets={"app": SECRET})
    good = _post(sim, "app", _event("message.delivered", "m1"))
    headers = dict(good.request.headers)
    headers.pop("content-length")
    httpx.post(
        f"{sim.base_url}/_sim/webhooks/app",
        content=json.dumps(_event("message.delivered", "m2")),
        headers=headers,
    )
    verified = {r["message_id"]: r["verified"] for r in _listed(sim, name="app")}
    assert verified == {"m1": True, "m2": False}


def test_the_list_filters_and_reset_clears_it(sim: SimHandle) -> None:
    """?name=, ?type= and ?message_id= filter; POST /_sim/reset forgets every record."""
    _post(sim, "a", _event("message.queued", "m1"))
    _post(sim, "a", _event("message.sent", "m1"))
    _post(sim, "b", _event("message.sent", "m2"))
    assert [r["type"] for r in _listed(sim, message_id="m1")] == ["message.queued", "message.sent"]
    assert [r["message_id"] for r in _listed(sim, type="message.sent")] == ["m1", "m2"]
    assert [r["message_id"] for r in _listed(sim, name="b")] == ["m2"]
    sim.reset()
    assert _listed(sim) == []


def test_the_sink_answers_the_configured_status(sim: SimHandle) -> None:
    """webhook_sink_status (e.g. 410, to see an endpoint disabled) is what the sink answers."""
    sim.configure(webhook_sink_status=410)
    assert _post(sim, "app", _event("message.sent", "m1")).status_code == 410
    r = httpx.post(f"{sim.base_url}/_sim/config", json={"webhook_sink_status": 42})
    assert r.status_code == 400


def test_webhook_secrets_come_from_the_environment_and_stay_hidden(sim: SimHandle) -> None:
    """SIM_WEBHOOK_SECRETS (JSON) at start; GET /_sim/config never shows a secret."""
    config = SimConfig()
    config.update(from_env({"SIM_WEBHOOK_SECRETS": json.dumps({"dev": SECRET})}))
    assert config.webhook_secrets == {"dev": SECRET}
    assert "webhook_secrets" not in config.public() and SECRET not in repr(config)
    sim.configure(webhook_secrets={"app": SECRET})
    assert SECRET not in httpx.get(f"{sim.base_url}/_sim/config").text


@pytest.mark.parametrize("value", ['["not", "an", "object"]', "{not json"])
def test_bad_webhook_secrets_are_refused(value: str) -> None:
    """A SIM_WEBHOOK_SECRETS that is not a JSON object is a configuration error."""
    with pytest.raises(ValueError, match="webhook_secrets"):
        SimConfig().update(from_env({"SIM_WEBHOOK_SECRETS": value}))
