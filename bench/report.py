"""The results: one JSON object for scripts, one table for people, and the machine they ran on."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

from bench.stack import ROOT

# Goals from issue 7 (not assertions): (key in "ratios"/"latency", comparison, bound).
TARGETS: dict[str, tuple[str, float]] = {
    # Issue 15's bounds (the first bench issue's were 0.5, 0.9 and 0.5 for enqueue_ratio,
    # latency_efficiency and batch_ratio).
    "enqueue_ratio": (">=", 1.0),
    "enqueue_vs_pgqueuer": (">=", 1.0),
    "api_c16_p99_ms": ("<=", 50.0),
    "dispatch_vs_pgqueuer": (">=", 2.0),
    "latency_efficiency": (">=", 0.95),
    "e2e_p50_ms": ("<=", 10.0),
    "e2e_p99_ms": ("<=", 50.0),
    "batch_ratio": (">=", 0.7),
    # The bound is for 5 M history; the 1 M point is held to the same bound.
    "claim_growth_ratio": ("<=", 1.5),
    "claim_growth_ratio_5m": ("<=", 1.5),
    # Issue 12: no sender ever above its pace, within 5 % of it, a high message within 1 s.
    "pace_rate_ratio": (">=", 0.95),
    "pace_window_excess": ("<=", 0.0),
    "pace_refused_429": ("<=", 0.0),
    "priority_high_max_ms": ("<=", 1000.0),
    "claim_pace_ratio": ("<=", 1.5),
    "claim_idle_ratio": ("<=", 1.2),
    # Issue 13: a key with all three limits set sends at least 90 % as fast as one without
    # (median over runs of the two keys' turns divided).
    "limits_ratio": (">=", 0.9),
    # Issue 14: webhooks keep up with dispatch (1 endpoint); a dead endpoint with 10,000 pending
    # deliveries costs SMS end-to-end p50 at most 10 %.
    "webhook_vs_dispatch_ratio": (">=", 1.0),
    "dead_endpoint_latency_ratio": ("<=", 1.1),
    # Issue 17: enqueue and dispatch through PgBouncer (transaction pooling) vs direct.
    "pgbouncer_enqueue_ratio": (">=", 0.8),
    "pgbouncer_dispatch_ratio": (">=", 0.8),
}
# Targets that are counts, not ratios (kept out of the JSON's "ratios").
COUNTS = frozenset({"pace_window_excess", "pace_refused_429"})


def machine(server_version: str) -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql": server_version,
        "commit": commit,
    }


def check_targets(flat: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    """Each target with its measured value and whether it was met (None: not measured)."""
    out = {}
    for name, (op, bound) in TARGETS.items():
        value = flat.get(name)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out[name] = {"value": value, "target": f"{op} {bound:g}", "met": met}
    return out


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")


def _rate(s: dict[str, Any] | None) -> str:
    if not s or s.get("median") is None:
        return "-"
    return f"{s['median']:,.0f}/s [{s['min']:,.0f}-{s['max']:,.0f}]"


def _ms(s: dict[str, Any] | None) -> str:
    if not s or s.get("median") is None:
        return "-"
    return f"{s['median']:.1f} ms [{s['min']:.1f}-{s['max']:.1f}]"


def _mark(targets: dict[str, dict[str, Any]], name: str) -> str:
    t = targets.get(name)
    if t is None or t["value"] is None:
        return ""
    return f"{t['value']:g} (target {t['target']}: {'met' if t['met'] else 'MISSED'})"


def _batch_rows(b: dict[str, Any], t: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    if not b:
        return []
    return [
        (
            f"batch POST /sms/send/batch, {b['clients']} clients x {b['batch_size']} messages",
            _rate(b.get("api")),
            f"p50 {_ms(b.get('api_batch_p50_ms'))}, p99 {_ms(b.get('api_batch_p99_ms'))} per batch",
        ),
        (
            "  Python multi-row insert, same statement and rows",
            _rate(b.get("python_multirow")),
            "batch_ratio " + _mark(t, "batch_ratio"),
        ),
    ]


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


def _growth_rows(g: dict[str, Any], t: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    if not g:
        return []
    rows: list[tuple[str, str, str]] = []
    for name, ratio_name in (
        ("0m", ""),
        ("1m", "claim_growth_ratio"),
        ("5m", "claim_growth_ratio_5m"),
    ):
        point = g.get(f"history_{name}")
        if not point:
            continue
        s = point["sizes_after"]
        label = f"{point['history_messages']:,} messages in history"
        rows += [
            (
                f"claim of {g['claim_limit']} rows, {label}",
                _ms(point.get("claim_p50_ms")),
                f"p99 {_ms(point.get('claim_p99_ms'))}"
                + (f"; {ratio_name} {_mark(t, ratio_name)}" if ratio_name else ""),
            ),
            (
                f"  drain, no-op provider, {label}",
                _rate(point.get("drain")),
                f"outbox {s['outbox_rows']} rows {_mb(s['outbox_bytes'])}; messages"
                f" {_mb(s['messages_bytes'])}, events {_mb(s['events_bytes'])}",
            ),
        ]
    kept = g.get("retention")
    if kept:
        for way, what in (("delete", "DELETE (events row by row)"), ("drop", "partition drop")):
            r = kept[way]
            rows.append(
                (
                    f"retain one day of {kept['messages_per_day']:,}/day"
                    f" (--older-than {kept['older_than_days']}d), {what}",
                    f"{r['seconds']:,.1f} s",
                    f"WAL {r['wal_mb']:,.0f} MB; vacuum after {r['vacuum_seconds']:,.1f} s;"
                    f" events' days dropped in {r['days_seconds']:,.2f} s",
                )
            )
    return rows


def _pace_rows(pc: dict[str, Any], t: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    if not pc:
        return []
    rows: list[tuple[str, str, str]] = []
    for c in pc["configs"].values():
        rows.append(
            (
                f"pace {c['senders']} x {c['mps']:g} seg/s, burst {c['burst']},"
                f" {c['dispatchers']} dispatchers",
                f"rate {c['rate_ratio']:.3f} of pace [slowest sender {c['rate_ratio_min']:.3f}]",
                f"max {c['max_window_segments']} seg in 1 s at the simulator,"
                f" {c['started_max_window_segments']} started (bound mps+burst"
                f" {c['bound_segments']:g}); {c['refused_429']} x 429",
            )
        )
    rows += [
        (
            f"  pace, worst configuration over {pc['window_seconds']:g} s",
            "",
            "pace_rate_ratio " + _mark(t, "pace_rate_ratio"),
        ),
        ("", "", "pace_window_excess " + _mark(t, "pace_window_excess")),
        ("", "", "pace_refused_429 " + _mark(t, "pace_refused_429")),
    ]
    return rows


def _priority_rows(pr: dict[str, Any], t: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    if not pr:
        return []
    behind = min(pr["low_due_when_sent"], default=0)
    return [
        (
            f"priority: high 202 -> simulator, behind {behind:,}+ low at {pr['mps']:g} seg/s",
            f"p50 {pr['p50_ms']:.0f} ms, max {pr['max_ms']:.0f} ms ({pr['samples']} sent)",
            "priority_high_max_ms " + _mark(t, "priority_high_max_ms"),
        )
    ]


def _claim_rows(c: dict[str, Any], t: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    if not c:
        return []
    p, u = c["paced_ms"], c["unpaced_ms"]
    rows = [
        (
            f"claim of {c['claim_limit']}, {c['senders']:,} paced senders, {c['due_rows']:,} due",
            f"p50 {p['p50_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms",
            "claim_pace_ratio " + _mark(t, "claim_pace_ratio"),
        ),
        (
            "  no pacing: pre-pacing claim, same rows",
            f"p50 {u['p50_ms']:.2f} ms, p99 {u['p99_ms']:.2f} ms",
            f"median of {c['claims_each']} committed claims each, alternating",
        ),
    ]
    idle = c.get("idle_paced_ms")
    if idle:
        rows.append(
            (
                f"  the paced claim with {c.get('idle_senders', 0):,} idle senders more",
                f"p50 {idle['p50_ms']:.2f} ms, p99 {idle['p99_ms']:.2f} ms",
                "claim_idle_ratio " + _mark(t, "claim_idle_ratio"),
            )
        )
    return rows


def _limits_rows(lim: dict[str, Any], t: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    if not lim:
        return []
    on, off = lim["limited"], lim["unlimited"]
    return [
        (
            f"limits: POST /sms/send, c{lim['concurrency']}, key with all three limits",
            _rate(on),
            f"p50 {_ms(on.get('p50_ms'))}, p99 {_ms(on.get('p99_ms'))}",
        ),
        (
            "  same load, key without limits, taking turns",
            _rate(off),
            "limits_ratio " + _mark(t, "limits_ratio"),
        ),
        (
            "",
            "",
            f"runs' turns divided: {_spread(lim.get('pair_ratios'))};"
            f" medians divided: {lim.get('medians_ratio')}",
        ),
    ]


def _webhook_rows(w: dict[str, Any], t: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    if not w:
        return []
    rows: list[tuple[str, str, str]] = []
    cap = w["capacity"]
    rows += [
        (
            f"webhooks alone: {cap['messages']:,} due, 1 endpoint, local receiver",
            _rate(cap["webhook_rate"]),
            f"sends alone, same dispatcher: {_rate(cap['dispatch_rate'])}",
        ),
        ("", "", "webhook_vs_dispatch_ratio " + _mark(t, "webhook_vs_dispatch_ratio")),
        ("", "", f"runs' ratios: {_spread(cap['ratio'])}"),
    ]
    for k in (1, 3):
        e = w[f"endpoints_{k}"]
        rows += [
            (
                f"  alongside the sends, {k} endpoint(s) per key",
                _rate(e["webhook_rate"]),
                f"dispatch {_rate(e['dispatch_rate'])}; ratio {_spread(e['ratio'])};"
                f" last webhook {e['lag_ms']['median']:,.0f} ms after the last send",
            )
        ]
    none, dead = w["no_webhooks"], w["dead_endpoint"]
    rows += [
        (
            f"e2e at {w['e2e_rate']:,.0f}/s, dead endpoint, {w['dead_backlog']:,} pending",
            f"p50 {_ms(dead['p50_ms'])}",
            f"p99 {_ms(dead['p99_ms'])}",
        ),
        (
            "  same, no webhook endpoints",
            f"p50 {_ms(none['p50_ms'])}",
            f"p99 {_ms(none['p99_ms'])}",
        ),
        ("", "", "dead_endpoint_latency_ratio " + _mark(t, "dead_endpoint_latency_ratio")),
        (
            "",
            "",
            f"pairs' ratios (taking turns at going first): {w['dead_endpoint_latency_ratios']};"
            f" medians divided: {w['medians_ratio']}; p99: {w['dead_endpoint_p99_ratio']}",
        ),
    ]
    high = w.get("at_e2e_rate")
    if high:
        rows += [
            (
                f"  the same at the e2e rate, {high['e2e_rate']:,.0f}/s: dead endpoint",
                f"p50 {_ms(high['dead_endpoint']['p50_ms'])}",
                f"p99 {_ms(high['dead_endpoint']['p99_ms'])}",
            ),
            (
                "  no webhook endpoints",
                f"p50 {_ms(high['no_webhooks']['p50_ms'])}",
                f"p99 {_ms(high['no_webhooks']['p99_ms'])}",
            ),
            (
                "",
                "",
                f"ratio {high['dead_endpoint_latency_ratio']} (no target: the stack's knee);"
                f" runs' ratios: {high['dead_endpoint_latency_ratios']}",
            ),
        ]
    return rows


def _pgbouncer_rows(p: dict[str, Any], t: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    if not p or "skipped" in p:
        return []
    return [
        (
            f"{what} through PgBouncer (transaction pooling)",
            _rate(p[f"{figure}_pgbouncer"]),
            f"direct {_rate(p[f'{figure}_direct'])}; "
            + f"pgbouncer_{figure}_ratio "
            + _mark(t, f"pgbouncer_{figure}_ratio"),
        )
        for figure, what in (
            ("enqueue", "POST /sms/send, c16,"),
            ("dispatch", "drain, simulator 0 ms,"),
        )
    ]


def _spread(s: dict[str, Any] | None) -> str:
    if not s or s.get("median") is None:
        return "-"
    return f"{s['median']:.3f} [{s['min']:.3f}-{s['max']:.3f}]"


def _sweep_rows(x: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The end-to-end runs at fixed fractions of the enqueue rate, one run each, and the highest
    of their rates at which both latency targets held."""
    sweep = x.get("sweep") or []
    if not sweep:
        return []
    best = x.get("within_targets_rate")
    rows = [
        (
            f"  end-to-end at {s['rate']:,.0f}/s (one run)",
            f"p50 {s['p50_ms']:g} ms",
            f"p99 {s['p99_ms']:g} ms",
        )
        for s in sweep
    ]
    rows.append(
        (
            "  highest of those rates within p50 <= 10 ms and p99 <= 50 ms",
            "none" if best is None else f"{best:,.0f}/s",
            "",
        )
    )
    return rows


