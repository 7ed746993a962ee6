"""The API's metrics across worker processes (prometheus-client's multiprocess mode): counts of
every worker are summed, the gauges read from the database are served once, from the scraping
worker, and a stopped worker's gauges go while its counts stay."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import Gauge
from prometheus_client.parser import text_string_to_metric_families

from shared import metrics

ROOT = Path(__file__).resolve().parents[2]
# One worker's life: counts, a stale queue gauge and an endpoint's backlog, then (maybe) its end.
WORKER = """
import sys
from shared import metrics
metrics.MESSAGES_ACCEPTED.labels("twilio").inc(int(sys.argv[1]))
metrics.CALLBACK_LAG.labels("twilio").observe(2.0)
metrics.OUTBOX_DEPTH.labels("send_sms", "ready").set(99)
metrics.WEBHOOK_BACKLOG.labels("5").set(3)
if sys.argv[2] == "stop":
    metrics.process_stopped()
print(__import__("os").getpid())
"""


def _worker(directory: Path, accepted: int, *, stop: bool) -> int:
    """Run WORKER as a process of its own with `directory` as its PROMETHEUS_MULTIPROC_DIR."""
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(accepted), "stop" if stop else "run"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", metrics.MULTIPROC_ENV: str(directory)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout)


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


@pytest.fixture
def workers_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two workers' files (3 and 4 messages accepted); this process serves the scrape."""
    _worker(tmp_path, 3, stop=False)
    _worker(tmp_path, 4, stop=False)
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    return tmp_path


def test_counts_of_every_worker_are_summed(workers_dir: Path) -> None:
    """A scrape served by any worker shows the sum of all workers' counters and histograms."""
    found = _samples(metrics.exposition())
    assert found[("sms_messages_accepted_total", (("provider", "twilio"),))] == 7
    assert found[("sms_callback_lag_seconds_count", (("provider", "twilio"),))] == 2
    assert found[("sms_callback_lag_seconds_sum", (("provider", "twilio"),))] == 4.0


def test_database_gauges_are_the_scraping_workers_alone(workers_dir: Path) -> None:
    """The queue and webhook gauges are this scrape's rows, once: not another worker's stale
    value, not per worker, and an endpoint no longer listed is gone."""
    row = {"kind": "send_sms", "state": "ready", "depth": 7, "due": 7, "oldest_due_seconds": 1.5}
    metrics.set_queue([row])
    metrics.set_webhook_health([])
    found = _samples(metrics.exposition())
    depth = [v for (name, _), v in found.items() if name == "sms_outbox_depth"]
    assert found[("sms_outbox_depth", (("kind", "send_sms"), ("state", "ready")))] == 7
    assert len(depth) == 6  # three kinds x ready, leased: one series each
    assert not [k for k in found if k[0] == "sms_webhook_backlog"]
    assert not [k for k in found if "pid" in dict(k[1])]


def test_without_this_scrapes_rows_the_gauges_are_left_out(workers_dir: Path) -> None:
    """When the database could not be read, no queue gauge is served (old values would mislead),
    the counts still are."""
    found = _samples(metrics.exposition(scraped=False))
    assert not [k for k in found if k[0].startswith(("sms_outbox_", "sms_webhook_backlog"))]
    assert found[("sms_messages_accepted_total", (("provider", "twilio"),))] == 7


def test_a_stopped_worker_takes_its_gauges_and_leaves_its_counts(tmp_path: Path) -> None:
    """process_stopped() removes the worker's live gauge file; its counter file stays, so the
    API's totals do not go back when a worker is replaced."""
    pid = _worker(tmp_path, 2, stop=True)
    assert (tmp_path / f"counter_{pid}.db").exists()
    assert not list(tmp_path.glob(f"gauge_*_{pid}.db"))


def test_every_gauge_says_how_workers_combine() -> None:
    """A gauge summed or listed per worker would be wrong for a value read from the database:
    each is scraped (served once) or names its own multiprocess mode."""
    gauges = [v for v in vars(metrics).values() if isinstance(v, Gauge)]
    assert gauges
    for gauge in gauges:
        mode = gauge._multiprocess_mode  # prometheus-client keeps it there, unexported
        assert gauge in metrics.SCRAPED or mode != "all", gauge.describe()[0].name
    assert {g._multiprocess_mode for g in metrics.SCRAPED} == {"livemostrecent"}
