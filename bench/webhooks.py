"""Webhooks (issue 14): how fast status webhooks reach a local receiver beside the SMS dispatch
rate, and what a dead endpoint with a deep backlog does to end-to-end SMS latency.

* Capacity (`webhook_vs_dispatch_ratio`, issue 14's "webhooks keep up"): how fast one dispatcher
  drains N webhook deliveries due at once to a receiver in this process (an asyncio HTTP server in
  a thread that answers 204 and records when each POST arrived), against how fast the same
  dispatcher drains N messages through the simulator with no endpoint; each rate is N - 1 over
  first -> last (POST arrival; `submitted_at`), so neither includes the wait for the first claim.
  Taken in turns, and the ratio is the median of each run's ratio.
* Alongside: 1, then 3 endpoints for the bench's key. N messages of that key are seeded at one
  commit (database clock) and drained by the dispatcher through the simulator, their `sent`
  webhooks made as they go; the dispatch rate is N over commit -> last `submitted_at`, the webhook
  rate is the deliveries received over commit -> last delivery received (same machine clock). A
  message's webhook cannot arrive before its send, so this ratio stays below 1; `lag_ms` (last
  webhook after last send) says how far behind the webhooks finish.
* Dead endpoint: one endpoint on a loopback port nothing listens on (connection refused), holding
  10,000 pending deliveries (inserted due now, as the fan-out inserts them; the dispatcher finds
  the endpoint dead and parks them before the load starts), then the end-to-end measurement of
  bench.e2e (202 -> simulator at a fixed arrival rate); against the same with no endpoint at
  all, in turns, each run on a dispatcher started afresh and warmed up by WARM_SECONDS of the
  same load. The messages sent meanwhile fan out to the dead endpoint too (after their SMS
  transactions commit, in the dispatcher's webhook loop: migration 0016).
  `dead_endpoint_latency_ratio` is the median of each run's p50 ratio (dead / none), at half the
  e2e figure's rate (a quarter of the HTTP enqueue capacity): on the bench's 2 cores, which run
  PostgreSQL, the API, the dispatcher, the simulator and the load together, the e2e figure's own
  rate is at the knee (its p50 is queueing), where any added work multiplies latency, and the
  ratio measured noise (1.2 to 14 between runs of one commit). The same ratio at the e2e rate is
  reported beside it (`dead_endpoint_latency_ratio_at_e2e_rate`), without a target.
  Both sides run over a history (HISTORY delivered messages, analyzed, as bench.limits does), and
  each run removes only its own messages: on the emptied tables the other groups start from, the
  plans of the SMS path read sms_messages whole until autovacuum analyzed it, at a moment that
  varied from run to run and moved the p50 of one side by a fifth (4.9-7.2 ms in one run), which
  hid a real cost of the dead endpoint (the dispatcher's replanning, 2026-12-06: shared.db).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import sys
import threading
import time
from datetime import datetime
from typing import Any

import httpx
import psycopg

from bench import enqueue, growth, seed
from bench.dispatch import check_simulator
from bench.enqueue import send_at_rate
from bench.stack import SENDER, Stack, free_port
from bench.stats import latency_ms, ratio, spread

DEAD_BACKLOG = 10_000
# Messages per rate run: about 10 s of webhooks at 3 endpoints on 2 vCPUs, so the group takes
# ~2-3 minutes with 3 runs.
RATE_MESSAGES = 1_000
# Per capacity run, each side: a few seconds of either at this machine's rates.
CAPACITY_MESSAGES = 3_000
POLL = 0.05
# Load before each latency run, not measured, on a dispatcher started afresh (measure_latency).
WARM_SECONDS = 3.0
# Pairs (no webhooks, dead endpoint) of the latency comparison with a goal, at the least.
LATENCY_PAIRS = 6
# Delivered messages under the latency comparison (bench.limits': 10 to each recipient).
HISTORY = 100_000
SECRET = "whsec_" + base64.b64encode(b"sms-outbox bench webhook secret!").decode()

DEAD_BACKLOG_SQL = """
WITH made AS (
    INSERT INTO sms_webhook_deliveries (endpoint_id, event_type, payload, occurred_at)
    SELECT %(endpoint)s, 'message.queued',
           jsonb_build_object(
               'type', 'message.queued',
               'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'data', jsonb_build_object('id', gen_random_uuid(), 'status', 'queued',
                                          'previous_status', 'sending', 'direction', 'outbound')),
           now()
    FROM generate_series(1, %(n)s)
    RETURNING id
)
INSERT INTO sms_outbox (kind, webhook_delivery_id)
SELECT 'deliver_webhook', made.id FROM made
"""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Receiver:
    """A minimal HTTP/1.1 keep-alive server on loopback: 204 to every request, arrival times."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: list[float] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-receiver", daemon=True)
        self._server: asyncio.Server | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{name}"

    def __enter__(self) -> Receiver:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("webhook receiver did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def reset(self) -> None:
        self.arrivals = []

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, backlog=1024)
        )
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                self.arrivals.append(time.time())
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        writer.close()


