"""`python -m api [uvicorn options]`: the API as API_WORKERS uvicorn worker processes (default:
one per core this process may run on), sharing one port.

Before any worker starts it checks the settings, so a bad one exits 2 with one line naming its
variable (as `uvicorn api.app:app` does) instead of each worker failing in turn. It gives the
workers a fresh, empty PROMETHEUS_MULTIPROC_DIR, removed when it exits: whichever worker serves
GET /metrics sums every worker's counts from there (shared/metrics.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Final

import uvicorn

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
        os.environ.pop(MULTIPROC_ENV.lower(), None)  # the old spelling would win in a worker
        try:
            count = workers(os.environ)
            _check_settings(os.environ)
        except ConfigError as e:
            print(f"api: {e}", file=sys.stderr)
            return 2
        # uvicorn's own command line, so every option of `uvicorn api.app:app` works as before.
        uvicorn.main.main(args=[APP, "--workers", str(count), *args], prog_name="python -m api")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0  # not reached: uvicorn's command line exits with its own code


if __name__ == "__main__":
    sys.exit(main())
