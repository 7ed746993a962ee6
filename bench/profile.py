"""`make profile`: flame graphs of where the time goes (issue 15, item 6), with py-spy.

* The API (one uvicorn process) under the enqueue figure's load: closed-loop POST /sms/send at
  concurrency 16 for PROFILE_SECONDS.
* The dispatcher draining DRAIN_MESSAGES messages through the simulator at 0 ms latency.

Each is sampled by `py-spy record` (100 Hz, native frames off, idle frames off: what the process
spends CPU on) and written as an interactive SVG flame graph, plus py-spy's raw collapsed stacks
beside it (grep-able, diff-able between commits), to bench/results/ (or --out). It starts its own
embedded PostgreSQL, simulator, API and dispatcher as `make bench` does, on loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from bench import enqueue, seed
from bench.stack import SENDER, Stack

PROFILE_SECONDS = 15.0
DRAIN_MESSAGES = 20_000
RATE = "100"  # samples per second


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def py_spy() -> str:
    """The py-spy executable beside this interpreter, or on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy not found: `make profile` installs it (the bench extras)")
    return found


def record(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """Start sampling `pid` for `seconds` into out.svg and out.txt (two recorders: py-spy writes
    one format per run)."""
    spy = py_spy()
    common = ["record", "--pid", str(pid), "--rate", RATE, "--duration", str(int(seconds))]
    subprocess.Popen(
        [spy, *common, "--format", "raw", "--output", str(out.with_suffix(".txt"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return subprocess.Popen(
        [spy, *common, "--format", "flamegraph", "--output", str(out.with_suffix(".svg"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def profile_api(stack: Stack, out: Path, seconds: float) -> None:
    api = stack.start_api(workers=1)  # one process for py-spy: where one worker's time goes
    say(f"profile: API (pid {api.popen.pid}) under POST /sms/send at concurrency 16, {seconds:g} s")
    spy = record(api.popen.pid, out / "profile-api", seconds)
    time.sleep(0.5)  # let py-spy attach before the load starts
    load = asyncio.run(
        enqueue.api_load(stack, concurrency=16, seconds=seconds - 1.0, tag="profile")
    )
    spy.wait(timeout=seconds + 30)
    say(f"  {load.rate:,.0f} requests/s while sampled -> {out / 'profile-api.svg'}")
    stack.stop("api")


def profile_dispatcher(stack: Stack, out: Path, messages: int) -> None:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        seed.clear_messages(conn)
    dispatcher = stack.start_dispatcher()
    seconds = 60.0
    say(f"profile: dispatcher (pid {dispatcher.popen.pid}) draining {messages:,} messages")
    spy = record(dispatcher.popen.pid, out / "profile-dispatcher", seconds)
    time.sleep(0.5)  # let py-spy attach before the messages are there
    started = time.monotonic()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        # Seeded only now: a dispatcher that finds them at its start has drained them before
        # py-spy attached (the profile of 2026-12-06 morning sampled an idle process).
        with conn.transaction():
            seed.seed_messages(conn, messages, "profile", sender=SENDER, burst=stack.sender_burst)
        conn.execute(seed.WAKEUP)
        while time.monotonic() - started < seconds - 1.0:
            left = conn.execute("SELECT count(*) FROM sms_outbox").fetchone()
            if left is not None and left[0] == 0:
                break
            time.sleep(0.1)
    drained = time.monotonic() - started
    stack.stop("dispatcher")  # py-spy ends when its process does
    spy.wait(timeout=30)
    say(f"  drained in {drained:.1f} s -> {out / 'profile-dispatcher.svg'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--seconds", type=float, default=PROFILE_SECONDS, help="API sampling time")
    p.add_argument("--messages", type=int, default=DRAIN_MESSAGES, help="messages to drain")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="sms-outbox-profile-"))
    with Stack(workdir, log_level="WARNING", sender_burst=10_000) as stack:
        stack.start_database()
        stack.build_env(DISPATCH_CONCURRENCY="64", DISPATCH_BATCH_SIZE="100")
        stack.start_simulator()
        with httpx.Client(base_url=stack.sim_url, timeout=60) as sim:
            sim.post("/_sim/config", json={"latency": 0.0}).raise_for_status()
        profile_api(stack, args.out, args.seconds)
        profile_dispatcher(stack, args.out, args.messages)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
