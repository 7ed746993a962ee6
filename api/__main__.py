"""`python -m api [uvicorn options]`: the API as API_WORKERS uvicorn worker processes (default:
one per core this process may run on) on one port, each on a listening socket of its own.

Before any worker starts it checks the settings, so a bad one exits 2 with one line naming its
variable (as `uvicorn api.app:app` does) instead of each worker failing in turn. It gives the
workers a fresh, empty PROMETHEUS_MULTIPROC_DIR, removed when it exits: whichever worker serves
GET /metrics sums every worker's counts from there (shared/metrics.py). The workers serve
api.worker's app, which ends each of them with this process.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any, Final

import uvicorn
from uvicorn.config import Config
from uvicorn.supervisors import Multiprocess

from shared.errors import ConfigError

APP: Final = "api.worker:app"
WORKERS_ENV: Final = "API_WORKERS"
# prometheus-client's variable (shared.metrics.MULTIPROC_ENV), named here so that nothing
# imports prometheus-client before it is set: its mode is fixed at its first import.
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


def cores() -> int:
    """The CPUs this process may run on (its affinity: taskset, cpusets), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def workers(environ: Mapping[str, str], default: Callable[[], int] = cores) -> int:
    """API_WORKERS: a whole number from 1; unset or empty, `default()` (the cores)."""
    raw = environ.get(WORKERS_ENV, "").strip()
    if not raw:
        return default()
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{WORKERS_ENV} must be a whole number of at least 1, not {raw!r}")
    return int(raw)


class _SocketPerWorker(Multiprocess):
    """uvicorn's supervisor (restarts, signals), except that each worker listens on a socket of
    its own, bound to the same address with SO_REUSEPORT, so the kernel spreads new connections
    over the workers. On uvicorn's one shared socket the first worker to wake accepts a whole
    burst of connections (an event loop accepts up to the backlog per wake-up): 16 keep-alive
    connections opened at once all went to one of two workers, and the other idled."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        self._address: Any = None
        self._family = socket.AF_INET
        self._handed: list[socket.socket] = []
        shared = sockets[0] if len(sockets) == 1 else None
        if shared is not None and shared.family in (socket.AF_INET, socket.AF_INET6):
            self._address, self._family = shared.getsockname(), shared.family
            shared.close()  # its port (chosen by the kernel if 0) goes to the workers' sockets
        super().__init__(config, sockets)

    @property
    def sockets(self) -> list[socket.socket]:
        """What the next worker listens on: a socket of its own (TCP), else the shared ones."""
        if self._address is None:
            return self._shared
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(self._address)
        sock.listen(self.config.backlog)
        self._handed.append(sock)
        return [sock]

    @sockets.setter
    def sockets(self, value: list[socket.socket]) -> None:
        self._shared = value

    def _close_handed(self) -> None:
        """Close this process's copies of the workers' sockets once they started (each has its
        own): a socket left open here after its worker died would take its share of new
        connections and never accept them."""
        for sock in self._handed:
            sock.close()
        self._handed.clear()

    def init_processes(self) -> None:
        super().init_processes()
        self._close_handed()

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        self._close_handed()

    def restart_all(self) -> None:
        super().restart_all()
        self._close_handed()

    def handle_ttin(self) -> None:
        super().handle_ttin()
        self._close_handed()


def _check_settings(environ: Mapping[str, str]) -> None:
    """What the app checks when it is first imported (api.app), once here for every worker."""
    from shared import senders
    from shared.config import load_settings

    settings = load_settings(environ)
    if not settings.database_url:
        raise ConfigError("DATABASE_URL is not set")
    senders.configured(settings)


def _stopped(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--workers" or a.startswith("--workers=") for a in args):
        print(f"api: set {WORKERS_ENV} instead of --workers", file=sys.stderr)
        return 2
    directory = tempfile.mkdtemp(prefix="sms-outbox-api-metrics-")
    # A lone worker serves in this process, and uvicorn raises the SIGTERM it shut down on again
    # once done: end with 0 through `finally` instead of dying with the directory left behind.
    signal.signal(signal.SIGTERM, _stopped)
    try:
        # Set before anything imports prometheus-client, here (one worker serves in this
        # process) and in each worker (they inherit it).
        os.environ[MULTIPROC_ENV] = directory
        try:
            count = workers(os.environ)
            _check_settings(os.environ)
            os.environ[WORKERS_ENV] = str(count)  # each worker knows how many serve beside it
        except ConfigError as e:
            print(f"api: {e}", file=sys.stderr)
            return 2
        # uvicorn's own command line, so every option of `uvicorn api.app:app` works as before,
        # with a socket per worker (uvicorn.main runs the supervisor it names).
        vars(importlib.import_module("uvicorn.main"))["Multiprocess"] = _SocketPerWorker
        uvicorn.main.main(args=[APP, "--workers", str(count), *args], prog_name="python -m api")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0  # not reached: uvicorn's command line exits with its own code


if __name__ == "__main__":
    sys.exit(main())
