"""The documented deploy (README "Database roles and PgBouncer"): tables owned by an owner role
that migrates, least-privilege roles from `smsctl db roles`, the API and a dispatcher under them,
directly and through a real PgBouncer in transaction pooling mode (where installed).

Each test gets a fresh database owned by OWNER (a LOGIN role with CREATEROLE, not a superuser),
migrated by it as the migrate unit does. The roles are cluster-wide, so every test sets them up
as OWNER, the role that created them.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import make_conninfo

from bench.pgbouncer import INSTALL_HINT, PgBouncer, which
from dispatcher.wakeup import Wakeup
from shared.db import open_pool
from shared.migrate import migrate
from tests.dispatch_support import env_for, log_actions, start_dispatcher, stop_all, wait_until
from tests.fixtures_sim import SIM_TWILIO_NUMBER, SimHandle, free_port
from tooling import roles

OWNER = "sms_owner"  # as in the README's deploy
ROOT = Path(__file__).resolve().parent.parent
TO = "+14155552671"
needs_pgbouncer = pytest.mark.skipif(which() is None, reason=INSTALL_HINT)


def _as(url: str, user: str) -> str:
    return make_conninfo(url, user=user)


@pytest.fixture
def fresh_url(db_url: str) -> Iterator[str]:
    """A new, empty database owned by OWNER; its direct (unix socket) conninfo as OWNER."""
    name = f"deploy_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(db_url, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (OWNER,)).fetchone() is None:
            admin.execute(f"CREATE ROLE {OWNER} LOGIN CREATEROLE")
        admin.execute(f"CREATE DATABASE {name} OWNER {OWNER}")
    yield make_conninfo(db_url, dbname=name, user=OWNER)
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def owner_url(fresh_url: str) -> str:
    """`fresh_url`, migrated by OWNER."""
    migrate(fresh_url)
    return fresh_url


def smsctl(url: str, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`smsctl ARGV` as a process with DATABASE_URL=url."""
    return subprocess.run(
        [sys.executable, "-m", "tooling.cli", *argv],
        cwd=ROOT,
        env=env_for({"DATABASE_URL": url, **env}),
        capture_output=True,
        text=True,
        timeout=60,
    )


def grants(url: str) -> list[tuple[Any, ...]]:
    """Every table and column privilege our three roles hold here."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT grantee, table_name, privilege_type, NULL FROM"
            " information_schema.role_table_grants WHERE grantee = ANY(%(r)s)"
            " UNION ALL SELECT grantee, table_name, privilege_type, column_name FROM"
            " information_schema.role_column_grants WHERE grantee = ANY(%(r)s)"
            " ORDER BY 1, 2, 3, 4",
            {"r": list(roles.ROLES)},
        ).fetchall()
    return rows


def test_smsctl_db_roles_creates_the_roles_once_and_a_rerun_changes_nothing(
    owner_url: str,
) -> None:
    """`smsctl db roles` run by the owner exits 0 naming each role; run again it creates nothing
    and leaves exactly the same grants."""
    smsctl(owner_url, "db", "roles")  # the roles may exist already (other tests): cluster-wide
    first = grants(owner_url)
    again = smsctl(owner_url, "db", "roles")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[:3] == [
        f"{role}: exists, password unchanged" for role in roles.ROLES
    ]
    assert again.stderr == ""
    assert grants(owner_url) == first
    assert ("sms_api", "sms_outbox", "INSERT", None) in first


def test_every_table_and_view_is_in_the_grant_table(owner_url: str) -> None:
    """A migration that adds a table or view must say in tooling/roles.py who may touch it."""

    async def found() -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(owner_url) as conn:
            return await roles.relations(conn, "public")

    relations = asyncio.run(found())
    assert "sms_outbox" in relations and "sms_queue_health" in relations
    assert roles.unknown_relations(relations) == []


def test_passwords_from_the_environment_are_stored_as_scram_verifiers(
    owner_url: str, db: psycopg.Connection[Any]
) -> None:
    """SMS_DISPATCHER_DB_PASSWORD sets that role's password as a SCRAM verifier (the password
    never reaches the server); the other roles' stay as they were."""
    before = dict(db.execute("SELECT rolname, rolpassword FROM pg_authid").fetchall())
    done = smsctl(owner_url, "db", "roles", SMS_DISPATCHER_DB_PASSWORD="s3cret-for-test")
    assert done.returncode == 0, done.stderr
    assert "sms_dispatcher: " in done.stdout and "password set" in done.stdout
    after = dict(db.execute("SELECT rolname, rolpassword FROM pg_authid").fetchall())
    assert after["sms_dispatcher"].startswith("SCRAM-SHA-256$")
    assert "s3cret" not in after["sms_dispatcher"]
    assert after["sms_api"] == before.get("sms_api")


