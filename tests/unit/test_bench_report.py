"""The bench's verdicts and table (bench/report.py) for the pace, priority, claim-cost and limits
figures, from hand-made results; and the enqueue transaction pgbench runs (bench/enqueue.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bench import __main__ as bench_main
from bench import dispatch, enqueue, report, webhooks


@pytest.mark.parametrize(
    ("name", "value", "met"),
    [
        ("pace_rate_ratio", 0.95, True),
        ("pace_rate_ratio", 0.94, False),
        ("pace_window_excess", 0, True),
        ("pace_window_excess", 1, False),
        ("pace_refused_429", 0, True),
        ("pace_refused_429", 2, False),
        ("priority_high_max_ms", 999.0, True),
        ("priority_high_max_ms", 1001.0, False),
        ("claim_pace_ratio", 1.5, True),
        ("claim_pace_ratio", 1.51, False),
        # Issue 15's bounds for the enqueue, the 200 ms drain and the batch.
        ("enqueue_ratio", 1.0, True),
        ("enqueue_ratio", 0.99, False),
        ("latency_efficiency", 0.95, True),
        ("latency_efficiency", 0.94, False),
        ("batch_ratio", 0.7, True),
        ("batch_ratio", 0.69, False),
    ],
)
def test_targets_bounds(name: str, value: float, met: bool) -> None:
    """Each goal of issues 12 and 15 is judged with its bound; a figure not measured is None,
    not a miss."""
    targets = report.check_targets({name: value})
    assert targets[name]["met"] is met
    assert report.check_targets({})[name]["met"] is None


def result() -> dict[str, Any]:
    config = {
        "senders": 10,
        "mps": 5.0,
        "burst": 5,
        "dispatchers": 3,
        "rate_ratio": 0.99,
        "rate_ratio_min": 0.97,
        "max_window_segments": 10,
        "started_max_window_segments": 9,
        "bound_segments": 10.0,
        "refused_429": 0,
    }
    flat = {
        "pace_rate_ratio": 0.99,
        "claim_pace_ratio": 2.0,
        "claim_idle_ratio": 1.05,
        "priority_high_max_ms": 120.0,
    }
    return {
        "machine": {
            "cpus": 2,
            "cpu_model": "x",
            "memory_gb": 1,
            "postgresql": "18",
            "python": "3",
            "commit": "abc",
        },
        "config": {
            "runs": 1,
            "messages": 1,
            "sim_messages": 1,
            "concurrency": 64,
            "batch_size": 100,
            "log_level": "INFO",
        },
        "targets": report.check_targets(flat),
        "pace": {"window_seconds": 60.0, "configs": {"10x5": config}},
        "priority": {
            "mps": 10.0,
            "low_due_when_sent": [9900, 9880],
            "p50_ms": 80.0,
            "max_ms": 120.0,
            "samples": 2,
        },
        "claim": {
            "claim_limit": 100,
            "senders": 1000,
            "due_rows": 100000,
            "claims_each": 200,
            "paced_ms": {"p50_ms": 10.0, "p99_ms": 20.0},
            "unpaced_ms": {"p50_ms": 5.0, "p99_ms": 9.0},
            "idle_senders": 10000,
            "idle_paced_ms": {"p50_ms": 10.5, "p99_ms": 21.0},
        },
        "memory": {},
    }


def test_table_shows_pace_priority_and_claim_rows() -> None:
    """The pace configuration, the high message's latency and both claims appear with verdicts."""
    text = report.table(result())
    assert "pace 10 x 5 seg/s, burst 5, 3 dispatchers" in text
    assert "(bound mps+burst 10)" in text
    assert "pace_rate_ratio 0.99 (target >= 0.95: met)" in text
    assert "behind 9,880+ low" in text
    assert "priority_high_max_ms 120 (target <= 1000: met)" in text
    assert "claim_pace_ratio 2 (target <= 1.5: MISSED)" in text
    assert "no pacing: pre-pacing claim, same rows" in text
    assert "the paced claim with 10,000 idle senders more" in text
    assert "claim_idle_ratio 1.05 (target <= 1.2: met)" in text


def test_limits_rows_show_both_keys_and_the_ratio() -> None:
    """Issue 13's figure: the limited key's rate beside the unlimited one's, judged >= 0.9."""
    figures = {"median": 450.0, "min": 440.0, "max": 460.0}
    latency = {"p50_ms": {"median": 30.0, "min": 29.0, "max": 31.0}}
    limits = {
        "concurrency": 16,
        "limited": {**figures, **latency},
        "unlimited": {**figures, "median": 500.0, **latency},
        "limits_ratio": 0.9,
        "pair_ratios": {"median": 0.9, "min": 0.85, "max": 0.97},
        "medians_ratio": 0.88,
    }
    res = {**result(), "limits": limits, "targets": report.check_targets({"limits_ratio": 0.9})}
    text = report.table(res)
    assert re.search(
        r"limits: POST /sms/send, c16, key with all three limits +450/s \[440-460\]", text
    )
    assert re.search(r"same load, key without limits, taking turns +500/s", text)
    assert "limits_ratio 0.9 (target >= 0.9: met)" in text
    assert "runs' turns divided: 0.900 [0.850-0.970]; medians divided: 0.88" in text
    assert report.check_targets({"limits_ratio": 0.89})["limits_ratio"]["met"] is False


