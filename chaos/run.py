"""One scenario from start to verdict: fresh database and simulator, services up, load with the
fault injected, heal, wait for quiescence, sweep if statuses lag, count."""

from __future__ import annotations

import asyncio
import random
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Any

import httpx

from chaos import observe
from chaos.client import Plan, recipients, send_all
from chaos.cluster import Cluster
from chaos.counts import count, examples
from chaos.nemesis import Context
from chaos.scenarios import Scenario

CLIENT_GRACE = 60.0  # seconds the load may run past its plan (client retries while a fault lasts)
# The sweep asks about a message STATUS_SWEEP_AFTER_SECONDS after its submission, on a pass every
# 10 s when idle (dispatcher/sweeper.py; older versions: every 60 s): wait that long on top.
SWEEP_GRACE = 75.0


@dataclass(frozen=True)
class Options:
    messages: int
    rate: float
    dispatchers: int
    provider_timeout: float
    seed: int
    max_wait: float
    lease_seconds: float
    sweep_after: float


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run_scenario(
    cluster: Cluster, scenario: Scenario, policy: str, opts: Options
) -> dict[str, Any]:
    """The JSON record of one scenario run (counts, timings, what the faults did)."""
    t0 = time.monotonic()
    # The same --seed repeats a scenario's bodies, faults and choices, whatever else runs with it.
    seed = opts.seed * 1000 + zlib.crc32(f"{scenario.name}/{policy}".encode()) % 1000
    record: dict[str, Any] = {
        "scenario": scenario.name,
        "policy": policy,
        "m": opts.messages,
        "dispatchers": opts.dispatchers,
        "provider_timeout": opts.provider_timeout,
        "seed": opts.seed,
    }
    async with httpx.AsyncClient(base_url=cluster.sim_url, timeout=60) as sim:
        await asyncio.to_thread(_fresh, cluster, policy)
        (await sim.post("/_sim/reset")).raise_for_status()  # a new process; reset all the same
        calm: dict[str, Any] = (await sim.get("/_sim/config")).json()
        faults = scenario.faults(opts.provider_timeout)
        (await sim.post("/_sim/config", json={**faults, "seed": seed})).raise_for_status()
        record["faults"] = faults
        await asyncio.to_thread(cluster.start_services)
        say(f"[{scenario.name}/{policy}] services up; sending {opts.messages} messages")

        plan = Plan(scenario.name, opts.messages, opts.rate, recipients(scenario.recipients), seed)
        load_seconds = opts.messages / opts.rate
        ctx = Context(
            cluster=cluster,
            sim=sim,
            rng=random.Random(seed),
            load_seconds=load_seconds,
            lease_seconds=opts.lease_seconds,
            queries=observe.queries(),
        )
        stop = asyncio.Event()
        chaos = asyncio.create_task(scenario.nemesis(ctx, stop)) if scenario.nemesis else None
        try:
            load = await send_all(
                cluster.api_url,
                cluster.api_key,
                plan,
                limit_seconds=load_seconds + CLIENT_GRACE,
            )
        finally:
            stop.set()
            if chaos is not None:
                async with asyncio.timeout(opts.lease_seconds + 120):
                    await chaos
        record["nemesis"] = dict(ctx.actions)
        record["load_seconds"] = round(load.seconds, 1)
        record["client"] = {
            "tries": load.tries,
            "replayed": load.replayed,
            "statuses": dict(sorted(load.statuses.items())),
        }

        # Heal: every fault back to the start-up value, every process running.
        (await sim.post("/_sim/config", json=_calm(calm, faults))).raise_for_status()
        await asyncio.to_thread(_heal, cluster)
        healed = time.monotonic()
        say(f"[{scenario.name}/{policy}] load done in {load.seconds:.0f} s; healed, waiting")
        quiet, waited = await observe.wait_quiet(
            cluster.database_url,
            sim,
            not_before=healed + scenario.linger(opts.provider_timeout),
            max_wait=opts.max_wait,
        )
        record["quiet"] = quiet
        record["quiet_seconds"] = round(waited, 1)

        sim_rows, _ = await observe.read_sim(sim)
        db = await asyncio.to_thread(observe.read_db, cluster.database_url)
        before = count(load.acks, sim_rows, db.messages)
        record["fidelity_at_quiet_pct"] = before.status_fidelity_pct
        lagging = observe.stale_statuses(db.messages, sim_rows)
        if lagging:  # final callbacks were lost: the status sweep has to find them out
            say(f"[{scenario.name}/{policy}] {lagging} statuses lag; waiting for the sweep")
            left, waited = await observe.wait_swept(
                cluster.database_url, sim, max_wait=opts.sweep_after + SWEEP_GRACE
            )
            record["sweep_seconds"] = round(waited, 1)
            lagging -= left
        record["swept"] = lagging
        sim_rows, totals = await observe.read_sim(sim)
        db = await asyncio.to_thread(observe.read_db, cluster.database_url)
        counts = count(
            load.acks,
            sim_rows,
            db.messages,
            outbox_message_ids=db.outbox_message_ids,
            detected_doubles=db.detected_doubles,
        )
        found = examples(load.acks, sim_rows, db.messages, outbox_message_ids=db.outbox_message_ids)
        if found:  # ids to look up in the process logs, which the run keeps when it fails
            record["examples"] = found
        record["provider_requests"] = totals.get("requests")
        record["provider_outcomes"] = {
            **(totals.get("outcomes") or {}),
            "hung": totals["hung"],
            "ingress_delayed": totals["ingress_delayed"],
        }
    record.update(counts.as_dict())
    record["seconds"] = round(time.monotonic() - t0, 1)
    return record


def _fresh(cluster: Cluster, policy: str) -> None:
    """Every process stopped, a fresh database, a fresh simulator (services not started yet)."""
    cluster.stop_services()
    cluster.fresh_database()
    cluster.env["RETRY_POLICY"] = policy
    cluster.start_simulator()


def _heal(cluster: Cluster) -> None:
    """SIGCONT what is paused; start what a fault left dead (the nemesis normally did)."""
    cluster.resume_all()
    if cluster.pid("api") is None:
        cluster.kill("api")  # forget the dead one
        cluster.start_api()
    for name in cluster.dispatcher_names():
        if cluster.pid(name) is None:
            cluster.kill(name)
            cluster.start_dispatcher_named(name)


def _calm(calm: dict[str, Any], faults: dict[str, Any]) -> dict[str, Any]:
    names = {*faults, "rate_limit_rate"}
    return {name: calm[name] for name in names if name in calm}