def _arrange_work(owner: psycopg.Connection[Any]) -> dict[str, Any]:
    """Outbox rows of three kinds: send work of a pending message, of a message being sent
    (leased, attempt started), and an alert's delivery."""
    owner.execute(
        "INSERT INTO sms_senders (phone_number, provider) VALUES (%s, 'twilio')",
        (SIM_TWILIO_NUMBER,),
    )
    conversation = owner.execute(
        "INSERT INTO sms_conversations (from_number, to_number) VALUES (%s, %s) RETURNING id",
        (SIM_TWILIO_NUMBER, TO),
    ).fetchone()
    ids = {}
    for label, status in (("pending", "pending"), ("sending", "sending")):
        row = owner.execute(
            "INSERT INTO sms_messages (conversation_id, from_number, to_number, body,"
            " provider, delivery_status, provider_sid, segments, encoding)"
            " VALUES (%s, %s, %s, 'hi', 'twilio', %s, %s, 1, 'GSM-7') RETURNING id",
            (
                conversation[0] if conversation else None,
                SIM_TWILIO_NUMBER,
                TO,
                status,
                None if status == "pending" else "SM" + "1" * 32,
            ),
        ).fetchone()
        assert row is not None
        ids[label] = row[0]
        owner.execute(
            "INSERT INTO sms_outbox (kind, message_id, provider, sender, cost) VALUES"
            " ('send_sms', %s, 'twilio', %s, 1)",
            (row[0], SIM_TWILIO_NUMBER),
        )
    owner.execute(
        "UPDATE sms_outbox SET state = 'leased', lease_owner = 'host:1:x', attempts = 1,"
        " lease_expires_at = now() + interval '1 minute', attempt_started_at = now()"
        " WHERE message_id = %s",
        (ids["sending"],),
    )
    owner.execute(
        "WITH a AS (INSERT INTO sms_alerts (kind, payload) VALUES ('provider_config', '{}')"
        " RETURNING id) INSERT INTO sms_outbox (kind, alert_id) SELECT 'deliver_alert', id FROM a"
    )
    return ids


def test_the_api_role_cannot_delete_work(owner_url: str) -> None:
    """As sms_api, a DELETE of the whole outbox takes only the send work of pending messages
    (cancel's rows); in-flight sends and alert deliveries stay, and TRUNCATE, changing a row's
    state and retention's partition drop are refused."""
    assert smsctl(owner_url, "db", "roles").returncode == 0
    with psycopg.connect(owner_url, autocommit=True) as owner:
        ids = _arrange_work(owner)
        with psycopg.connect(_as(owner_url, "sms_api"), autocommit=True) as api:
            deleted = api.execute("DELETE FROM sms_outbox RETURNING message_id").fetchall()
            with pytest.raises(errors.InsufficientPrivilege):
                api.execute("TRUNCATE sms_outbox")
            with pytest.raises(errors.InsufficientPrivilege):
                api.execute("UPDATE sms_outbox SET state = 'ready', lease_owner = NULL")
            with pytest.raises(errors.InsufficientPrivilege):  # retention's, as the owner
                api.execute(
                    "SELECT sms_message_events_drop_partition('sms_message_events_default',"
                    " interval '1 day')"
                )
        left = owner.execute("SELECT kind, message_id FROM sms_outbox ORDER BY id").fetchall()
    assert deleted == [(ids["pending"],)]
    assert left == [("send_sms", ids["sending"]), ("deliver_alert", None)]


