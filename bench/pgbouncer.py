"""PgBouncer in transaction pooling mode in front of an embedded PostgreSQL: the launcher the
tests and this bench group share, and the group itself (enqueue and dispatch through PgBouncer vs
direct, same run, as a ratio).

The launcher needs only the `pgbouncer` binary (Debian: `apt-get install pgbouncer`); `which()`
says whether it is there. Imports of the bench stack stay inside `run` so that the tests can use
the launcher without the bench extras.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

if TYPE_CHECKING:
    import argparse

    from bench.stack import Stack

INSTALL_HINT = "pgbouncer is not installed (Debian/Ubuntu: sudo apt-get install -y pgbouncer)"
START_TIMEOUT = 20.0


def which() -> str | None:
    """The pgbouncer binary, or None (Debian installs it in /usr/sbin, off a user's PATH)."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgBouncer:
    """One pgbouncer process on a free loopback port, transaction pooling, in front of the server
    that `direct_url` (a unix-socket conninfo) reaches. `users` may log in through it (trust
    auth on loopback: this is for tests and the bench, never a deployment). Context manager."""

    def __init__(
        self,
        direct_url: str,
        users: Iterable[str],
        *,
        pool_size: int = 20,
        max_client_conn: int = 400,
    ) -> None:
        binary = which()
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        params = conninfo_to_dict(direct_url)
        self.direct_url = direct_url
        self.port = _free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="sms-outbox-pgbouncer-"))
        self.workdir.chmod(0o755)
        host, pg_port = str(params.get("host") or ""), str(params.get("port") or 5432)
        if not host.startswith("/"):
            raise ValueError("direct_url must name the server's unix socket directory as host")
        users = list(users)
        self.admin = users[0]
        userlist = "".join(f'"{user}" ""\n' for user in users)
        (self.workdir / "userlist.txt").write_text(userlist)
        config = self.workdir / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={host} port={pg_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.workdir / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"admin_users = {self.admin}\n"
            f"default_pool_size = {pool_size}\n"
            f"max_client_conn = {max_client_conn}\n"
            # What a deployment's pgbouncer.ini needs for sms-outbox (README): the pools send
            # `options` (idle_in_transaction_session_timeout), which PgBouncer refuses otherwise.
            "ignore_startup_parameters = options\n"
        )
        for path in self.workdir.iterdir():
            path.chmod(0o644)
        argv = [binary, str(config)]
        if os.geteuid() == 0:
            # pgbouncer refuses to run as root: run it as the user that owns the server's socket.
            argv[1:1] = ["-u", pwd.getpwuid(Path(host).stat().st_uid).pw_name]
        self._log: IO[bytes] = (self.workdir / "pgbouncer.log").open("wb")
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(str(params.get("user") or "postgres"), str(params.get("dbname")))
        except BaseException:
            self.close()
            raise

    def url(self, **params: Any) -> str:
        """A conninfo through pgbouncer: the direct one's database and user unless overridden."""
        base = {k: v for k, v in conninfo_to_dict(self.direct_url).items() if k != "host"}
        return make_conninfo("", **{**base, "host": "127.0.0.1", "port": str(self.port), **params})

    def clients(self) -> set[tuple[str, str]]:
        """(user, application_name) of every client connected now (SHOW CLIENTS)."""
        admin = self.url(user=self.admin, dbname="pgbouncer")
        # The admin console speaks the simple query protocol only: a client-side cursor.
        with psycopg.connect(admin, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
            cur = conn.execute("SHOW CLIENTS")
            names = [c.name for c in cur.description or ()]
            rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        return {(str(r["user"]), str(r.get("application_name") or "")) for r in rows}

    def log_text(self) -> str:
        return (self.workdir / "pgbouncer.log").read_text(errors="replace")

    def _wait_ready(self, user: str, dbname: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited at start: {self.log_text()[-2000:]}")
            try:
                with psycopg.connect(self.url(user=user, dbname=dbname, connect_timeout=2)):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the bench group ---------------------------------------------------------------------------


def run(stack: Stack, args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    """POST /sms/send (closed loop, 16 clients) and a drain through the simulator (0 ms), each
    with the processes connected directly and through PgBouncer, taking turns in every run; the
    ratios pooled / direct of the medians. The dispatcher's LISTEN stays direct
    (DATABASE_LISTEN_URL), as the README's deploy has it."""
    from bench import dispatch, enqueue, seed
    from bench.stats import ratio, spread

    if which() is None:
        print(f"  pgbouncer: skipped: {INSTALL_HINT}", file=sys.stderr, flush=True)
        return {"skipped": INSTALL_HINT}
    direct = stack.database_url
    user = str(conninfo_to_dict(direct).get("user") or "postgres")
    rates: dict[str, dict[str, list[float]]] = {
        "enqueue": {"direct": [], "pgbouncer": []},
        "dispatch": {"direct": [], "pgbouncer": []},
    }
    saved = {k: stack.env.get(k) for k in ("DATABASE_URL", "DATABASE_LISTEN_URL")}
    with PgBouncer(direct, [user]) as bouncer:
        urls = {"direct": direct, "pgbouncer": bouncer.url()}
        try:
            for r in range(args.runs):
                order = ["direct", "pgbouncer"] if r % 2 == 0 else ["pgbouncer", "direct"]
                for via in order:
                    stack.env.update(DATABASE_URL=urls[via], DATABASE_LISTEN_URL=direct)
                    stack.start_api()
                    load = asyncio.run(
                        enqueue.api_load(
                            stack, concurrency=16, seconds=args.enqueue_seconds, tag=f"pgb{via}{r}"
                        )
                    )
                    stack.stop("api")
                    with psycopg.connect(direct, autocommit=True) as conn:
                        seed.clear_messages(conn)  # the dispatcher must not send the load's
                    problems.extend(f"{via}: {p}" for p in load.problems)
                    rates["enqueue"][via].append(load.rate)
                    stack.start_dispatcher()
                    drain = dispatch.drain_simulator(
                        stack, args.sim_messages, f"pgbd{via}{r}", latency=0.0,
                        timeout=args.timeout,
                    )  # fmt: skip
                    stack.stop("dispatcher")
                    problems.extend(f"{via}: {p}" for p in drain.problems)
                    rates["dispatch"][via].append(drain.rate)
                    print(
                        f"  run {r + 1} {via}: enqueue c16 {load.rate:,.0f}/s,"
                        f" dispatch (simulator 0 ms) {drain.rate:,.0f}/s",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            for key, value in saved.items():
                if value is None:
                    stack.env.pop(key, None)
                else:
                    stack.env[key] = value
    out: dict[str, Any] = {
        f"{figure}_{via}": spread(values)
        for figure, per in rates.items()
        for via, values in per.items()
    }
    for figure in rates:
        out[f"pgbouncer_{figure}_ratio"] = ratio(
            out[f"{figure}_pgbouncer"]["median"], out[f"{figure}_direct"]["median"]
        )
    return out