def test_pgbench_script_binds_every_enqueue_parameter() -> None:
    """Every %(name)s of messages_enqueue is written in (priority, send_at and expires_at too)."""
    script = enqueue.pgbench_script(1)
    assert "%(" not in script
    assert "ARRAY['normal']::text[]" in script
    assert re.search(r"ARRAY\[NULL\]::timestamptz\[\]", script)


def dispatch_table(**figures: Any) -> str:
    """The table of a run whose dispatch group measured 280/s everywhere, plus `figures`."""
    rates = {"median": 280.0, "min": 276.0, "max": 281.0}
    d = {
        "noop": rates,
        "pgqueuer": rates,
        "sim_0ms": rates,
        "sim_200ms": rates,
        "ceiling_200ms": 320.0,
        **figures,
    }
    res = result()
    res["config"].update(pgqueuer_batch=10, concurrency=64)
    return report.table({**res, "dispatch": d})


def test_dispatch_rows_show_the_provider_calls_length_and_what_it_allows() -> None:
    """The 200 ms drain beside the ceiling at its calls' measured length (no target)."""
    text = dispatch_table(
        latency_efficiency=0.875,
        call_ms_200ms={"median": 212.0, "min": 211.2, "max": 214.1},
        call_ceiling_200ms=301.9,
        efficiency_vs_call=0.927,
    )
    assert re.search(
        r"its provider calls \(sms_send_duration_seconds, accepted\) +mean 212 ms", text
    )
    assert "[211.2-214.1]" in text
    assert "ceiling at that call 302/s; efficiency_vs_call 0.927" in text


def test_sent_calls_sums_the_accepted_calls_of_every_provider() -> None:
    """From a dispatcher's /metrics: seconds and count of accepted calls, other outcomes out."""
    text = """# HELP sms_send_duration_seconds Duration of provider send calls, by outcome class.
# TYPE sms_send_duration_seconds histogram
sms_send_duration_seconds_bucket{le="+Inf",outcome="sent",provider="twilio"} 3.0
sms_send_duration_seconds_count{outcome="sent",provider="twilio"} 3.0
sms_send_duration_seconds_sum{outcome="sent",provider="twilio"} 0.6
sms_send_duration_seconds_count{outcome="sent",provider="signalwire"} 1.0
sms_send_duration_seconds_sum{outcome="sent",provider="signalwire"} 0.25
sms_send_duration_seconds_count{outcome="retryable",provider="twilio"} 5.0
sms_send_duration_seconds_sum{outcome="retryable",provider="twilio"} 9.0
"""
    seconds, calls = dispatch.sent_calls(text)
    assert calls == 4 and seconds == pytest.approx(0.85)


def test_the_dead_endpoint_comparison_takes_turns_at_going_first() -> None:
    """Pairs alternate which side runs first, and the comparison with a goal has an even number
    of pairs, at least six: each side goes first as often as the other."""
    assert [webhooks.run_order(r) for r in range(4)] == [
        ("none", "dead"),
        ("dead", "none"),
        ("none", "dead"),
        ("dead", "none"),
    ]
    assert [webhooks.latency_pairs(runs) for runs in (1, 3, 6, 7, 8)] == [6, 6, 6, 8, 8]


def test_the_200ms_drain_is_shown_beside_the_sdk_alone() -> None:
    """The SDK-alone peer's rate, the drain's share of it, and the SDK's share of the ceiling."""
    text = dispatch_table(
        sdk_200ms={"median": 304.0, "min": 300.0, "max": 305.0},
        efficiency_vs_sdk=0.954,
        sdk_vs_ceiling=0.95,
    )
    assert re.search(r"the Twilio SDK alone, 64 tasks, no database +304/s \[300-305\]", text)
    assert "efficiency_vs_sdk 0.954 (the SDK alone is 0.95 of the ceiling)" in text


def test_the_highest_swept_rate_within_both_latency_targets() -> None:
    """A rate counts only when its p50 and its p99 both hold; none holding is None."""
    sweep = [
        {"rate": 200.0, "p50_ms": 5.0, "p99_ms": 12.0},
        {"rate": 400.0, "p50_ms": 7.5, "p99_ms": 129.0},  # p99 over 50 ms
        {"rate": 600.0, "p50_ms": 9.9, "p99_ms": 45.0},
        {"rate": 800.0, "p50_ms": 18.0, "p99_ms": 40.0},  # p50 over 10 ms
    ]
    assert bench_main.within_targets(sweep) == 600.0
    assert bench_main.within_targets(sweep[3:]) is None
    x = {"rate": 1000.0, "sweep": sweep, "within_targets_rate": 600.0}
    text = report.table({**result(), "e2e": x, "targets": report.check_targets({})})
    assert re.search(r"end-to-end at 400/s \(one run\) +p50 7.5 ms +p99 129 ms", text)
    assert re.search(r"highest of those rates within p50 <= 10 ms and p99 <= 50 ms +600/s", text)
