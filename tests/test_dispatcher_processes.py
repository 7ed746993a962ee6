"""`python -m dispatcher` as real processes: sharing, SIGKILL, SIGSTOP past the lease, SIGTERM.

Each test bounds every wait; short leases and poll intervals come in through the environment.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.dispatch_support import (
    count,
    enqueue_bulk,
    env_for,
    log_actions,
    start_dispatcher,
    stop_all,
    wait_until,
)
from tests.fixtures_sim import SIM_TWILIO_NUMBER, CallbackListener, SimHandle

LEASED_AND_STARTED = (
    "SELECT count(*) FROM sms_outbox WHERE state = 'leased' AND attempt_started_at IS NOT NULL"
)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    stop_all(started)


@pytest.fixture
def base_env(sim: SimHandle, db_url: str, callback_listener: CallbackListener) -> dict[str, str]:
    return env_for(
        {
            **sim.env(),
            "DATABASE_URL": db_url,
            "TWILIO_PHONE_NUMBER": SIM_TWILIO_NUMBER,
            "PUBLIC_BASE_URL": callback_listener.url,
            "DISPATCH_POLL_SECONDS": "0.2",
            "RETRY_DELAY_SECONDS": "1",
            "LOG_LEVEL": "INFO",
        }
    )


def spawn(
    procs: list[subprocess.Popen[bytes]], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """Start one dispatcher and wait until it is claiming (its 'start' log line)."""
    proc = start_dispatcher(env, log)
    procs.append(proc)
    wait_until(lambda: bool(log_actions(log, "start")), seconds=20, what=f"{log.name} to start")
    return proc


def spawn_many(
    procs: list[subprocess.Popen[bytes]], env: dict[str, str], logs: list[Path]
) -> list[subprocess.Popen[bytes]]:
    """Start several dispatchers at once and wait until every one is claiming."""
    started = [start_dispatcher(env, log) for log in logs]
    procs.extend(started)
    for log in logs:
        wait_until(
            lambda log=log: bool(log_actions(log, "start")),  # type: ignore[misc]
            seconds=30,
            what=f"{log.name} start",
        )
    return started


def terminate(proc: subprocess.Popen[bytes], within: float) -> float:
    """SIGTERM, wait for exit 0; the seconds it took."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=within + 10) == 0
    return time.monotonic() - t0


def assert_each_sent_once(sim: SimHandle, db: psycopg.Connection[Any], n: int) -> None:
    """The simulator accepted exactly n distinct messages, each once, and we hold each one's sid."""
    at_sim = sim.messages()
    assert len(at_sim) == n
    assert {m["accepted_count"] for m in at_sim} == {1}
    assert len({(m["to"], m["body"]) for m in at_sim}) == n
    ours = db.execute(
        "SELECT provider_sid FROM sms_messages WHERE delivery_status = 'queued'"
    ).fetchall()
    assert {r[0] for r in ours} == {m["sid"] for m in at_sim}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("n_procs", [2, 4])