def test_the_readonly_role_reads_and_changes_nothing(owner_url: str) -> None:
    """sms_readonly reads every table and DBA view but no webhook secret, and every write is
    refused by its grants even with its read-only default turned off."""
    assert smsctl(owner_url, "db", "roles").returncode == 0
    with psycopg.connect(_as(owner_url, "sms_readonly"), autocommit=True) as ro:
        for view in roles.VIEWS:
            ro.execute(f"SELECT * FROM {view} LIMIT 1")
        for table in roles.TABLES:
            if table != "sms_webhook_endpoints":
                ro.execute(f"SELECT * FROM {table} LIMIT 1")
        ro.execute("SELECT id, url, enabled FROM sms_webhook_endpoints")
        with pytest.raises(errors.InsufficientPrivilege):
            ro.execute("SELECT secret FROM sms_webhook_endpoints")
        ro.execute("SET default_transaction_read_only = off")
        for statement in (
            "INSERT INTO sms_api_keys (name, key_sha256) VALUES ('x', repeat('a', 64))",
            "UPDATE sms_senders SET enabled = false",
            "DELETE FROM sms_outbox",
            "DELETE FROM sms_messages",
            "TRUNCATE sms_message_events",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                ro.execute(statement)


# -- PgBouncer ---------------------------------------------------------------------------------


@pytest.fixture
def bouncer(owner_url: str) -> Iterator[PgBouncer]:
    """PgBouncer (transaction pooling) in front of the test's server, for every role."""
    if which() is None:
        pytest.skip(INSTALL_HINT)
    with PgBouncer(owner_url, [OWNER, *roles.ROLES]) as running:
        yield running


@needs_pgbouncer
def test_pooled_connections_share_server_sessions_without_prepared_statements(
    owner_url: str,
) -> None:
    """Two pool connections through a one-server-connection PgBouncer run the same statements
    again and again: psycopg's prepared statements would collide there (shown first), the pool
    turns them off for pooled connections and keeps them for direct ones."""
    with PgBouncer(owner_url, [OWNER], pool_size=1) as one:
        with psycopg.connect(one.url(), autocommit=True, prepare_threshold=0) as a:
            a.execute("SELECT 1 + %s", (1,))
            with psycopg.connect(one.url(), autocommit=True, prepare_threshold=0) as b:
                with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
                    b.execute("SELECT 1 + %s", (1,))

        async def through(url: str) -> list[int | None]:
            pool = await open_pool(url, application_name="test", min_size=2, max_size=2)
            try:
                thresholds = []
                for i in range(12):
                    async with pool.connection() as conn:
                        cur = await conn.execute("SELECT %s::int + 1", (i,))
                        assert await cur.fetchone() == (i + 1,)
                        thresholds.append(conn.prepare_threshold)
                return sorted(set(thresholds), key=str)
            finally:
                await pool.close()

        assert asyncio.run(through(one.url())) == [None]
        assert asyncio.run(through(owner_url)) == [5]


@needs_pgbouncer
def test_a_listen_through_the_pooler_is_reported(
    bouncer: PgBouncer, caplog: pytest.LogCaptureFixture
) -> None:
    """A wake-up LISTEN through PgBouncer logs one WARNING naming DATABASE_LISTEN_URL."""

    async def listen() -> None:
        wakeup = Wakeup(bouncer.url())
        stop = asyncio.Event()
        task = asyncio.create_task(wakeup.listen(stop))
        await asyncio.wait_for(wakeup.connected.wait(), 20)
        stop.set()
        await task

    with caplog.at_level(logging.WARNING, logger="dispatcher.wakeup"):
        asyncio.run(listen())
    (line,) = [r for r in caplog.records if getattr(r, "action", "") == "listen_pooled"]
    assert "DATABASE_LISTEN_URL" in line.getMessage()


# -- the whole deploy --------------------------------------------------------------------------


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    stop_all(started)


def _ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, "the API exited"
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _status(api: httpx.Client, message_id: str) -> str:
    return str(api.get(f"/sms/messages/{message_id}").json()["status"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("through", ["direct", pytest.param("pgbouncer", marks=needs_pgbouncer)])
def test_the_documented_deploy_delivers_a_message(
    through: str,
    fresh_url: str,
    sim: SimHandle,
    procs: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """Migrated by the owner and roles from `smsctl db roles` (as the migrate unit runs them),
    the API as sms_api and a dispatcher as sms_dispatcher (through PgBouncer, LISTEN direct,
    smsctl too): a message sent over HTTP reaches `delivered`, a scheduled one cancels, and each
    process's sessions are its role's."""
    owner_url = fresh_url
    migrated = subprocess.run(
        [sys.executable, "-m", "shared.migrate"],
        cwd=ROOT,
        env=env_for({"DATABASE_URL": owner_url}),
        capture_output=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    setup = smsctl(owner_url, "db", "roles")
    assert setup.returncode == 0, setup.stderr
    bouncer = PgBouncer(owner_url, [OWNER, *roles.ROLES]) if through == "pgbouncer" else None
    try:
        url = bouncer.url if bouncer is not None else (lambda **p: make_conninfo(owner_url, **p))
        made = smsctl(url(user=OWNER), "api-keys", "create", "deploy-test")
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        port = free_port()
        api_url = f"http://127.0.0.1:{port}"
        settings_env = {
            **sim.env(),
            "TWILIO_PHONE_NUMBER": SIM_TWILIO_NUMBER,
            "PUBLIC_BASE_URL": api_url,
            "DISPATCH_POLL_SECONDS": "0.2",
            "LOG_LEVEL": "INFO",
        }
        api_env = env_for(settings_env, DATABASE_URL=url(user="sms_api"))
        with (tmp_path / "api.log").open("ab") as log:
            api = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1",
                 "--port", str(port), "--no-access-log"],
                cwd=ROOT, env=api_env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append(api)
        wait_until(lambda: _ready(api_url, api), seconds=30, what="the API to be ready")
        dispatcher_env = env_for(
            settings_env,
            DATABASE_URL=url(user="sms_dispatcher"),
            DATABASE_LISTEN_URL=_as(owner_url, "sms_dispatcher"),
        )
        dispatcher_log = tmp_path / "dispatcher.log"
        procs.append(start_dispatcher(dispatcher_env, dispatcher_log))
        wait_until(
            lambda: bool(log_actions(dispatcher_log, "start")), seconds=30, what="dispatcher"
        )
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=api_url, headers=headers, timeout=10) as client:
            sent = client.post("/sms/send", json={"to": TO, "body": "deployed"})
            assert sent.status_code == 202, sent.text
            message_id = sent.json()["id"]
            wait_until(
                lambda: _status(client, message_id) == "delivered", seconds=60, what="delivered"
            )
            scheduled = client.post(
                "/sms/send", json={"to": TO, "body": "later", "validity_seconds": 60,
                                   "priority": "low", "send_at": _in_an_hour(owner_url)},
            )  # fmt: skip
            assert scheduled.status_code == 202, scheduled.text
            canceled = client.post(f"/sms/messages/{scheduled.json()['id']}/cancel")
            assert canceled.status_code == 200, canceled.text
        assert [m["body"] for m in sim.messages()] == ["deployed"]
        with psycopg.connect(owner_url) as owner:
            sessions = set(
                owner.execute(
                    "SELECT usename, application_name FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name LIKE 'sms-%'"
                ).fetchall()
            )
        ours = {
            ("sms_api", "sms-outbox-api"),
            ("sms_dispatcher", "sms-dispatcher"),
            ("sms_dispatcher", "sms-dispatcher-listen"),
        }
        assert ours <= sessions
        assert {user for user, _ in sessions} == {"sms_api", "sms_dispatcher"}
        if bouncer is not None:  # the pools went through PgBouncer, the LISTEN did not
            clients = bouncer.clients()
            assert ("sms_api", "sms-outbox-api") in clients
            assert ("sms_dispatcher", "sms-dispatcher") in clients
            assert ("sms_dispatcher", "sms-dispatcher-listen") not in clients
        assert not log_actions(dispatcher_log, "listen_pooled")
    finally:
        stop_all(procs)
        procs.clear()
        if bouncer is not None:
            bouncer.close()


def _in_an_hour(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT to_char((now() + interval '1 hour') AT TIME ZONE 'UTC',"
            ' \'YYYY-MM-DD"T"HH24:MI:SS"Z"\')'
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_smsctl_db_roles_without_migrations_says_so(db_url: str) -> None:
    """On a database with no sms_outbox yet, `smsctl db roles` exits 1 saying to migrate first."""
    with psycopg.connect(db_url, autocommit=True) as admin:
        name = f"empty_{uuid.uuid4().hex[:12]}"
        admin.execute(f"CREATE DATABASE {name}")
    try:
        done = smsctl(make_conninfo(db_url, dbname=name), "db", "roles")
        assert done.returncode == 1
        assert done.stderr.strip() == (
            "smsctl: no sms_outbox table here: apply the migrations first"
        )
    finally:
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
