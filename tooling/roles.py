"""Least-privilege database roles: `smsctl db roles` creates sms_api, sms_dispatcher and
sms_readonly (idempotently) and sets each one's grants to exactly the table below, run as the
owner of the tables after every `migrate`.

The grants are a table of data, not SQL files: they are composed with identifiers (schema,
database, roles) that only the catalog knows, and `unknown_relations` compares the table with the
catalog so that a migration adding a table must say here who may touch it (tests/test_roles.py).
Partitions are reached through their parent, whose grants PostgreSQL checks; sms_readonly also gets
SELECT on whatever the owner creates later (ALTER DEFAULT PRIVILEGES), partitions included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from psycopg import AsyncConnection, sql

from shared.errors import SmsOutboxError

API: Final = "sms_api"
DISPATCHER: Final = "sms_dispatcher"
READONLY: Final = "sms_readonly"
ROLES: Final = (API, DISPATCHER, READONLY)
# A role's password, when its variable is set: a SCRAM verifier computed here, so the password
# itself never reaches the server (nor its statement log). Unset: the password is left as it is
# (none for a new role: peer or certificate authentication).
PASSWORD_VARIABLES: Final = {
    API: "SMS_API_DB_PASSWORD",
    DISPATCHER: "SMS_DISPATCHER_DB_PASSWORD",
    READONLY: "SMS_READONLY_DB_PASSWORD",
}
# Both processes' pools set this per session with the `options` startup parameter, which
# PgBouncer does not pass on: the roles carry it instead.
IDLE_IN_TRANSACTION_TIMEOUT: Final = "30s"
_LOCK_KEY: Final = 7_715_003  # two runs at once wait for each other (shared.migrate uses ...001)

# Privileges (S select, I insert, U update, D delete) on each table, from the named queries each
# process runs (sql/queries) and the triggers those fire: inserting or deleting sms_suppressions
# fans out into sms_webhook_deliveries and sms_outbox (0008_webhooks.sql) as the writing role;
# the dispatcher fans sms_message_events out into the same two after commit (0016), moving the
# cursor in sms_webhook_fanout. Retention (`smsctl prune`), migrations and operators' smsctl run
# as the owner.
TABLES: Final[Mapping[str, Mapping[str, str]]] = {
    # API: authenticates keys; dispatcher: never reads them.
    "sms_api_keys": {API: "S", DISPATCHER: ""},
    "sms_api_key_usage": {API: "SIU", DISPATCHER: ""},  # the per-key limits' windows (upsert)
    # API: registers the configured senders at start and picks the default; dispatcher: moves
    # each sender's pace clock in the claim and refunds it.
    "sms_senders": {API: "SIU", DISPATCHER: "SU"},
    "sms_conversations": {API: "SIU", DISPATCHER: "SU"},
    "sms_messages": {API: "SIU", DISPATCHER: "SU"},
    "sms_message_events": {API: "SI", DISPATCHER: "SI"},  # append-only
    # API: enqueues (and requeues) send work and cancels it (DELETE, narrowed by the row policy
    # below to the send work of a message still pending); dispatcher: claims, finishes, deletes.
    "sms_outbox": {API: "SID", DISPATCHER: "SIUD"},
    "sms_alerts": {API: "SIU", DISPATCHER: "SIU"},
    # API: the ops console shows the pauses; dispatcher: opens and lifts them.
    "sms_provider_pauses": {API: "S", DISPATCHER: "SIUD"},
    # API: STOP/START and DELETE /sms/suppressions; dispatcher: provider opt-outs (21610).
    "sms_suppressions": {API: "SID", DISPATCHER: "SI"},
    "sms_webhook_endpoints": {API: "SIUD", DISPATCHER: "SU"},
    "sms_webhook_deliveries": {API: "SIU", DISPATCHER: "SIU"},
    # The fan-out's cursor (0016): read, locked and moved by the dispatcher's webhook loop.
    "sms_webhook_fanout": {API: "", DISPATCHER: "SU"},
    "sms_schema_migrations": {API: "", DISPATCHER: ""},
    # The ops console's sign-ins (0011): opened, looked up, closed and expired by the API.
    "sms_ops_sessions": {API: "SID", DISPATCHER: ""},
}
# `SELECT ... FOR UPDATE` needs UPDATE on one column: a role that only locks rows of a table gets
# it on a column its code never writes. The API locks a key while it registers a webhook endpoint
# (the per-key cap) and a message's outbox row before cancelling it.
LOCK_ONLY: Final[Mapping[tuple[str, str], str]] = {
    ("sms_api_keys", API): "name",
    ("sms_outbox", API): "updated_at",
}
# The DBA views, and which process reads which (its /metrics, the ops console).
VIEWS: Final[Mapping[str, tuple[str, ...]]] = {
    "sms_queue_health": (API, DISPATCHER),
    "sms_failed_messages": (API,),
    "sms_stuck_work": (API,),
    "sms_provider_outcomes_1h": (API,),
    "sms_sender_pace": (API,),
    "sms_suppressed_recipients": (API,),
    "sms_webhook_health": (API, DISPATCHER),
}
# Functions a process calls itself (EXECUTE is revoked from PUBLIC below; triggers need none):
# messages_enqueue calls sms_messages_enqueue_rows (0017), which counts the recipient limit
# through sms_recipients_recent (0017) as the caller; sms_messages_enqueue (0014) is its wrapper
# for a process of the previous release. The dispatcher's fan-out, catch-up and disable build
# webhook bodies with sms_webhook_message_body, and read an endpoint's missed events with
# sms_webhook_events_between (0021).
FUNCTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "sms_messages_enqueue": (API,),
    "sms_messages_enqueue_rows": (API,),
    "sms_recipients_recent": (API,),
    "sms_webhook_events_between": (DISPATCHER,),
    "sms_webhook_message_body": (DISPATCHER,),
}
# Columns the read-only role does not see: webhook signing secrets (they would let a reader sign
# webhooks as us). A DBA lists the other columns by name.
HIDDEN_FROM_READONLY: Final[Mapping[str, tuple[str, ...]]] = {
    "sms_webhook_endpoints": ("secret", "previous_secret"),
}
_PRIVILEGES: Final = {"S": "SELECT", "I": "INSERT", "U": "UPDATE", "D": "DELETE"}

# The API's DELETE on sms_outbox is cancel's (messages_cancel): the send work of a message still
# pending. The restrictive policy holds it to that (it sees the message as the statement began,
# pending); the permissive one keeps every other role's access what its grants say. The owner
# (migrations, retention) is not subject to row security. Each is made once (its name carries
# its version): altering the hot table's policies takes a lock that would stall the claims.
_OUTBOX_POLICIES: Final = {
    "sms_outbox_by_grants": "CREATE POLICY {name} ON {outbox} USING (true) WITH CHECK (true)",
    "sms_outbox_api_deletes_pending_sends_v1": """
