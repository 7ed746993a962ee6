"""`python -m bench` (`make bench`): measure enqueue and dispatch beside this machine's limits
and pgqueuer, in one run, on an own embedded PostgreSQL; table to stdout, JSON to
bench/results/latest.json. Exit 1 when a correctness check failed (lost, duplicated or stuck
messages), so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

from bench import (
    batch,
    claim,
    dispatch,
    e2e,
    enqueue,
    growth,
    limits,
    pace,
    peer,
    pgbouncer,
    priority,
    report,
    seed,
    webhooks,
)
from bench.stack import Stack, free_port
from bench.stats import latency_ms, ratio, spread
from shared.logs import setup_logging

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
GROUPS = (
    "dispatch",
    "enqueue",
    "limits",
    "batch",
    "e2e",
    "pace",
    "priority",
    "claim",
    "webhooks",
    "pgbouncer",
    "growth",
)
DEFAULT_GROUPS = GROUPS[:-1]  # growth only when asked for
# Besides half load, one end-to-end run at each of these fractions of the concurrency-16 enqueue
# rate: the highest rate at which the latency targets hold on this machine (its API, dispatcher,
# simulator, database and load generator share the cores, so a faster API moves half load up
# past what the rest of the machine keeps up with).
E2E_SWEEP = (0.1, 0.2, 0.3, 0.4)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 run, small counts")
    p.add_argument("--runs", type=int, default=3, help="runs per figure (median, min-max)")
    p.add_argument(
        "--messages", type=int, default=20_000, help="messages per no-op and pgqueuer drain"
    )
    p.add_argument(
        "--sim-messages",
        type=int,
        default=5_000,
        help="messages per drain through the simulator (0 and 200 ms)",
    )
    p.add_argument("--enqueue-seconds", type=float, default=8.0, help="per enqueue run")
    p.add_argument("--e2e-seconds", type=float, default=10.0, help="per end-to-end run")
    p.add_argument("--concurrency", type=int, default=64, help="DISPATCH_CONCURRENCY")
    p.add_argument("--batch-size", type=int, default=100, help="DISPATCH_BATCH_SIZE")
    p.add_argument("--pgqueuer-batch", type=int, default=10, help="pgqueuer batch_size (default)")
    p.add_argument(
        "--batch-messages", type=int, default=500, help="messages per POST /sms/send/batch"
    )
    p.add_argument("--batch-clients", type=int, default=4, help="concurrent batch clients")
    p.add_argument(
        "--growth", action="store_true", help="also measure claim and drain with 0 and 1 M history"
    )
    p.add_argument("--growth-big", action="store_true", help="growth with 5 M history too")
    p.add_argument("--growth-claims", type=int, default=300, help="timed claims per growth run")
    p.add_argument("--growth-queue", type=int, default=10_000, help="due rows while claiming")
    p.add_argument(
        "--growth-retain",
        type=int,
        default=1_000_000,
        help="growth: messages in the retained day (DELETE vs partition drop; 0 = skip)",
    )
    p.add_argument(
        "--pace-seconds",
        type=float,
        default=60.0,
        help="pace: the steady window the achieved rate is measured over",
    )
    p.add_argument(
        "--pace-dispatchers", type=int, default=3, help="pace, priority: dispatcher processes"
    )
    p.add_argument(
        "--priority-backlog", type=int, default=10_000, help="priority: low messages queued"
    )
    p.add_argument(
        "--priority-samples", type=int, default=5, help="priority: high messages sent behind them"
    )
    p.add_argument("--claim-senders", type=int, default=1_000, help="claim cost: paced senders")
    p.add_argument("--claim-rows", type=int, default=100_000, help="claim cost: due rows")
    p.add_argument("--claim-runs", type=int, default=200, help="claim cost: timed claims of each")
    p.add_argument(
        "--sender-burst",
        type=int,
        default=seed.UNPACED_BURST,
        help="burst of the senders the bench registers at 10000 segments/s (drains, growth, claim"
        " cost); the API gives its own senders 10000 (SENDER_DEFAULT_MPS 10000)",
    )
    p.add_argument(
        "--only",
        default=",".join(DEFAULT_GROUPS),
        help=f"subset of {','.join(GROUPS)} (growth also with --growth)",
    )
    p.add_argument("--timeout", type=float, default=240.0, help="bound on each drain, seconds")
    p.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the measured processes")
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs) afterwards")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.messages, args.sim_messages = 1, 2_000, 1_000
        args.enqueue_seconds, args.e2e_seconds = 3.0, 3.0
        args.growth_claims, args.growth_retain = 50, min(args.growth_retain, 20_000)
        args.pace_seconds, args.priority_samples, args.claim_runs = 10.0, 3, 30
    args.only = [g.strip() for g in args.only.split(",") if g.strip()]
    args.growth = args.growth or args.growth_big
    if args.growth and "growth" not in args.only:
        args.only.append("growth")
    unknown = set(args.only) - set(GROUPS)
    if unknown:
        p.error(f"unknown --only groups: {', '.join(sorted(unknown))}")
    return args


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def log_to_file(path: Path, level: str) -> None:
    """In-process code (the no-op dispatcher, pgqueuer) logs as the services do, into a file."""
    setup_logging(level)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(path.open("a"))


def run_dispatch(stack: Stack, args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    n, url = args.messages, stack.database_url
    noop: list[float] = []
    pgq: list[float] = []
    for r in range(args.runs):
        d = asyncio.run(dispatch.drain_noop(stack, n, f"noop{r}", limit_seconds=args.timeout))
        problems += d.problems
        noop.append(d.rate)
        peer.clear(url)
        rate, found = asyncio.run(
            peer.drain(url, n, batch_size=args.pgqueuer_batch, limit_seconds=args.timeout)
        )
        peer.clear(url)
        problems += found
        pgq.append(rate)
        say(f"  run {r + 1}: no-op {d.rate:,.0f}/s, pgqueuer {rate:,.0f}/s")
    # Its /metrics says how long the provider calls took (SDK, HTTP and simulator), so the 200 ms
    # drain is also compared with what 64 slots can make at the calls' real length.
    metrics_port = free_port()
    stack.start_dispatcher(metrics_port=metrics_port)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    sims: dict[float, list[float]] = {0.0: [], 0.2: []}
    calls_200ms: list[float] = []
    for latency, rates in sims.items():
        for r in range(args.runs):
            tag = f"sim{latency * 1000:.0f}ms{r}"
            d = dispatch.drain_simulator(
                stack,
                args.sim_messages,
                tag,
                latency=latency,
                timeout=args.timeout,
                metrics_url=metrics_url,
            )
            problems += d.problems
            rates.append(d.rate)
            call = f", mean provider call {d.call_ms:g} ms" if d.call_ms is not None else ""
            say(f"  run {r + 1}: simulator {latency * 1000:.0f} ms {d.rate:,.0f}/s{call}")
            if latency == 0.2 and d.call_ms is not None:
                calls_200ms.append(d.call_ms)
    stack.stop("dispatcher")
    sdk: list[float] = []  # the same calls from the SDK alone, no database
    for r in range(args.runs):
        d = dispatch.sdk_loop(
            stack, args.sim_messages, f"sdk{r}", latency=0.2, concurrency=args.concurrency
        )
        problems += d.problems
        sdk.append(d.rate)
        say(f"  run {r + 1}: the SDK alone, simulator 200 ms, {d.rate:,.0f}/s")
    ceiling = args.concurrency / 0.2
    out = {
        "noop": spread(noop),
        "pgqueuer": spread(pgq),
        "sim_0ms": spread(sims[0.0]),
        "sim_200ms": spread(sims[0.2]),
        "ceiling_200ms": ceiling,
        "sdk_200ms": spread(sdk),
    }
    out["efficiency_vs_sdk"] = ratio(out["sim_200ms"]["median"], out["sdk_200ms"]["median"])
    out["sdk_vs_ceiling"] = ratio(out["sdk_200ms"]["median"], ceiling, 2)
    out["dispatch_vs_pgqueuer"] = ratio(out["noop"]["median"], out["pgqueuer"]["median"])
    out["latency_efficiency"] = ratio(out["sim_200ms"]["median"], ceiling)
    if calls_200ms:
        out["call_ms_200ms"] = spread(calls_200ms, 1)
        call_ceiling = args.concurrency / (out["call_ms_200ms"]["median"] / 1000)
        out["call_ceiling_200ms"] = round(call_ceiling, 1)
        out["efficiency_vs_call"] = ratio(out["sim_200ms"]["median"], call_ceiling)
    return out


def run_enqueue(stack: Stack, args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    secs, url = args.enqueue_seconds, stack.database_url
    stack.start_api()
    workers = stack.api_workers()
    one_worker: list[enqueue.Load] = []  # the same c16 load through 1 API worker, when 2+
    loads: dict[int, list[enqueue.Load]] = {16: [], 64: []}
    bench_rates: list[float] = []
    minimal_rates: list[float] = []
    pgq_rates: list[float] = []

    def one(r: int) -> None:
        load = enqueue.one_worker_load(stack, seconds=secs, tag=f"api1w{r}")
        problems.extend(load.problems)
        one_worker.append(load)
        say(
            f"  run {r + 1}: API c16 with 1 worker (not {workers}) {load.rate:,.0f}/s"
            f" p99 {load.latency['p99_ms']} ms"
        )

    for r in range(args.runs):
        # 1 worker and the default's take turns being first, each right beside the other's c16.
        if workers > 1 and r % 2 == 1:
            one(r)
        for c, runs in loads.items():
            load = asyncio.run(
                enqueue.api_load(stack, concurrency=c, seconds=secs, tag=f"api{c}r{r}")
            )
            problems += load.problems
            runs.append(load)
            say(f"  run {r + 1}: API c{c} {load.rate:,.0f}/s p99 {load.latency['p99_ms']} ms")
            if c == 16 and workers > 1 and r % 2 == 0:
                one(r)
        tps, found = enqueue.pgbench(stack, clients=16, seconds=secs, workdir=stack.workdir)
        problems += found
        bench_rates.append(tps)
        least, found = enqueue.pgbench(
            stack, clients=16, seconds=secs, workdir=stack.workdir, minimal=True
        )
        problems += found
        minimal_rates.append(least)
        say(f"  run {r + 1}: pgbench minimal write (message + outbox row) {least:,.0f}/s")
        peer.clear(url)
        rate = asyncio.run(peer.enqueue(url, tasks=16, seconds=secs))
        peer.clear(url)
        pgq_rates.append(rate)
        say(f"  run {r + 1}: pgbench {tps:,.0f}/s, pgqueuer enqueue {rate:,.0f}/s")
    stack.stop("api")
    out: dict[str, Any] = {}
    for c, runs in loads.items():
        s = spread([x.rate for x in runs])
        s["p50_ms"] = spread([x.latency["p50_ms"] for x in runs], 2)
        s["p99_ms"] = spread([x.latency["p99_ms"] for x in runs], 2)
        out[f"api_c{c}"] = s
    out["api_workers"] = workers
    if one_worker:
        s = spread([x.rate for x in one_worker])
        s["p50_ms"] = spread([x.latency["p50_ms"] for x in one_worker], 2)
        s["p99_ms"] = spread([x.latency["p99_ms"] for x in one_worker], 2)
        out["api_c16_one_worker"] = s
    out["pgbench_c16"] = spread(bench_rates)
    out["pgbench_minimal_c16"] = spread(minimal_rates)
    # How many times the least durable write (one message + one outbox row) ours costs.
    out["write_amplification"] = ratio(
        out["pgbench_minimal_c16"]["median"], out["pgbench_c16"]["median"]
    )
    out["pgqueuer_c16"] = spread(pgq_rates)
    api16 = out["api_c16"]["median"]
    out["enqueue_ratio"] = ratio(api16, out["pgbench_c16"]["median"])
    out["enqueue_vs_pgqueuer"] = ratio(api16, out["pgqueuer_c16"]["median"])
    if one_worker:  # what the default's worker processes gain over one
        out["enqueue_workers_ratio"] = ratio(api16, out["api_c16_one_worker"]["median"])
    return out


def run_e2e(
    stack: Stack, args: argparse.Namespace, c16_rate: float, problems: list[str]
) -> dict[str, Any]:
    rate = max(c16_rate / 2, 1.0)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        seed.clear_messages(conn)  # the enqueue runs' leftovers must not reach the simulator
    stack.start_api()
    stack.start_dispatcher()
    p50: list[float] = []
    p99: list[float] = []
    achieved: list[float] = []
    stage_p50: dict[str, list[float]] = {}
    stage_p99: dict[str, list[float]] = {}
    for r in range(args.runs):
        stages: dict[str, list[float]] = {}
        lat, got, found = e2e.run(
            stack,
            rate=rate,
            seconds=args.e2e_seconds,
            tag=f"e2e{r}",
            drain_timeout=args.timeout,
            stages=stages,
        )
        for stage, seconds in stages.items():
            each = latency_ms(seconds)
            stage_p50.setdefault(stage, []).append(each["p50_ms"])
            stage_p99.setdefault(stage, []).append(each["p99_ms"])
        problems += found
        summary = latency_ms(lat)
        p50.append(summary["p50_ms"])
        p99.append(summary["p99_ms"])
        achieved.append(got)
        say(f"  run {r + 1}: {got:,.0f}/s p50 {summary['p50_ms']} ms p99 {summary['p99_ms']} ms")
    sweep = [
        _e2e_at(stack, args, max(c16_rate * f, 1.0), f"e2s{i}", problems)
        for i, f in enumerate(E2E_SWEEP)
    ]
    stack.stop("dispatcher")
    stack.stop("api")
    return {
        "sweep": sweep,
        "within_targets_rate": within_targets(sweep),
        "rate": round(rate, 1),
        "achieved_rate": spread(achieved),
        "p50_ms": spread(p50, 2),
        "p99_ms": spread(p99, 2),
        "stages": {
            stage: {"p50_ms": spread(stage_p50[stage], 2), "p99_ms": spread(stage_p99[stage], 2)}
            for stage in e2e.STAGES
            if stage in stage_p50
        },
    }


def _e2e_at(
    stack: Stack, args: argparse.Namespace, rate: float, tag: str, problems: list[str]
) -> dict[str, Any]:
    """One end-to-end run at `rate`: its p50 and p99."""
    lat, got, found = e2e.run(
        stack, rate=rate, seconds=args.e2e_seconds, tag=tag, drain_timeout=args.timeout
    )
    problems += found
    summary = latency_ms(lat)
    say(f"  at {rate:,.0f}/s: p50 {summary['p50_ms']} ms p99 {summary['p99_ms']} ms")
    return {"rate": round(rate, 1), "achieved_rate": round(got, 1), **summary}


def within_targets(sweep: Sequence[dict[str, Any]]) -> float | None:
    """The highest swept rate whose p50 and p99 both meet the end-to-end targets (None: none)."""
    p50, p99 = report.TARGETS["e2e_p50_ms"][1], report.TARGETS["e2e_p99_ms"][1]
    met = [s["rate"] for s in sweep if s["p50_ms"] <= p50 and s["p99_ms"] <= p99]
    return max(met, default=None)


def not_measured(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, str]:
    """Each group (and the 5 M growth point) left out of this run, with the reason."""
    out = {name: "not in --only" for name in GROUPS if name not in args.only and name != "growth"}
    if "growth" not in args.only:
        out["growth"] = "only with --growth (0 and 1 M history) or --growth-big (also 5 M)"
    elif result.get("growth", {}).get("not_measured_5m"):
        out["growth_5m"] = result["growth"]["not_measured_5m"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def terminate(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through Stack.__exit__: everything stops

    signal.signal(signal.SIGTERM, terminate)
    workdir = Path(tempfile.mkdtemp(prefix="sms-outbox-bench-"))
    problems: list[str] = []
    t0 = time.monotonic()
    result: dict[str, Any] = {}
    try:
        with Stack(workdir, log_level=args.log_level, sender_burst=args.sender_burst) as stack:
            say(f"bench: work dir {workdir}; starting embedded PostgreSQL")
            stack.start_database()
            stack.build_env(
                DISPATCH_CONCURRENCY=str(args.concurrency),
                DISPATCH_BATCH_SIZE=str(args.batch_size),
                WEBHOOK_ALLOW_PRIVATE_URLS="true",  # the webhooks group's loopback receiver
            )
            log_to_file(workdir / "bench-inprocess.log", args.log_level)
            result["machine"] = report.machine(stack.server_version())
            result["pgqueuer_version"] = asyncio.run(peer.install(stack.database_url))
            stack.start_simulator()
            if "dispatch" in args.only:
                say(
                    f"dispatch: draining {args.messages:,} messages per run"
                    f" ({args.sim_messages:,} through the simulator)"
                )
                result["dispatch"] = run_dispatch(stack, args, problems)
            if "enqueue" in args.only:
                say(f"enqueue: {args.enqueue_seconds:g} s per run")
                result["enqueue"] = run_enqueue(stack, args, problems)
            if "limits" in args.only:
                say(
                    f"limits: POST /sms/send by a key without limits and one with all three,"
                    f" taking turns, {args.enqueue_seconds:g} s per run"
                )
                result["limits"] = limits.run(stack, args, problems)
            if "batch" in args.only:
                say(
                    f"batch: {args.batch_clients} clients x {args.batch_messages} messages per"
                    f" request, {args.enqueue_seconds:g} s per run"
                )
                result["batch"] = batch.run(stack, args, problems)
            if "e2e" in args.only:
                # Half load as issue 15 defines it: half the rate of POST /sms/send at
                # concurrency 16 (concurrency 64 can be faster: its key reads and groups are
                # larger).
                c16 = result.get("enqueue", {}).get("api_c16", {}).get("median")
                if not c16:  # enqueue not measured in this run: find it quickly
                    stack.start_api()
                    load = asyncio.run(
                        enqueue.api_load(stack, concurrency=16, seconds=3, tag="probe")
                    )
                    stack.stop("api")
                    c16 = load.rate
                say(f"end-to-end: at half the enqueue rate at concurrency 16 ({c16:,.0f}/s)")
                result["e2e"] = run_e2e(stack, args, c16, problems)
            if "pace" in args.only:
                say(
                    f"pace: senders at their pace, {args.pace_dispatchers} dispatchers, the"
                    f" simulator enforcing it; rate over {args.pace_seconds:g} s"
                )
                result["pace"] = pace.run(stack, args, problems)
            if "priority" in args.only:
                say(
                    f"priority: high messages behind {args.priority_backlog:,} low ones, one sender"
                    f" at {priority.MPS:g} segments/s"
                )
                result["priority"] = priority.run(stack, args, problems)
            if "claim" in args.only:
                say(
                    f"claim cost: paced claim vs the pre-pacing claim, {args.claim_senders:,}"
                    f" senders, {args.claim_rows:,} due rows"
                )
                result["claim"] = claim.run(stack, args, problems)
            if "webhooks" in args.only:
                say(
                    f"webhooks: delivery rate to a local receiver (1 and 3 endpoints) vs"
                    f" dispatch; e2e latency with a dead endpoint holding {webhooks.DEAD_BACKLOG:,}"
                    " deliveries"
                )
                result["webhooks"] = webhooks.run(
                    stack, args, problems, result.get("e2e", {}).get("rate")
                )
            if "pgbouncer" in args.only:
                say(
                    "pgbouncer: enqueue (16 clients) and dispatch (simulator 0 ms) through"
                    " PgBouncer (transaction pooling) vs direct, taking turns"
                )
                result["pgbouncer"] = pgbouncer.run(stack, args, problems)
            if "growth" in args.only:
                say("growth: claim latency and drain rate with history already in the database")
                result["growth"] = growth.run(stack, args, problems)
            result["memory"] = {
                f"{role}_mb": round(peak / 2**20, 1)
                for role, peak in sorted(stack.memory.peaks.items())
            }
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result["config"] = {
        "runs": args.runs,
        "quick": args.quick,
        "messages": args.messages,
        "sim_messages": args.sim_messages,
        "enqueue_seconds": args.enqueue_seconds,
        "e2e_seconds": args.e2e_seconds,
        "concurrency": args.concurrency,
        "batch_size": args.batch_size,
        "pgqueuer_batch": args.pgqueuer_batch,
        "batch_messages": args.batch_messages,
        "batch_clients": args.batch_clients,
        "growth_big": args.growth_big,
        "growth_claims": args.growth_claims,
        "growth_queue": args.growth_queue,
        "growth_retain": args.growth_retain,
        "pace_seconds": args.pace_seconds,
        "pace_dispatchers": args.pace_dispatchers,
        "priority_backlog": args.priority_backlog,
        "priority_samples": args.priority_samples,
        "claim_senders": args.claim_senders,
        "claim_rows": args.claim_rows,
        "claim_runs": args.claim_runs,
        "sender_default_mps": seed.UNPACED_MPS,
        "sender_burst": args.sender_burst,
        "log_level": args.log_level,
        "simulator_callbacks": False,
        "wall_seconds": round(time.monotonic() - t0, 1),
    }
    d, e, x = result.get("dispatch", {}), result.get("enqueue", {}), result.get("e2e", {})
    b, g = result.get("batch", {}), result.get("growth", {})
    pc, pr, c = result.get("pace", {}), result.get("priority", {}), result.get("claim", {})
    lim, wh = result.get("limits", {}), result.get("webhooks", {})
    flat = {
        "enqueue_ratio": e.get("enqueue_ratio"),
        "enqueue_vs_pgqueuer": e.get("enqueue_vs_pgqueuer"),
        "write_amplification": e.get("write_amplification"),
        "enqueue_workers_ratio": e.get("enqueue_workers_ratio"),
        "api_c16_p99_ms": e.get("api_c16", {}).get("p99_ms", {}).get("median"),
        "dispatch_vs_pgqueuer": d.get("dispatch_vs_pgqueuer"),
        "latency_efficiency": d.get("latency_efficiency"),
        "efficiency_vs_call": d.get("efficiency_vs_call"),
        "efficiency_vs_sdk": d.get("efficiency_vs_sdk"),
        "e2e_p50_ms": x.get("p50_ms", {}).get("median"),
        "e2e_p99_ms": x.get("p99_ms", {}).get("median"),
        "batch_ratio": b.get("batch_ratio"),
        "claim_growth_ratio": g.get("claim_growth_ratio"),
        "claim_growth_ratio_5m": g.get("claim_growth_ratio_5m"),
        "pace_rate_ratio": pc.get("rate_ratio"),
        "pace_window_excess": pc.get("window_excess"),
        "pace_refused_429": pc.get("refused_429"),
        "priority_high_max_ms": pr.get("max_ms"),
        "claim_pace_ratio": c.get("claim_pace_ratio"),
        "claim_idle_ratio": c.get("claim_idle_ratio"),
        "limits_ratio": lim.get("limits_ratio"),
        "webhook_vs_dispatch_ratio": wh.get("webhook_vs_dispatch_ratio"),
        "dead_endpoint_latency_ratio": wh.get("dead_endpoint_latency_ratio"),
        "dead_endpoint_latency_ratio_at_e2e_rate": wh.get(
            "dead_endpoint_latency_ratio_at_e2e_rate"
        ),
        "pgbouncer_enqueue_ratio": result.get("pgbouncer", {}).get("pgbouncer_enqueue_ratio"),
        "pgbouncer_dispatch_ratio": result.get("pgbouncer", {}).get("pgbouncer_dispatch_ratio"),
    }
    result["ratios"] = {k: v for k, v in flat.items() if "ms" not in k and k not in report.COUNTS}
    result["targets"] = report.check_targets(flat)
    result["not_measured"] = not_measured(args, result)
    result["problems"] = problems
    report.write_json(result, args.output)
    print(report.table(result))
    say(f"bench: {time.monotonic() - t0:.0f} s; JSON in {args.output}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
