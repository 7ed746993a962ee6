"""Reading a listing's query string: unknown and repeated parameters, page size and cursor.

Every problem is added to the caller's list, so a 400 names them all at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.datastructures import QueryParams

from shared.operations import BadCursor
from shared.validation import Problem


def unknown_and_repeated(params: QueryParams, known: tuple[str, ...]) -> list[Problem]:
    """A problem for each parameter not in `known`, and for each known one given twice."""
    problems = [
        Problem(name, "unknown_parameter", f"unknown parameter; expected {', '.join(known)}")
        for name in params
        if name not in known
    ]
    problems += [
        Problem(name, "repeated_parameter", "give this parameter once")
        for name in params
        if name in known and len(params.getlist(name)) > 1
    ]
    return problems


def page(
    params: QueryParams,
    problems: list[Problem],
    *,
    default: int,
    most: int,
    decode: Callable[[str], Any],
) -> tuple[int, str | None]:
    """`limit` (1 to `most`, `default` when absent) and `cursor` (checked with `decode`)."""
    limit = default
    if (raw := params.get("limit")) is not None:
        if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= most:
            limit = int(raw)
        else:
            problems.append(Problem("limit", "invalid_limit", f"an integer from 1 to {most}"))
    cursor = params.get("cursor")
    if cursor is not None:
        try:
            decode(cursor)
        except BadCursor:
            problems.append(Problem("cursor", "invalid_cursor", "not a cursor from this API"))
    return limit, cursor
