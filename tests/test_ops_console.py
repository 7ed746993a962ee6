"""The ops console (/ops) over HTTP on a live server: sign-in, session cookie, CSRF, and the
actions (retry, cancel, reveal) with the API's own rules. Browser tests: tests/browser."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from shared import apikeys, migrate
from tests.api_support import (  # noqa: F401 - fixtures are used by name
    TO,
    api_key_fixture,
    app_fixture,
    auth_fixture,
    client_fixture,
    live_fixture,
)

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(name="operator_key")
def operator_key_fixture(db: psycopg.Connection[Any]) -> tuple[int, str]:
    """(id, key) of a fresh operator key."""
    return apikeys.create_key_sync(db, "ops tests", role="operator")


def csrf_of(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found is not None, page.text
    return found.group(1)


def sign_in(client: httpx.Client, key: str) -> httpx.Response:
    """Post `key` through the sign-in form, as a browser does."""
    form = client.get("/ops/sign-in")
    assert form.status_code == 200, form.text
    return client.post("/ops/sign-in", data={"csrf": csrf_of(form), "key": key})


@pytest.fixture(name="ops")
def ops_fixture(client: httpx.Client, operator_key: tuple[int, str]) -> httpx.Client:
    """`client`, signed in to the console with the operator key."""
    assert sign_in(client, operator_key[1]).status_code == 303
    return client


def send(client: httpx.Client, auth: dict[str, str], to: str = TO) -> str:
    r = client.post("/sms/send", json={"to": to, "body": "hi"}, headers=auth)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def fail(db: psycopg.Connection[Any], message_id: str, sid: str | None = None) -> None:
    """Make a message finally failed, as the dispatcher would (its outbox work gone)."""
    db.execute("DELETE FROM sms_outbox WHERE message_id = %s", (message_id,))
    db.execute(
        "UPDATE sms_messages SET delivery_status = 'failed', final_at = now(), provider_sid = %s,"
        " error_code = '30001', error_category = 'permanent', error_message = 'refused',"
        " attempts = 1 WHERE id = %s",
        (sid, message_id),
    )


def status_of(db: psycopg.Connection[Any], message_id: str) -> str:
    row = db.execute(
        "SELECT delivery_status FROM sms_messages WHERE id = %s", (message_id,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_wrong_key_is_refused_with_a_message(client: httpx.Client) -> None:
    """A key we never issued is a 401 naming the field, and no session cookie is set."""
    r = sign_in(client, "not-a-key")
    assert r.status_code == 401
    assert "not a valid API key" in r.text and "ops_session" not in r.headers.get("set-cookie", "")


def test_a_sender_key_is_forbidden(client: httpx.Client, api_key: str) -> None:
    """A sender key is a 403 that says an operator key is needed."""
    r = sign_in(client, api_key)
    assert r.status_code == 403
    assert "operator key" in r.text and "ops_session" not in r.headers.get("set-cookie", "")


def test_session_cookie_is_httponly_strict_and_not_secure_over_http(
    client: httpx.Client, operator_key: tuple[int, str]
) -> None:
    """An operator key gets a session cookie: HttpOnly, SameSite=Strict, path /ops; over plain
    http it is not Secure (the browser would drop it)."""
    r = sign_in(client, operator_key[1])
    assert r.status_code == 303 and r.headers["location"] == "/ops"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("ops_session="))
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/ops"} <= attributes
    assert "secure" not in attributes


def test_session_cookie_is_secure_behind_https(
    client: httpx.Client, operator_key: tuple[int, str]
) -> None:
    """Behind a proxy that says the browser came over https (X-Forwarded-Proto from loopback,
    which uvicorn trusts), the session cookie is Secure."""
    form = client.get("/ops/sign-in")
    r = client.post(
        "/ops/sign-in",
        data={"csrf": csrf_of(form), "key": operator_key[1]},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert r.status_code == 303
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("ops_session="))
    assert "secure" in {part.strip().lower() for part in cookie.split(";")}


def test_pages_need_a_session(client: httpx.Client) -> None:
    """Without a session every page sends the browser to the sign-in form."""
    for path in ("/ops", "/ops/messages", "/ops/failed", "/ops/senders"):
        r = client.get(path)
        assert (r.status_code, r.headers.get("location")) == (303, "/ops/sign-in"), path


def test_sign_in_without_its_csrf_token_is_refused(
    client: httpx.Client, operator_key: tuple[int, str]
) -> None:
    """The sign-in form posted without its token opens no session."""
    r = client.post("/ops/sign-in", data={"key": operator_key[1]})
    assert r.status_code == 403 and "csrf" in r.text
    assert "ops_session" not in r.headers.get("set-cookie", "")


def test_retry_without_csrf_is_refused_and_changes_nothing(
    ops: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A form posted without the CSRF token is a 403 and the message stays failed."""
    message_id = send(ops, auth)
    fail(db, message_id)
    r = ops.post(f"/ops/messages/{message_id}/retry", data={})
    assert r.status_code == 403 and "csrf" in r.text
    wrong = ops.post(f"/ops/messages/{message_id}/retry", data={"csrf": "0" * 64})
    assert wrong.status_code == 403
    assert status_of(db, message_id) == "failed"


def test_retry_requeues_a_never_accepted_failed_message(
    ops: httpx.Client,
    auth: dict[str, str],
    db: psycopg.Connection[Any],
    operator_key: tuple[int, str],
) -> None:
    """Retry on a failed message the provider never accepted puts it back in the queue, and
    the 'requeued' event names the operator key."""
    message_id = send(ops, auth)
    fail(db, message_id)
    page = ops.get(f"/ops/messages/{message_id}")
    r = ops.post(f"/ops/messages/{message_id}/retry", data={"csrf": csrf_of(page)})
    assert r.status_code == 303, r.text
    assert status_of(db, message_id) == "pending"
    row = db.execute(
        "SELECT detail->>'by' FROM sms_message_events"
        " WHERE message_id = %s AND event_type = 'requeued'",
        (message_id,),
    ).fetchone()
    assert row == (f"api-key:{operator_key[0]}",)
    work = db.execute("SELECT count(*) FROM sms_outbox WHERE message_id = %s", (message_id,))
    assert work.fetchone() == (1,)


