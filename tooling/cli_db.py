"""smsctl db roles: create the least-privilege roles and set their grants (tooling/roles.py).

Run as the owner of the tables (the role migrations run as), on a direct connection, after every
migrate; it is idempotent.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from psycopg import AsyncConnection

from shared.config import Settings
from tooling import roles
from tooling.cli_reports import OK, REFUSED, fail


def add_commands(commands: Any) -> None:
    """Register `smsctl db ...` on the top-level subparsers."""
    parser = commands.add_parser("db", help="database set-up: least-privilege roles")
    sub = parser.add_subparsers(dest="db_command", required=True)
    names = ", ".join(roles.ROLES)
    variables = ", ".join(roles.PASSWORD_VARIABLES.values())
    setup = sub.add_parser(
        "roles",
        help=f"create {names} (idempotent) and set each one's grants; run as the tables' owner"
        " after every migrate",
        description=f"Create the roles {names} if missing and set their grants to what the API,"
        " the dispatcher and read-only DBAs need, in one transaction. Passwords are read from"
        f" {variables} when set (stored as SCRAM verifiers); unset leaves a role's password as"
        " it is (none for a new role: peer or certificate authentication).",
    )
    setup.set_defaults(func=roles_command)


async def roles_command(
    conn: AsyncConnection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    try:
        applied = await roles.apply(conn, os.environ)
    except roles.RolesError as e:
        return fail(REFUSED, str(e))
    for role in roles.ROLES:
        state = "created" if role in applied.created else "exists"
        password = "password set" if role in applied.passwords else "password unchanged"
        print(f"{role}: {state}, {password}")
    print(
        f"grants set on {applied.tables} tables and {applied.views} views in schema"
        f" {applied.schema}; row security on sms_outbox"
    )
    for name in applied.unknown:
        print(
            f"smsctl: warning: {name} is not in tooling/roles.py: only {roles.READONLY} can"
            " read it",
            file=sys.stderr,
        )
    return OK
