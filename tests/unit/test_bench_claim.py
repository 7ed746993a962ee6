"""The claim-cost bench's reading of EXPLAIN (ANALYZE, FORMAT JSON) (bench/claim.py): time spent
in each node alone, CTEs located, CTE Scans (which include the CTE they run) left out."""

from __future__ import annotations

from typing import Any

from bench import claim


def node(kind: str, total: float, rows: int = 1, loops: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "Node Type": kind,
        "Actual Total Time": total,
        "Actual Rows": rows,
        "Actual Loops": loops,
        **extra,
    }


def test_self_time_is_total_minus_children_over_loops() -> None:
    """A node looped 100 times counts 100 x its per-loop time; its children's time is its own."""
    scan = node("Index Scan", 0.02, rows=97, loops=100, **{"Relation Name": "sms_outbox"})
    lock = node("LockRows", 0.1, rows=97, loops=100, Plans=[scan])
    out: list[dict[str, Any]] = []
    ctes: list[dict[str, Any]] = []
    total = claim._nodes(lock, out, ctes)
    assert round(total, 6) == 10.0
    by_name = {n["node"]: n for n in out}
    assert by_name["Index Scan sms_outbox"]["self_ms"] == 2.0
    assert by_name["Index Scan sms_outbox"]["rows"] == 9700
    assert by_name["LockRows"]["self_ms"] == 8.0
    assert ctes == []


def test_ctes_are_named_and_their_scans_left_out() -> None:
    """Each CTE is listed with the time it was done; nodes carry the CTE they belong to."""
    ready = node(
        "Limit",
        40.0,
        rows=100,
        **{"Subplan Name": "CTE ready", "Parent Relationship": "InitPlan"},
        Plans=[node("Seq Scan", 12.0, rows=100000, **{"Relation Name": "sms_outbox"})],
    )
    scan = node("CTE Scan", 41.0, rows=100, **{"CTE Name": "ready"})
    join = node("Hash Join", 45.0, **{"Join Type": "Right Semi"}, Plans=[scan])
    top = node("Sort", 46.0, Plans=[ready, join])
    out: list[dict[str, Any]] = []
    ctes: list[dict[str, Any]] = []
    claim._nodes(top, out, ctes)
    assert ctes == [{"cte": "ready", "done_at_ms": 40.0, "rows": 100}]
    names = {n["node"]: n for n in out}
    assert "CTE Scan" not in names
    assert names["Seq Scan sms_outbox"]["cte"] == "ready"
    assert names["Limit"]["self_ms"] == 28.0
    assert names["Hash Join (Right Semi)"]["self_ms"] == 4.0
    assert names["Sort"]["self_ms"] == 0.0  # clamped: the CTE's time is under it twice


def test_claim_senders_are_distinct() -> None:
    """1,000 distinct sender numbers for the claim-cost queue."""
    numbers = claim.numbers(1000)
    assert len(set(numbers)) == 1000