CREATE POLICY {name} ON {outbox} AS RESTRICTIVE FOR DELETE TO {api}
    USING (kind = 'send_sms' AND EXISTS (
        SELECT 1 FROM {messages} m
        WHERE m.id = message_id AND m.delivery_status = 'pending'))""",
}


class RolesError(SmsOutboxError):
    """The roles cannot be set up as asked (no schema yet, a role with too much power)."""


@dataclass(frozen=True)
class Applied:
    """What one run did: roles created, passwords set, relations granted and left unknown."""

    created: tuple[str, ...]
    passwords: tuple[str, ...]
    schema: str
    tables: int
    views: int
    unknown: tuple[str, ...]


def privileges(letters: str) -> list[str]:
    """'SIU' -> ['SELECT', 'INSERT', 'UPDATE']."""
    return [_PRIVILEGES[c] for c in letters]


async def _one(conn: AsyncConnection[Any], query: str, params: tuple[Any, ...]) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return None if row is None else row[0]


async def relations(conn: AsyncConnection[Any], schema: str) -> dict[str, str]:
    """Tables, partitioned tables, views of `schema` (partitions left out): name -> relkind."""
    cur = await conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class c"
        " WHERE c.relnamespace = %s::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')"
        " AND NOT c.relispartition AND c.relname LIKE 'sms\\_%%'",
        (schema,),
    )
    return {str(name): str(kind) for name, kind in await cur.fetchall()}


def unknown_relations(found: Mapping[str, str]) -> list[str]:
    """Tables and views of ours that the grant tables do not name."""
    return sorted(set(found) - set(TABLES) - set(VIEWS))


async def _ensure_role(conn: AsyncConnection[Any], role: str) -> bool:
    """Create `role` (LOGIN, nothing else) unless it exists; whether it was created. An existing
    role with powers that defeat its grants is refused."""
    cur = await conn.execute(
        "SELECT rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb, rolcanlogin"
        " FROM pg_roles WHERE rolname = %s",
        (role,),
    )
    row = await cur.fetchone()
    ident = sql.Identifier(role)
    if row is None:
        await conn.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                " NOBYPASSRLS NOINHERIT"
            ).format(ident)
        )
        return True
    if row[0]:
        raise RolesError(
            f"role {role} exists with superuser, bypassrls, createrole or createdb: its grants"
            " would not bound it; drop those attributes (ALTER ROLE) and run again"
        )
    if not row[1]:
        await conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(ident))
    return False


async def _set_password(conn: AsyncConnection[Any], role: str, password: str) -> None:
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    await conn.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(verifier.decode())
        )
    )


async def apply(conn: AsyncConnection[Any], environ: Mapping[str, str]) -> Applied:
    """Create the roles and set their grants, in one transaction on `conn` (as the tables'
    owner, or a superuser). Passwords come from PASSWORD_VARIABLES in `environ`."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        cur = await conn.execute(
            "SELECT n.nspname, pg_get_userbyid(c.relowner), current_database()"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = to_regclass('sms_outbox')"
        )
        row = await cur.fetchone()
        if row is None:
            raise RolesError("no sms_outbox table here: apply the migrations first")
        schema, owner, database = (str(v) for v in row)
        created = tuple([role for role in ROLES if await _ensure_role(conn, role)])
        passwords = []
        for role in ROLES:
            password = environ.get(PASSWORD_VARIABLES[role], "")
            if password:
                await _set_password(conn, role, password)
                passwords.append(role)
        found = await relations(conn, schema)
        await _grant(conn, schema=schema, owner=owner, database=database, found=found)
    unknown = tuple(unknown_relations(found))
    tables = sum(1 for kind in found.values() if kind in ("r", "p"))
    return Applied(created, tuple(passwords), schema, tables, len(found) - tables, unknown)


