"""The run's table: one row per scenario and policy, the verdict last."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

COLUMNS = (
    ("scenario", "scenario"),
    ("policy", "policy"),
    ("acked", "acked"),
    ("lost", "lost"),
    ("duplicated", "dup"),
    ("unexpected", "unexp"),
    ("stuck", "stuck"),
    ("wrong_sid", "wrong sid"),
    ("indeterminate", "indet"),
    ("indeterminate_in_db", "in db"),
    ("failed", "failed"),
    ("detected_doubles", "detected"),
    ("fidelity_at_quiet_pct", "fid@quiet"),
    ("status_fidelity_pct", "fid %"),
    ("seconds", "secs"),
)


def _cell(record: dict[str, Any], key: str) -> str:
    value = record.get(key, "")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table(results: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table; a scenario that broke shows its error instead of counts."""
    head = [title for _, title in COLUMNS] + ["verdict"]
    rows = []
    for r in results:
        verdict = (
            "ok" if r.get("ok") else ("ERROR " + str(r["error"])[:60] if "error" in r else "FAIL")
        )
        rows.append([_cell(r, key) for key, _ in COLUMNS] + [verdict])
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)
