"""What each worker process of `python -m api` serves: api.app's app, in a process that ends with
its launcher. On Linux the kernel kills a worker whose launcher died, however it died (SIGKILL,
out of memory), so no orphan keeps serving the port or holding its connections."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from typing import Final

from starlette.applications import Starlette

PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>


def end_with_launcher() -> None:
    """Ask the kernel to SIGKILL this process when the launcher that spawned it ends; nothing
    when it is the launcher itself (one worker serves in the launcher's process) or not Linux."""
    launcher = multiprocessing.parent_process()
    if launcher is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != launcher.pid:  # it ended before the kernel was asked
        os.kill(os.getpid(), signal.SIGKILL)


def __getattr__(name: str) -> Starlette:
    """`api.worker:app`: api.app's app (built from the environment), once this process ends with
    its launcher."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    end_with_launcher()
    from api import app

    built: Starlette = app.app
    return built