def test_retry_of_an_accepted_message_is_refused_with_the_api_reason(
    ops: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A failed message the provider accepted once is refused with the API's own code and
    message (the same 409 the API answers), and stays failed."""
    message_id = send(ops, auth)
    fail(db, message_id, sid="SM" + uuid.uuid4().hex)
    api = ops.post(f"/sms/messages/{message_id}/retry", headers=auth)
    assert api.status_code == 409
    reason = api.json()["errors"][0]
    page = ops.get(f"/ops/messages/{message_id}")
    r = ops.post(f"/ops/messages/{message_id}/retry", data={"csrf": csrf_of(page)})
    assert r.status_code == 409
    assert reason["code"] == "already_accepted_by_provider"
    assert reason["code"] in r.text and reason["message"] in r.text
    assert status_of(db, message_id) == "failed"


def test_cancel_follows_the_api_rules(
    ops: httpx.Client, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Cancel moves a pending message to canceled; on a failed one it is refused (not_pending)."""
    pending = send(ops, auth)
    page = ops.get(f"/ops/messages/{pending}")
    r = ops.post(f"/ops/messages/{pending}/cancel", data={"csrf": csrf_of(page)})
    assert r.status_code == 303 and status_of(db, pending) == "canceled"
    failed = send(ops, auth)
    fail(db, failed)
    r = ops.post(f"/ops/messages/{failed}/cancel", data={"csrf": csrf_of(page)})
    assert r.status_code == 409 and "not_pending" in r.text


def test_recipient_is_masked_until_revealed_and_the_reveal_is_recorded(
    ops: httpx.Client,
    auth: dict[str, str],
    db: psycopg.Connection[Any],
    operator_key: tuple[int, str],
) -> None:
    """The timeline masks the recipient; a reveal shows it and records an event naming the key."""
    message_id = send(ops, auth)
    page = ops.get(f"/ops/messages/{message_id}")
    assert page.status_code == 200 and TO not in page.text
    r = ops.post(f"/ops/messages/{message_id}/reveal", data={"csrf": csrf_of(page)})
    assert r.status_code == 200 and TO in r.text
    rows = db.execute(
        "SELECT (detail->>'api_key_id')::bigint FROM sms_message_events"
        " WHERE message_id = %s AND event_type = 'recipient_revealed'",
        (message_id,),
    ).fetchall()
    assert rows == [(operator_key[0],)]


def test_sign_out_ends_the_session(ops: httpx.Client, db: psycopg.Connection[Any]) -> None:
    """Signing out deletes the session row: the old cookie no longer opens a page."""
    cookie = ops.cookies["ops_session"]
    page = ops.get("/ops")
    assert page.status_code == 200
    r = ops.post("/ops/sign-out", data={"csrf": csrf_of(page)})
    assert r.status_code == 303
    assert db.execute("SELECT count(*) FROM sms_ops_sessions").fetchone() == (0,)
    again = httpx.get(str(ops.base_url) + "/ops", cookies={"ops_session": cookie})
    assert again.status_code == 303


def test_a_revoked_key_is_signed_out(
    ops: httpx.Client, db: psycopg.Connection[Any], operator_key: tuple[int, str]
) -> None:
    """Revoking the operator key ends its console sessions at once."""
    db.execute("UPDATE sms_api_keys SET revoked_at = now() WHERE id = %s", (operator_key[0],))
    assert ops.get("/ops").status_code == 303


def test_reveal_events_fit_every_partition_after_an_upgrade(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    """0011 widens the event-type CHECK on every partition of sms_message_events, those 0010
    built from rows that already existed included: a reveal can be recorded on any day."""
    db.execute("DROP DATABASE IF EXISTS sms_ops_upgrade")
    db.execute("CREATE DATABASE sms_ops_upgrade")
    url = psycopg.conninfo.make_conninfo(db_url, dbname="sms_ops_upgrade")
    before = tmp_path / "before"
    before.mkdir()
    for migration in migrate.available():
        if migration.version < 10:
            shutil.copy(migration.path, before / migration.path.name)
    migrate.migrate(url, before)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "WITH c AS (INSERT INTO sms_conversations (from_number, to_number)"
            " VALUES ('+15005550006', %s) RETURNING id)"
            " INSERT INTO sms_messages (conversation_id, from_number, to_number, body, provider,"
            " segments, encoding) SELECT id, '+15005550006', %s, 'hi', 'twilio', 1, 'GSM-7'"
            " FROM c RETURNING id",
            (TO, TO),
        ).fetchone()
        assert row is not None
        old = "now() - interval '2 days'"
        conn.execute(
            "INSERT INTO sms_message_events (message_id, event_type, occurred_at)"
            f" VALUES (%s, 'created', {old}), (%s, 'created', now())",
            (row[0], row[0]),
        )
        migrate.migrate(url)
        for when in ("now() - interval '2 days'", "now()", "now() + interval '1 day'"):
            conn.execute(
                "INSERT INTO sms_message_events (message_id, event_type, occurred_at)"
                f" VALUES (%s, 'recipient_revealed', {when})",
                (row[0],),
            )
        count = conn.execute(
            "SELECT count(*) FROM sms_message_events WHERE event_type = 'recipient_revealed'"
        ).fetchone()
    assert count == (3,)