async def _grant(
    conn: AsyncConnection[Any], *, schema: str, owner: str, database: str, found: Mapping[str, str]
) -> None:
    s, roles = sql.Identifier(schema), sql.SQL(", ").join(map(sql.Identifier, ROLES))

    async def run(template: str, **parts: sql.Composable) -> None:
        await conn.execute(sql.SQL(template).format(**parts))

    for role in ROLES:
        r, db = sql.Identifier(role), sql.Identifier(database)
        timeout = sql.Literal(IDLE_IN_TRANSACTION_TIMEOUT)
        await run(
            "ALTER ROLE {r} IN DATABASE {db} SET idle_in_transaction_session_timeout = {t}",
            r=r,
            db=db,
            t=timeout,
        )
        if role == READONLY:  # a second lock on the door: every transaction is read-only
            await run("ALTER ROLE {r} IN DATABASE {db} SET default_transaction_read_only = on",
                      r=r, db=db)  # fmt: skip
    await run("GRANT CONNECT ON DATABASE {db} TO {roles}", db=sql.Identifier(database), roles=roles)
    await run("GRANT USAGE ON SCHEMA {s} TO {roles}", s=s, roles=roles)
    # From nothing each time, so a privilege removed here is removed from the database too.
    await run("REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {roles}", s=s, roles=roles)
    await run("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {roles}", s=s, roles=roles)
    for table, grants in TABLES.items():
        if table not in found:
            continue
        for role, letters in grants.items():
            if letters:
                await run(
                    "GRANT {p} ON {t} TO {r}",
                    p=sql.SQL(", ").join(map(sql.SQL, privileges(letters))),
                    t=sql.Identifier(schema, table),
                    r=sql.Identifier(role),
                )
    for (table, role), column in LOCK_ONLY.items():
        if table in found:
            await run(
                "GRANT UPDATE ({c}) ON {t} TO {r}",
                c=sql.Identifier(column),
                t=sql.Identifier(schema, table),
                r=sql.Identifier(role),
            )
    for view, readers in VIEWS.items():
        if view in found:
            await run(
                "GRANT SELECT ON {v} TO {r}",
                v=sql.Identifier(schema, view),
                r=sql.SQL(", ").join(map(sql.Identifier, readers)),
            )
    ro = sql.Identifier(READONLY)
    await run("GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {r}", s=s, r=ro)
    for table, hidden in HIDDEN_FROM_READONLY.items():
        if table in found:
            await _hide_columns(conn, schema, table, hidden)
    await run(
        "ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA {s} GRANT SELECT ON TABLES TO {r}",
        o=sql.Identifier(owner),
        s=s,
        r=ro,
    )
    # Functions are the owner's: retention's SECURITY DEFINER ones (0010) drop history as the
    # owner, and PostgreSQL lets everyone execute a new function. Triggers fire without EXECUTE.
    await run("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} FROM PUBLIC", s=s)
    await run(
        "ALTER DEFAULT PRIVILEGES FOR ROLE {o} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
        o=sql.Identifier(owner),
    )
    for function, callers in FUNCTIONS.items():
        await run(
            "GRANT EXECUTE ON FUNCTION {f} TO {r}",
            f=sql.Identifier(schema, function),
            r=sql.SQL(", ").join(map(sql.Identifier, callers)),
        )
    await _outbox_policies(conn, schema)