def test_processes_drain_2000_messages_together_each_sent_once(
    n_procs: int,
    sim: SimHandle,
    db: psycopg.Connection[Any],
    base_env: dict[str, str],
    procs: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """2 and 4 dispatchers share 2,000 messages: every one reaches the simulator exactly once."""
    sim.configure(latency=0.02, callbacks=False)
    env = {**base_env, "DISPATCH_BATCH_SIZE": "50", "DISPATCH_CONCURRENCY": "50"}
    logs = [tmp_path / f"d{i}.log" for i in range(n_procs)]
    running = spawn_many(procs, env, logs)
    enqueue_bulk(db, 2000)
    wait_until(lambda: count(db, "SELECT count(*) FROM sms_outbox") == 0, seconds=90, what="drain")
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    assert [proc.wait(timeout=30) for proc in running] == [0] * n_procs
    assert_each_sent_once(sim, db, 2000)
    assert count(db, "SELECT count(*) FROM sms_messages WHERE delivery_status <> 'queued'") == 0
    per_process = [len(log_actions(log, "submitted")) for log in logs]
    assert sum(per_process) == 2000
    assert all(n > 0 for n in per_process), per_process  # they really worked together


@pytest.mark.timeout(90)
def test_sigkill_mid_batch_loses_nothing_and_sends_nothing_twice(
    sim: SimHandle,
    db: psycopg.Connection[Any],
    base_env: dict[str, str],
    procs: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """A dispatcher killed with calls in flight: a survivor rescues and reconciles every row."""
    # Some sends are accepted and never answered: at the kill they exist only at the provider.
    sim.configure(latency=0.1, hang_rate=0.2, seed=3, callbacks=False)
    env = {
        **base_env,
        "DISPATCH_LEASE_SECONDS": "3",
        "PROVIDER_TIMEOUT_SECONDS": "1",
        "DISPATCH_BATCH_SIZE": "40",
        "DISPATCH_CONCURRENCY": "40",
    }
    victim = spawn(procs, env, tmp_path / "victim.log")
    enqueue_bulk(db, 200)
    wait_until(lambda: sum(m["hung"] for m in sim.messages()) >= 3, seconds=20, what="hung calls")
    victim.kill()
    victim.wait(timeout=10)
    # A statement the victim sent just before it died still runs to its end (and an "attempt
    # started" still commits): read what was in flight once its server processes are gone.
    victims = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'sms-dispatcher%%'"
    wait_until(lambda: count(db, victims) == 0, seconds=20, what="the victim's connections")
    in_flight = {
        str(mid)
        for (mid,) in db.execute(
            "SELECT message_id FROM sms_outbox WHERE attempt_started_at IS NOT NULL"
        ).fetchall()
    }
    assert len(in_flight) >= 3
    sim.configure(hang_rate=0.0)  # the survivor's own sends are answered
    survivor = spawn(procs, env, tmp_path / "survivor.log")
    wait_until(lambda: count(db, "SELECT count(*) FROM sms_outbox") == 0, seconds=60, what="drain")
    terminate(survivor, within=20)
    assert_each_sent_once(sim, db, 200)
    # Every interrupted attempt was looked up by the survivor before anything else: its copy
    # adopted, a miss (looked up again later), or a resend after a miss (the victim may have
    # missed once already, before the kill). By message: a miss and its resend are one lookup.
    looked_up = {
        record["message_id"]
        for action in ("reconciled", "reconcile_miss", "reconcile_resend")
        for record in log_actions(tmp_path / "survivor.log", action)
    }
    assert looked_up == in_flight
    reconciled = count(
        db, "SELECT count(*) FROM sms_message_events WHERE event_type = 'reconciled'"
    )
    assert reconciled > 0


@pytest.mark.timeout(90)
def test_sigstop_past_the_lease_then_sigcont_overwrites_nothing(
    sim: SimHandle,
    db: psycopg.Connection[Any],
    base_env: dict[str, str],
    procs: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """A dispatcher frozen past its lease while another finishes its work changes nothing after."""
    # The frozen dispatcher's sends reach the simulator and are left unanswered, so at the freeze
    # its first batch exists only at the provider: the finisher must reconcile, not resend.
    sim.configure(hang_rate=1.0, hang_max=5.0, callbacks=False)
    env = {
        **base_env,
        "DISPATCH_LEASE_SECONDS": "4",
        "PROVIDER_TIMEOUT_SECONDS": "10",
        "DISPATCH_BATCH_SIZE": "50",
        "DISPATCH_CONCURRENCY": "50",
        "DISPATCH_GRACE_SECONDS": "5",
    }
    frozen = spawn(procs, env, tmp_path / "frozen.log")
    enqueue_bulk(db, 100)
    wait_until(lambda: len(sim.messages()) == 50, seconds=20, what="the first batch at the sim")
    frozen.send_signal(signal.SIGSTOP)
    sim.configure(hang_rate=0.0)
    wait_until(
        lambda: count(db, "SELECT count(*) FROM sms_outbox WHERE lease_expires_at > now()") == 0,
        seconds=10,
        what="the frozen dispatcher's leases to expire",
    )
    finisher = spawn(procs, env, tmp_path / "finisher.log")
    wait_until(lambda: count(db, "SELECT count(*) FROM sms_outbox") == 0, seconds=60, what="drain")
    terminate(finisher, within=20)
    assert len(log_actions(tmp_path / "finisher.log", "reconciled")) == 50

    def snapshot() -> list[tuple[Any, ...]]:
        return db.execute(
            "SELECT m.id, m.delivery_status, m.provider_sid, m.attempts, m.error_code,"
            " m.updated_at, (SELECT count(*) FROM sms_message_events e WHERE e.message_id = m.id)"
            " FROM sms_messages m ORDER BY m.id"
        ).fetchall()

    before = snapshot()
    frozen.send_signal(signal.SIGCONT)
    terminate(frozen, within=20)
    assert snapshot() == before
    assert count(db, "SELECT count(*) FROM sms_outbox") == 0
    stale = log_actions(tmp_path / "frozen.log", "stale_result")
    assert len(stale) == 50, "the resumed dispatcher should have tried to record and been refused"
    assert_each_sent_once(sim, db, 100)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("latency", "grace"), [(1.0, 4.0), (6.0, 2.0)], ids=["finish", "release"])
def test_sigterm_claims_nothing_more_and_leaves_nothing_leased(
    latency: float,
    grace: float,
    sim: SimHandle,
    db: psycopg.Connection[Any],
    base_env: dict[str, str],
    procs: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """After SIGTERM: no new claim, exit 0 within the grace period, no row leased to it."""
    sim.configure(latency=latency)
    env = {
        **base_env,
        "DISPATCH_GRACE_SECONDS": str(grace),
        "PROVIDER_TIMEOUT_SECONDS": "10",
        "DISPATCH_LEASE_SECONDS": "30",
        "DISPATCH_BATCH_SIZE": "20",
        "DISPATCH_CONCURRENCY": "20",
        "LOG_LEVEL": "DEBUG",
    }
    proc = spawn(procs, env, tmp_path / "d.log")
    enqueue_bulk(db, 100)
    wait_until(lambda: count(db, LEASED_AND_STARTED) >= 20, seconds=20, what="calls in flight")
    row = db.execute("SELECT now()").fetchone()
    assert row is not None
    signalled_at = row[0]
    took = terminate(proc, within=grace)
    assert took <= grace + 1.0
    assert count(db, "SELECT count(*) FROM sms_outbox WHERE state = 'leased'") == 0
    actions = [r["action"] for r in log_actions(tmp_path / "d.log", None)]
    assert "claim" in actions[: actions.index("stop")]
    assert "claim" not in actions[actions.index("stop") :]
    late_starts = count(
        db,
        "SELECT count(*) FROM sms_message_events WHERE event_type = 'attempt_started'"
        " AND occurred_at > %s",
        signalled_at,
    )
    assert late_starts == 0
    queued = count(db, "SELECT count(*) FROM sms_messages WHERE delivery_status = 'queued'")
    pending = count(db, "SELECT count(*) FROM sms_messages WHERE delivery_status = 'pending'")
    assert queued + pending == 100
    if latency < grace:
        assert queued == 20  # the in-flight batch finished
    else:
        assert queued == 0  # released with attempt_started_at kept: reconciled before any resend
        assert (
            count(db, "SELECT count(*) FROM sms_outbox WHERE attempt_started_at IS NOT NULL") == 20
        )