def _key_id(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT id FROM sms_api_keys WHERE name = 'bench' ORDER BY id LIMIT 1")
    found = row.fetchone()
    assert found is not None
    return int(found[0])


def _drop_endpoints(conn: psycopg.Connection[Any]) -> None:
    """Every endpoint and its deliveries; the webhook loop may be settling some of them at the
    same time (a deadlock, which PostgreSQL breaks by failing one side), so retried."""
    for attempt in range(10):
        try:
            conn.execute("DELETE FROM sms_webhook_endpoints")
            return
        except psycopg.errors.DeadlockDetected:
            if attempt == 9:
                raise
            time.sleep(0.2)


def _set_endpoints(conn: psycopg.Connection[Any], urls: list[str]) -> list[int]:
    """Exactly these endpoints (all events, enabled) for the bench's key; their ids."""
    key = _key_id(conn)
    _drop_endpoints(conn)
    ids = []
    for url in urls:
        row = conn.execute(
            "INSERT INTO sms_webhook_endpoints (api_key_id, url, secret) VALUES (%s, %s, %s)"
            " RETURNING id",
            (key, url, SECRET),
        ).fetchone()
        assert row is not None
        ids.append(int(row[0]))
    return ids


def _count(conn: psycopg.Connection[Any], sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _wait(conn: psycopg.Connection[Any], sql: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _count(conn, sql) == 0:
            return True
        time.sleep(POLL)
    return False


SENDS_LEFT = "SELECT count(*) FROM sms_outbox WHERE kind = 'send_sms'"
# 0 once the dead endpoint is parked: none of its deliveries is leased or due.
DEAD_PARKED = """
SELECT CASE WHEN EXISTS (SELECT 1 FROM sms_webhook_endpoints WHERE parked_until > now())
            THEN (SELECT count(*) FROM sms_outbox
                  WHERE kind = 'deliver_webhook' AND (state = 'leased' OR next_attempt_at <= now()))
            ELSE -1 END
"""
# Webhook work left: deliveries in the outbox, and events the fan-out (migration 0016) has not
# made into deliveries yet (read through sms_message_events_fanout_idx, whose predicate this
# repeats).
HOOKS_LEFT = """
SELECT (SELECT count(*) FROM sms_outbox WHERE kind = 'deliver_webhook')
     + (SELECT count(*)
        FROM sms_webhook_fanout f
        JOIN sms_message_events e
          ON (e.xact, e.id) > (f.xact, f.event_id)
         AND e.xact IS NOT NULL AND e.message_id IS NOT NULL
         AND (e.event_type = 'received'
              OR (e.event_type IN ('transition', 'canceled')
                  AND e.to_status IN ('queued', 'sent', 'delivered', 'undelivered', 'failed',
                                      'expired', 'canceled', 'read'))))
"""


def measure_rate(
    stack: Stack, receiver: Receiver, endpoints: int, n: int, tag: str, timeout: float
) -> tuple[dict[str, Any], list[str]]:
    """Seed n messages of the bench's key with `endpoints` endpoints; both rates."""
    label = f"webhooks {endpoints} endpoint(s)"
    with httpx.Client(base_url=stack.sim_url, timeout=60) as sim:
        sim.post("/_sim/reset").raise_for_status()
        sim.post("/_sim/config", json={"latency": 0.0}).raise_for_status()
    receiver.reset()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        seed.clear_messages(conn)
        _set_endpoints(conn, [receiver.url(f"{tag}-{j}") for j in range(endpoints)])
        key = _key_id(conn)
        with conn.transaction():  # one commit: the key is set before the dispatcher sees them
            seed.seed_messages(conn, n, tag, sender=SENDER, burst=stack.sender_burst)
            conn.execute("UPDATE sms_messages SET api_key_id = %s", (key,))
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        start: datetime = row[0]
        conn.execute(seed.WAKEUP)
        sent = _wait(conn, SENDS_LEFT, timeout)
        delivered = _wait(conn, HOOKS_LEFT, timeout)
        state = seed.drain_state(conn)
        hooks = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE state = 'delivered')"
            " FROM sms_webhook_deliveries"
        ).fetchone()
    assert hooks is not None
    with httpx.Client(base_url=stack.sim_url, timeout=60) as sim:
        report = sim.get("/_sim/messages").json()
    problems = [] if sent else [f"{label}: sends not drained within {timeout:.0f} s"]
    if not delivered:
        problems.append(f"{label}: webhooks not delivered within {timeout:.0f} s")
    problems += check_simulator(report, {seed.body(tag, i) for i in range(n)}, label)
    total, ok = int(hooks[0]), int(hooks[1])
    time.sleep(0.2)  # the last 204s are written before their rows are settled; let them land
    got = len(receiver.arrivals)
    if total != n * endpoints or ok != total or got != total:
        problems.append(
            f"{label}: {total} deliveries for {n} messages x {endpoints}, {ok} delivered,"
            f" {got} received"
        )
    t0 = start.timestamp()
    dispatch_s = state["last_submitted"].timestamp() - t0
    webhook_s = max(receiver.arrivals) - t0 if receiver.arrivals else float("nan")
    out = {
        "messages": n,
        "endpoints": endpoints,
        "deliveries": got,
        "dispatch_rate": round(n / dispatch_s, 1),
        "webhook_rate": round(got / webhook_s, 1),
        "dispatch_seconds": round(dispatch_s, 3),
        "webhook_seconds": round(webhook_s, 3),
        "lag_ms": round((webhook_s - dispatch_s) * 1000, 1),
    }
    out["ratio"] = ratio(out["webhook_rate"], out["dispatch_rate"])
    return out, problems


BACKLOG_SQL = DEAD_BACKLOG_SQL  # the same rows, to whichever endpoint


def measure_capacity(
    stack: Stack, receiver: Receiver, n: int, tag: str, timeout: float
) -> tuple[dict[str, Any], list[str]]:
    """One dispatcher draining n due webhook deliveries (one endpoint), then n messages (no
    endpoint): both rates over first -> last."""
    label = "webhooks capacity"
    problems: list[str] = []
    receiver.reset()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        seed.clear_messages(conn)
        (endpoint,) = _set_endpoints(conn, [receiver.url(tag)])
        conn.execute(BACKLOG_SQL, {"endpoint": endpoint, "n": n})
        if not _wait(conn, HOOKS_LEFT, timeout):
            problems.append(f"{label}: {n} deliveries not drained within {timeout:.0f} s")
        hooks = conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'delivered') FROM sms_webhook_deliveries"
        ).fetchone()
        _drop_endpoints(conn)
    time.sleep(0.2)  # the last 204s are written before their rows are settled; let them land
    arrivals = sorted(receiver.arrivals)
    if hooks is None or int(hooks[0]) != n or len(arrivals) != n:
        problems.append(f"{label}: {n} deliveries, {hooks} delivered, {len(arrivals)} received")
    with httpx.Client(base_url=stack.sim_url, timeout=60) as sim:
        sim.post("/_sim/reset").raise_for_status()
        sim.post("/_sim/config", json={"latency": 0.0}).raise_for_status()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        seed.clear_messages(conn)
        with conn.transaction():
            seed.seed_messages(conn, n, tag, sender=SENDER, burst=stack.sender_burst)
        conn.execute(seed.WAKEUP)
        if not _wait(conn, SENDS_LEFT, timeout):
            problems.append(f"{label}: sends not drained within {timeout:.0f} s")
        row = conn.execute(
            "SELECT min(submitted_at), max(submitted_at) FROM sms_messages"
        ).fetchone()
    assert row is not None
    with httpx.Client(base_url=stack.sim_url, timeout=60) as sim:
        report = sim.get("/_sim/messages").json()
    problems += check_simulator(report, {seed.body(tag, i) for i in range(n)}, label)
    webhook_s = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    dispatch_s = (row[1] - row[0]).total_seconds() if row[0] and row[1] else float("nan")
    out = {
        "webhook_rate": round((n - 1) / webhook_s, 1),
        "dispatch_rate": round((n - 1) / dispatch_s, 1),
    }
    out["ratio"] = ratio(out["webhook_rate"], out["dispatch_rate"])
    return out, problems


