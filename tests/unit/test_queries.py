"""sql/queries: one file per table, every named query used exists and every defined one is used."""

from __future__ import annotations

import ast
from pathlib import Path

from shared.queries import SQL_DIR, _all, parse

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "dispatcher", "shared", "tooling")
TABLE_FILES = {
    "alerts.sql": "alerts_",
    "api_key_usage.sql": "api_key_usage_",
    "api_keys.sql": "api_keys_",
    "conversations.sql": "conversations_",
    "events.sql": "events_",
    "messages.sql": "messages_",
    "outbox.sql": "outbox_",
    "provider_pauses.sql": "provider_pauses_",
    "relations.sql": "relations_",  # the catalog's view of our tables (shared.plans)
    "senders.sql": "senders_",
    "suppressions.sql": "suppressions_",
    "webhook_deliveries.sql": "webhook_deliveries_",
    "webhook_endpoints.sql": "webhook_endpoints_",
}


def _string_constants() -> tuple[set[str], set[str]]:
    """(every string literal in our packages, the literals passed straight to q(...))."""
    literals: set[str] = set()
    to_q: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    literals.add(node.value)
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id == "q"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                ):
                    to_q.add(str(node.args[0].value))
    return literals, to_q


def test_every_query_passed_to_q_is_defined() -> None:
    """A q("name") with no `-- name: name` block would fail only when that path runs."""
    _, to_q = _string_constants()
    assert to_q, "no q(...) call found: the scan is broken"
    assert sorted(to_q - set(_all())) == []


def test_every_defined_query_is_used() -> None:
    """A named block that no code names is dead SQL to maintain."""
    literals, _ = _string_constants()
    assert sorted(set(_all()) - literals) == []


def test_queries_live_in_the_file_of_their_table() -> None:
    """One file per table, and each query's name starts with its table's noun."""
    files = {p.name for p in (SQL_DIR / "queries").glob("*.sql")}
    assert files == set(TABLE_FILES)
    for name, prefix in TABLE_FILES.items():
        defined = parse((SQL_DIR / "queries" / name).read_text())
        assert defined, f"{name} defines no query"
        assert [q for q in defined if not q.startswith(prefix)] == []
