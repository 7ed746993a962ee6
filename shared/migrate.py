"""Forward-only migrations: sql/migrations/NNNN_name.sql, applied in order, recorded in a table.

`python -m shared.migrate` applies what is pending to DATABASE_URL.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg

from shared.errors import SmsOutboxError
from shared.queries import SQL_DIR

log = logging.getLogger(__name__)
MIGRATIONS_DIR = SQL_DIR / "migrations"
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")
# Any constant shared by every migrator: two migrators at once wait for each other.
_LOCK_KEY = 7_715_001


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def available(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files, in version order; a gap or a duplicate number is an error."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _FILE.match(path.name)
        if not m:
            raise SmsOutboxError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path))
    for expected, mig in enumerate(found, start=1):
        if mig.version != expected:
            raise SmsOutboxError(f"migration {mig.path.name}: expected version {expected:04d}")
    return found


def migrate(conninfo: str, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply the pending migrations, each in its own transaction; return the versions applied."""
    applied: list[int] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS sms_schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM sms_schema_migrations")}
            for mig in available(directory):
                if mig.version in done:
                    continue
                with conn.transaction():
                    conn.execute(mig.path.read_text().encode())
                    conn.execute(
                        "INSERT INTO sms_schema_migrations (version, name) VALUES (%s, %s)",
                        (mig.version, mig.name),
                    )
                log.info("migration applied", extra={"action": "migrate", "version": mig.version})
                applied.append(mig.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied


def main() -> int:
    from shared.logs import setup_logging

    setup_logging()
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        print("DATABASE_URL is not set", file=sys.stderr)
        return 2
    applied = migrate(url)
    print(f"applied {len(applied)} migration(s)" + (f": {applied}" if applied else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