def measure_latency(
    stack: Stack, *, rate: float, seconds: float, tag: str, dead: bool, timeout: float
) -> tuple[dict[str, float], float, list[str]]:
    """bench.e2e's measurement, with (dead) or without the dead endpoint and its backlog."""
    label = f"webhooks e2e {'dead endpoint' if dead else 'no webhooks'}"
    problems: list[str] = []
    # Both sides start alike: a dispatcher started afresh, then WARM_SECONDS of the same load,
    # not measured. The dead side's restart (below, to drop its backlog) used to leave only the
    # other side a cold dispatcher, whose first seconds put that side's p99 at 90-200 ms
    # against 35-50 ms.
    stack.stop("dispatcher")
    stack.start_dispatcher()
    send_at_rate(stack, rate=rate, seconds=WARM_SECONDS, tag=f"{tag}warm")
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        if not _wait(conn, SENDS_LEFT, timeout):
            problems.append(f"{label}: warm-up sends not drained within {timeout:.0f} s")
    with httpx.Client(base_url=stack.sim_url, timeout=60) as sim:
        sim.post("/_sim/reset").raise_for_status()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        forget_own(conn)
        if dead:
            (endpoint,) = _set_endpoints(conn, [f"http://127.0.0.1:{free_port()}/dead"])
            conn.execute(DEAD_BACKLOG_SQL, {"endpoint": endpoint, "n": DEAD_BACKLOG})
            # An endpoint holding a backlog has been failing for a while: the dispatcher has
            # found it dead and parked its deliveries (migration 0013) before the SMS load
            # starts. Finding it out is a one-off (the first failed POSTs, one rewrite of the
            # backlog), not the steady state this figure compares.
            if not _wait(conn, DEAD_PARKED, timeout):
                problems.append(f"{label}: the dead endpoint was not parked within {timeout:.0f} s")
        else:
            _set_endpoints(conn, [])
        # Both sides alike: vacuumed and analyzed with their endpoints (and the dead side's
        # backlog) in place, the same statement on each side.
        conn.execute("VACUUM ANALYZE sms_outbox, sms_webhook_deliveries")
    outcome = send_at_rate(stack, rate=rate, seconds=seconds, tag=tag)
    other = {s: c for s, c in outcome.statuses.items() if s != 202}
    if other or outcome.errors:
        problems.append(f"{label}: non-202 replies {other}, errors {outcome.errors[:5]}")
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        if not _wait(conn, SENDS_LEFT, timeout):
            problems.append(f"{label}: sends not drained within {timeout:.0f} s")
        pending = _count(
            conn, "SELECT count(*) FROM sms_webhook_deliveries WHERE state = 'pending'"
        )
        if dead:  # dropping the backlog while the webhook loop churns it can deadlock
            stack.stop("dispatcher")
            _drop_endpoints(conn)  # its backlog goes with it
            stack.start_dispatcher()
    with httpx.Client(base_url=stack.sim_url, timeout=60) as sim:
        report: dict[str, Any] = sim.get("/_sim/messages").json()
    bodies = {seed.body(tag, r.index): r.wall for r in outcome.ok}
    problems += check_simulator(report, set(bodies), label)
    latencies = [
        datetime.fromisoformat(m["created_at"]).timestamp() - bodies[m["body"]]
        for m in report["messages"]
        if m["body"] in bodies
    ]
    summary = latency_ms(latencies)
    summary["webhooks_pending_after"] = pending
    got = len(outcome.replies) / outcome.seconds if outcome.seconds else 0.0
    return summary, got, problems