async def _outbox_policies(conn: AsyncConnection[Any], schema: str) -> None:
    outbox = sql.Identifier(schema, "sms_outbox")
    cur = await conn.execute(
        "SELECT relrowsecurity, ARRAY(SELECT policyname::text FROM pg_policies"
        " WHERE schemaname = %s AND tablename = 'sms_outbox') FROM pg_class"
        " WHERE oid = to_regclass(quote_ident(%s) || '.sms_outbox')",
        (schema, schema),
    )
    row = await cur.fetchone()
    assert row is not None  # apply() found the table
    enabled, existing = bool(row[0]), set(row[1])
    for name in sorted(existing - set(_OUTBOX_POLICIES)):  # an older version of ours
        if name.startswith("sms_outbox_"):
            await conn.execute(sql.SQL("DROP POLICY {} ON {}").format(sql.Identifier(name), outbox))
    for name, template in _OUTBOX_POLICIES.items():
        if name not in existing:
            await conn.execute(
                sql.SQL(template).format(
                    name=sql.Identifier(name),
                    outbox=outbox,
                    messages=sql.Identifier(schema, "sms_messages"),
                    api=sql.Identifier(API),
                )
            )
    if not enabled:
        await conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(outbox))


async def _hide_columns(
    conn: AsyncConnection[Any], schema: str, table: str, hidden: tuple[str, ...]
) -> None:
    cur = await conn.execute(
        "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " WHERE c.relname = %s AND c.relnamespace = %s::regnamespace AND a.attnum > 0"
        " AND NOT a.attisdropped ORDER BY a.attnum",
        (table, schema),
    )
    shown = [str(name) for (name,) in await cur.fetchall() if name not in hidden]
    t, ro = sql.Identifier(schema, table), sql.Identifier(READONLY)
    await conn.execute(sql.SQL("REVOKE SELECT ON {} FROM {}").format(t, ro))
    await conn.execute(
        sql.SQL("GRANT SELECT ({}) ON {} TO {}").format(
            sql.SQL(", ").join(map(sql.Identifier, shown)), t, ro
        )
    )
