"""Named SQL queries loaded from sql/queries/*.sql (`-- name: query_name` blocks)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from shared.errors import SmsOutboxError

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


class UnknownQuery(SmsOutboxError):
    """A query name that no sql/queries file defines."""


def parse(text: str) -> dict[str, str]:
    """Split one .sql file into {name: query}; the text under each `-- name:` line is the query."""
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def _all() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted((SQL_DIR / "queries").glob("*.sql")):
        for name, body in parse(path.read_text()).items():
            if name in found:
                raise SmsOutboxError(f"query {name} defined twice (again in {path.name})")
            found[name] = body
    return found


def q(name: str) -> str:
    """The SQL text of a named query."""
    try:
        return _all()[name]
    except KeyError:
        raise UnknownQuery(name) from None