def run(
    stack: Stack, args: argparse.Namespace, problems: list[str], e2e_rate: float | None = None
) -> dict[str, Any]:
    """Rates with 1 and 3 endpoints, then e2e latency with no webhooks vs a dead endpoint."""
    n = min(args.sim_messages, RATE_MESSAGES)
    out: dict[str, Any] = {"dead_backlog": DEAD_BACKLOG}
    stack.start_dispatcher()
    with Receiver() as receiver:
        caps = []
        for r in range(args.runs):
            got, found = measure_capacity(
                stack, receiver, CAPACITY_MESSAGES, f"whc{r}", args.timeout
            )
            problems += found
            caps.append(got)
            say(
                f"  run {r + 1}: capacity: webhooks {got['webhook_rate']:,.0f}/s,"
                f" dispatch {got['dispatch_rate']:,.0f}/s, ratio {got['ratio']}"
            )
        out["capacity"] = {
            "messages": CAPACITY_MESSAGES,
            "webhook_rate": spread([g["webhook_rate"] for g in caps]),
            "dispatch_rate": spread([g["dispatch_rate"] for g in caps]),
            "ratio": spread([g["ratio"] or 0.0 for g in caps], 3),
        }
        for endpoints in (1, 3):
            rates = []
            for r in range(args.runs):
                got, found = measure_rate(
                    stack, receiver, endpoints, n, f"wh{endpoints}r{r}", args.timeout
                )
                problems += found
                rates.append(got)
                say(
                    f"  run {r + 1}: {endpoints} endpoint(s):"
                    f" dispatch {got['dispatch_rate']:,.0f}/s,"
                    f" webhooks {got['webhook_rate']:,.0f}/s, ratio {got['ratio']},"
                    f" lag {got['lag_ms']:,.0f} ms"
                )
            out[f"endpoints_{endpoints}"] = {
                "dispatch_rate": spread([g["dispatch_rate"] for g in rates]),
                "webhook_rate": spread([g["webhook_rate"] for g in rates]),
                "ratio": spread([g["ratio"] or 0.0 for g in rates], 3),
                "deliveries_per_run": rates[0]["deliveries"],
                "lag_ms": spread([g["lag_ms"] for g in rates], 1),
            }
    stack.start_api()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        _set_endpoints(conn, [])  # the rate runs' endpoints: the probe is the API's, without them
    if e2e_rate is None:
        load = asyncio.run(enqueue.api_load(stack, concurrency=16, seconds=3, tag="whprobe"))
        e2e_rate = max(load.rate / 2, 1.0)
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            # The probe's messages are sent before the first run resets the simulator: a send
            # still in flight then would count as a message the run never made.
            if not _wait(conn, SENDS_LEFT, args.timeout):
                problems.append(
                    f"webhooks e2e probe: sends not drained within {args.timeout:.0f} s"
                )
    out["e2e_rate"] = round(e2e_rate / 2, 1)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        history_seconds = growth.insert_history(conn, 0, HISTORY)
        # The history's events are webhook-worthy: the fan-out's cursor passes them (no endpoint
        # wants them) before the dead endpoint may be made.
        if not _wait(conn, HOOKS_LEFT, args.timeout):
            problems.append(
                f"webhooks history: the fan-out did not pass it in {args.timeout:.0f} s"
            )
    say(f"  {HISTORY:,} messages of history written in {history_seconds:.0f} s")
    out["history"] = HISTORY
    out.update(
        dead_endpoint_latency(
            stack,
            args,
            problems,
            e2e_rate / 2,
            pairs=args.runs if args.quick else latency_pairs(args.runs),
        )
    )
    at_e2e = dead_endpoint_latency(stack, args, problems, e2e_rate, pairs=args.runs)
    stack.stop("api")
    stack.stop("dispatcher")
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        seed.clear_messages(conn)  # later groups start from an empty history
    out["at_e2e_rate"] = {"e2e_rate": round(e2e_rate, 1), **at_e2e}
    out["dead_endpoint_latency_ratio_at_e2e_rate"] = at_e2e["dead_endpoint_latency_ratio"]
    out["webhook_vs_dispatch_ratio"] = out["capacity"]["ratio"]["median"]
    out["alongside_ratio"] = out["endpoints_1"]["ratio"]["median"]
    return out