def table(result: dict[str, Any]) -> str:
    """The figures for people: each beside the limit or peer measured in the same run."""
    m, cfg, t = result["machine"], result["config"], result["targets"]
    d, e, x = result.get("dispatch", {}), result.get("enqueue", {}), result.get("e2e", {})
    rows: list[tuple[str, str, str]] = []
    if d:
        rows += [
            ("dispatch, no-op provider (in-process)", _rate(d.get("noop")), ""),
            (
                f"  pgqueuer {result.get('pgqueuer_version', '')} no-op jobs,"
                f" batch {cfg['pgqueuer_batch']}",
                _rate(d.get("pgqueuer")),
                "dispatch_vs_pgqueuer " + _mark(t, "dispatch_vs_pgqueuer"),
            ),
            ("dispatch via simulator, 0 ms", _rate(d.get("sim_0ms")), ""),
            (
                f"dispatch via simulator, 200 ms (ceiling {d.get('ceiling_200ms', 0):,.0f}/s)",
                _rate(d.get("sim_200ms")),
                "latency_efficiency " + _mark(t, "latency_efficiency"),
            ),
        ]
        if d.get("sdk_200ms"):
            rows.append(
                (
                    f"  the Twilio SDK alone, {cfg['concurrency']} tasks, no database",
                    _rate(d.get("sdk_200ms")),
                    f"efficiency_vs_sdk {d.get('efficiency_vs_sdk')}"
                    f" (the SDK alone is {d.get('sdk_vs_ceiling')} of the ceiling)",
                )
            )
        call = d.get("call_ms_200ms")
        if call:
            rows.append(
                (
                    "  its provider calls (sms_send_duration_seconds, accepted)",
                    f"mean {call['median']:g} ms [{call['min']:g}-{call['max']:g}]",
                    f"ceiling at that call {d.get('call_ceiling_200ms', 0):,.0f}/s;"
                    f" efficiency_vs_call {d.get('efficiency_vs_call')}",
                )
            )
    if e:
        for c in (16, 64):
            s = e.get(f"api_c{c}")
            if s:
                lat = f"p50 {_ms(s.get('p50_ms'))}, p99 {_ms(s.get('p99_ms'))}"
                workers = f", {e['api_workers']} API workers" if "api_workers" in e else ""
                rows.append((f"enqueue POST /sms/send, concurrency {c}{workers}", _rate(s), lat))
        one = e.get("api_c16_one_worker")
        if one:
            rows.append(
                (
                    "  the same at concurrency 16 through 1 API worker",
                    _rate(one),
                    f"p50 {_ms(one.get('p50_ms'))}, p99 {_ms(one.get('p99_ms'))};"
                    f" enqueue_workers_ratio {e.get('enqueue_workers_ratio')}",
                )
            )
        rows += [
            (
                "  pgbench, same transaction, 16 clients",
                _rate(e.get("pgbench_c16")),
                "enqueue_ratio " + _mark(t, "enqueue_ratio"),
            ),
            (
                "  pgbench, minimal write (message + outbox row), 16 clients",
                _rate(e.get("pgbench_minimal_c16")),
                f"write_amplification {e.get('write_amplification')}"
                " (minimal / ours: how many times the least durable write ours costs)",
            ),
            (
                "  pgqueuer single-job enqueue, 16 tasks",
                _rate(e.get("pgqueuer_c16")),
                "enqueue_vs_pgqueuer " + _mark(t, "enqueue_vs_pgqueuer"),
            ),
            ("  p99 at concurrency 16", "", _mark(t, "api_c16_p99_ms")),
        ]
    rows += _limits_rows(result.get("limits", {}), t)
    rows += _batch_rows(result.get("batch", {}), t)
    if x:
        rows += [
            (
                f"end-to-end 202 -> simulator at {x.get('rate', 0):,.0f}/s, p50",
                _ms(x.get("p50_ms")),
                _mark(t, "e2e_p50_ms"),
            ),
            ("end-to-end p99", _ms(x.get("p99_ms")), _mark(t, "e2e_p99_ms")),
        ]
        rows += [
            (f"  stage: {stage}", f"p50 {_ms(st['p50_ms'])}", f"p99 {_ms(st['p99_ms'])}")
            for stage, st in x.get("stages", {}).items()
        ]
        rows += _sweep_rows(x)
    rows += _pace_rows(result.get("pace", {}), t)
    rows += _priority_rows(result.get("priority", {}), t)
    rows += _claim_rows(result.get("claim", {}), t)
    rows += _webhook_rows(result.get("webhooks", {}), t)
    rows += _pgbouncer_rows(result.get("pgbouncer", {}), t)
    rows += _growth_rows(result.get("growth", {}), t)
    mem = result.get("memory", {})
    rows.append(
        (
            "peak RSS",
            ", ".join(f"{k} {v:.0f} MB" for k, v in mem.items()) or "-",
            "",
        )
    )
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    head = (
        f"sms-outbox bench: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB,"
        f" PostgreSQL {m['postgresql']}, Python {m['python']}, commit {m['commit'] or '?'}\n"
        f"{cfg['runs']} runs each, median [min-max]; {cfg['messages']:,} messages per no-op and"
        f" pgqueuer drain, {cfg['sim_messages']:,} per simulator drain;"
        f"\nDISPATCH_CONCURRENCY {cfg['concurrency']}, DISPATCH_BATCH_SIZE {cfg['batch_size']},"
        f" LOG_LEVEL {cfg['log_level']}, simulator callbacks off;"
        f"\nunpaced senders at {cfg.get('sender_default_mps', 0):g} segments/s, burst"
        f" {cfg.get('sender_burst', 0):,} (the pace and priority figures set their own)"
    )
    lines = [head, ""]
    lines += [f"{a:<{width}}  {b:<{vwidth}}  {c}".rstrip() for a, b, c in rows]
    for name, why in result.get("not_measured", {}).items():
        lines.append(f"not measured: {name} ({why})")
    problems = result.get("problems", [])
    lines.append("")
    lines.append(
        "correctness: every message sent exactly once, none left pending"
        if not problems
        else "CORRECTNESS PROBLEMS:\n  " + "\n  ".join(problems)
    )
    return "\n".join(lines)