def forget_own(conn: psycopg.Connection[Any]) -> None:
    """Between latency runs: the runs' messages go (none of them is delivered: the simulator
    sends no callbacks here), the history stays; then VACUUM ANALYZE, as clear_messages."""
    conn.execute(seed.bq("bench_forget_open"))
    conn.execute("VACUUM ANALYZE")


def run_order(run: int) -> tuple[str, str]:
    """The two sides of run `run` (0, 1, ...) of the dead-endpoint comparison, in the order they
    are measured: no webhooks first in even runs, the dead endpoint first in odd ones."""
    return ("none", "dead") if run % 2 == 0 else ("dead", "none")


def latency_pairs(runs: int) -> int:
    """Pairs of the dead-endpoint comparison that has a goal: at least LATENCY_PAIRS, an even
    number (as many with either side first), and `runs` when that is more. One pair's ratio
    ranged 0.96-1.17 in one run of one commit (2026-12-05), so three pairs could not tell 1.07
    from 1.12."""
    pairs = max(runs, LATENCY_PAIRS)
    return pairs + pairs % 2


def dead_endpoint_latency(
    stack: Stack, args: argparse.Namespace, problems: list[str], rate: float, *, pairs: int
) -> dict[str, Any]:
    """e2e latency at `rate`, with no webhooks and with the dead endpoint, in turns, `pairs`
    times; the p50 and p99 of each side and their ratios. The order alternates from pair to pair
    (no webhooks first, then the dead endpoint first, ...), so whatever the second side of a pair
    inherits from the first (the machine's state, the database's) weighs on both sides alike."""
    lat: dict[str, dict[str, list[float]]] = {
        k: {"p50_ms": [], "p99_ms": [], "achieved": []} for k in ("none", "dead")
    }
    pending_after: list[int] = []
    for r in range(pairs):
        for kind in run_order(r):
            summary, got, found = measure_latency(
                stack,
                rate=rate,
                seconds=args.e2e_seconds,
                tag=f"wh{kind}{r}r{rate:.0f}",
                dead=kind == "dead",
                timeout=args.timeout,
            )
            problems += found
            lat[kind]["p50_ms"].append(summary["p50_ms"])
            lat[kind]["p99_ms"].append(summary["p99_ms"])
            lat[kind]["achieved"].append(got)
            if kind == "dead":
                pending_after.append(int(summary["webhooks_pending_after"]))
            say(
                f"  run {r + 1} at {rate:,.0f}/s: e2e {kind}: {got:,.0f}/s"
                f" p50 {summary['p50_ms']} ms p99 {summary['p99_ms']} ms"
            )
    out: dict[str, Any] = {}
    for kind, name in (("none", "no_webhooks"), ("dead", "dead_endpoint")):
        out[name] = {
            "p50_ms": spread(lat[kind]["p50_ms"], 2),
            "p99_ms": spread(lat[kind]["p99_ms"], 2),
            "achieved_rate": spread(lat[kind]["achieved"]),
        }
    out["dead_endpoint"]["webhooks_pending_after"] = pending_after
    pairs = [
        ratio(dead, none) or 0.0
        for dead, none in zip(lat["dead"]["p50_ms"], lat["none"]["p50_ms"], strict=True)
    ]
    out["dead_endpoint_latency_ratio"] = spread(pairs, 3)["median"]
    out["dead_endpoint_latency_ratios"] = pairs
    out["medians_ratio"] = ratio(
        out["dead_endpoint"]["p50_ms"]["median"], out["no_webhooks"]["p50_ms"]["median"]
    )
    out["dead_endpoint_p99_ratio"] = ratio(
        out["dead_endpoint"]["p99_ms"]["median"], out["no_webhooks"]["p99_ms"]["median"]
    )
    return out
