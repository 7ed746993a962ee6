"""Prometheus metrics of both processes (prometheus-client, default registry).

The API serves them at GET /metrics; the dispatcher calls `start_metrics_server(port)`. Label
values come from small fixed sets (provider, outcome class, our status vocabulary), never from
request data, so the series count stays bounded.

The API's worker processes (`python -m api`) share their counts through prometheus-client's
multiprocess mode: each writes its values to files in PROMETHEUS_MULTIPROC_DIR (set before this
module is first imported), and whichever worker serves a scrape sums every worker's files.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
# Where the API's worker processes keep their values (prometheus-client's own variable).
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# The gauges set from the database at each scrape: one value per series however many workers
# there are (the mode would pick the latest of the live workers' files; exposition() serves the
# scraping worker's own instead, so a series cleared there is gone).
_SCRAPED_MODE: Final = "livemostrecent"
# Provider calls take tens of milliseconds to seconds; the hard timeout defaults to 10 s.
_SEND_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Provider acceptance to a status callback: seconds for "sent", minutes to hours for "delivered".
_LAG_BUCKETS: Final = (0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)

# API
MESSAGES_ACCEPTED: Final = Counter(
    "sms_messages_accepted",
    "Messages created by POST /sms/send (idempotent replays not counted).",
    ["provider"],
)
CALLBACKS: Final = Counter(
    "sms_callbacks",
    "Signed status callbacks applied, by provider and reported status (our vocabulary; "
    "'unrecognized' when the provider's status is not in it).",
    ["provider", "status"],
)
SIGNATURE_FAILURES: Final = Counter(
    "sms_callback_signature_failures",
    "Provider webhooks (status callbacks, inbound messages) refused with 403 for a bad or "
    "missing signature.",
    ["provider"],
)
INBOUND_MESSAGES: Final = Counter(
    "sms_inbound_messages",
    "Messages texted to our numbers and stored (a provider's repeated webhook not counted), by "
    "kind: reply, or the keyword stop, stopall, start.",
    ["provider", "kind"],
)
CALLBACK_LAG: Final = Histogram(
    "sms_callback_lag_seconds",
    "Time from the provider accepting a message to each status callback about it.",
    ["provider"],
    buckets=_LAG_BUCKETS,
)
DUPLICATE_SENDS: Final = Counter(
    "sms_duplicate_sends_detected",
    "Provider messages carrying one of our message ids under a sid other than the recorded one: "
    "a double send, detected (counted once per stray copy).",
    ["provider"],
)
API_KEY_LIMITED: Final = Counter(
    "sms_api_key_limited",
    "Send requests refused with 429 by a per-key limit, by API key id and code (rate_limited, "
    "daily_limit_reached, recipient_rate_limited). Key ids are the operators' own, few.",
    ["api_key_id", "code"],
)
GROUP_COMMIT_ROWS: Final = Histogram(
    "sms_group_commit_rows",
    "Rows of each POST /sms/send group commit (one transaction), by outcome: written, or split "
    "(an error rolled the group back and each row was written alone).",
    ["outcome"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
OPERATOR_ACTIONS: Final = Counter(
    "sms_operator_actions",
    "Cancels and requeues done through the API or smsctl.",
    ["action"],
)

# Queue (set at scrape time from sms_queue_health by whoever serves /metrics)
OUTBOX_DEPTH: Final = Gauge(
    "sms_outbox_depth",
    "Rows in sms_outbox by kind and state.",
    ["kind", "state"],
    multiprocess_mode=_SCRAPED_MODE,
)
OUTBOX_DUE: Final = Gauge(
    "sms_outbox_due",
    "Rows in sms_outbox due now, by kind.",
    ["kind"],
    multiprocess_mode=_SCRAPED_MODE,
)
OUTBOX_OLDEST_DUE: Final = Gauge(
    "sms_outbox_oldest_due_seconds",
    "How long the oldest due row of each kind has been due (0 when none is due).",
    ["kind"],
    multiprocess_mode=_SCRAPED_MODE,
)

# Dispatcher
SENT: Final = Counter(
    "sms_sent",
    "Messages a provider accepted (including sids adopted by reconciliation).",
    ["provider"],
)
FAILED: Final = Counter(
    "sms_failed",
    "Messages that finally failed at send time, by outcome class (permanent, retryable or "
    "ambiguous after the last attempt, config; expired: validity ended before a provider took it).",
    ["provider", "category"],
)
RETRIES: Final = Counter(
    "sms_retries",
    "Send attempts rescheduled for another try, by outcome class.",
    ["provider", "category"],
)
AMBIGUOUS: Final = Counter(
    "sms_ambiguous_attempts",
    "Send attempts whose outcome was unknown (timeout, 5xx, lease lost mid-call).",
    ["provider"],
)
RECONCILIATIONS: Final = Counter(
    "sms_reconciliations",
    "Reconciliations of ambiguous attempts: adopted (the provider had it), resend (it did not), "
    "error (the look-up failed).",
    ["provider", "result"],
)
SWEEP_LOOKUPS: Final = Counter(
    "sms_status_sweep_lookups",
    "Status sweeper lookups at the provider: checked (answered), retry (timed out or failed for a "
    "passing reason: asked again soon), refused (asked again after STATUS_SWEEP_AFTER_SECONDS).",
    ["provider", "result"],
)
SEND_LATENCY: Final = Histogram(
    "sms_send_duration_seconds",
    "Duration of provider send calls, by outcome class.",
    ["provider", "outcome"],
    buckets=_SEND_BUCKETS,
)

# Customer webhooks (dispatcher/webhooks.py)
WEBHOOK_ATTEMPTS: Final = Counter(
    "sms_webhook_attempts",
    "Webhook delivery attempts by outcome: delivered (2xx), retry (any other answer, no answer, "
    "or a refused address: tried again later), failed (410 Gone, or retried for "
    "WEBHOOK_RETRY_HOURS), dropped (its endpoint was disabled before it went out).",
    ["outcome"],
)
WEBHOOK_DURATION: Final = Histogram(
    "sms_webhook_attempt_duration_seconds",
    "Duration of webhook POSTs to customer endpoints, by outcome.",
    ["outcome"],
    buckets=_SEND_BUCKETS,
)
WEBHOOK_ENDPOINTS_DISABLED: Final = Counter(
    "sms_webhook_endpoints_disabled",
    "Webhook endpoints the dispatcher disabled: gone (answered 410), failing (no success for "
    "WEBHOOK_RETRY_HOURS; the operator is alerted).",
    ["reason"],
)
# Per endpoint, set from sms_webhook_health (enabled endpoints only; ids are few and ours).
WEBHOOK_BACKLOG: Final = Gauge(
    "sms_webhook_backlog",
    "Pending webhook deliveries per enabled endpoint.",
    ["endpoint_id"],
    multiprocess_mode=_SCRAPED_MODE,
)
WEBHOOK_OLDEST_PENDING: Final = Gauge(
    "sms_webhook_oldest_pending_seconds",
    "Age of each enabled endpoint's oldest pending delivery (0 when none).",
    ["endpoint_id"],
    multiprocess_mode=_SCRAPED_MODE,
)
WEBHOOK_FAILING: Final = Gauge(
    "sms_webhook_failing_seconds",
    "How long each enabled endpoint has failed without a success (0 when healthy).",
    ["endpoint_id"],
    multiprocess_mode=_SCRAPED_MODE,
)
WEBHOOK_FANOUT_LAG: Final = Gauge(
    "sms_webhook_fanout_lag_seconds",
    "Age of the oldest message event not made into webhook deliveries yet (0 when none); a long "
    "writing transaction anywhere on the server holds it back.",
    multiprocess_mode=_SCRAPED_MODE,
)
SCRAPED: Final = (
    OUTBOX_DEPTH,
    OUTBOX_DUE,
    OUTBOX_OLDEST_DUE,
    WEBHOOK_BACKLOG,
    WEBHOOK_OLDEST_PENDING,
    WEBHOOK_FAILING,
    WEBHOOK_FANOUT_LAG,
)


@functools.lru_cache(maxsize=512)
def child(metric: Counter | Histogram, *labels: Any) -> Any:
    """`metric.labels(*labels)`, cached: labels() validates and locks on every call, which shows
    in the dispatcher's per-message profile. Only for metrics that are never cleared (a cleared
    metric's cached child would no longer be exported); label values come from small fixed sets."""
    return metric.labels(*labels)


def _clear(*gauges: Gauge) -> None:
    """Drop every series of `gauges` in this process. In multiprocess mode prometheus-client
    warns that the workers' files keep them: exposition() never reads these gauges from there."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Clearing labels", UserWarning)
        for gauge in gauges:
            gauge.clear()


def set_queue(rows: Iterable[Mapping[str, Any]]) -> None:
    """Set the queue gauges from sms_queue_health rows (kind, state, depth, due, oldest due age).

    Series of a kind/state that has no rows any more are reset to 0 rather than left stale.
    """
    _clear(OUTBOX_DEPTH, OUTBOX_DUE, OUTBOX_OLDEST_DUE)
    for kind in ("send_sms", "deliver_alert", "deliver_webhook"):
        for state in ("ready", "leased"):
            OUTBOX_DEPTH.labels(kind, state).set(0)
        OUTBOX_DUE.labels(kind).set(0)
        OUTBOX_OLDEST_DUE.labels(kind).set(0)
    oldest: dict[str, float] = {}
    due: dict[str, float] = {}
    for row in rows:
        OUTBOX_DEPTH.labels(row["kind"], row["state"]).set(float(row["depth"]))
        due[row["kind"]] = due.get(row["kind"], 0.0) + float(row["due"])
        if row["oldest_due_seconds"] is not None:
            age = float(row["oldest_due_seconds"])
            oldest[row["kind"]] = max(oldest.get(row["kind"], 0.0), age)
    for kind, count in due.items():
        OUTBOX_DUE.labels(kind).set(count)
    for kind, age in oldest.items():
        OUTBOX_OLDEST_DUE.labels(kind).set(age)


def set_webhook_health(rows: Iterable[Mapping[str, Any]]) -> None:
    """Set the per-endpoint webhook gauges from `webhook_endpoints_health` rows; a disabled or
    removed endpoint's series go (cleared, then set for the enabled ones only). The fan-out's
    lag is the same on every row; 0 with no endpoint."""
    _clear(WEBHOOK_BACKLOG, WEBHOOK_OLDEST_PENDING, WEBHOOK_FAILING)
    lag = 0.0
    for row in rows:
        lag = float(row["fanout_lag_seconds"] or 0)
        if not row["enabled"]:
            continue
        endpoint = str(row["endpoint_id"])
        WEBHOOK_BACKLOG.labels(endpoint).set(float(row["pending"]))
        WEBHOOK_OLDEST_PENDING.labels(endpoint).set(float(row["oldest_pending_seconds"] or 0))
        WEBHOOK_FAILING.labels(endpoint).set(float(row["failing_seconds"] or 0))
    WEBHOOK_FANOUT_LAG.set(lag)


class _Exported(Collector):
    """What GET /metrics serves: every worker's counts summed from PROMETHEUS_MULTIPROC_DIR when
    it is set (else this process's registry), and the scraped gauges of this process alone."""

    def __init__(self, directory: str | None, scraped: bool) -> None:
        self._directory = directory
        self._scraped = scraped

    def collect(self) -> Iterator[Metric]:
        names = {family.name for gauge in SCRAPED for family in gauge.describe()}
        source: Collector = REGISTRY
        if self._directory:
            # Read afresh at each scrape: workers come, go and count meanwhile.
            source = multiprocess.MultiProcessCollector(None, self._directory)  # type: ignore[no-untyped-call]  # unannotated upstream
        for family in source.collect():
            if family.name not in names:
                yield family
        if self._scraped:
            for gauge in SCRAPED:
                yield from gauge.collect()


def exposition(*, scraped: bool = True) -> bytes:
    """The text exposition of the API's metrics (of all its worker processes); the gauges set
    from the database only when `scraped` (this scrape read them)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Exported(os.environ.get(MULTIPROC_ENV) or None, scraped))
    return generate_latest(registry)


def process_stopped() -> None:
    """A worker's last word: its files of live gauges go (its counts stay in the sums)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]  # unannotated upstream


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from other hosts
    """Serve /metrics on `port` from a background thread (the dispatcher's METRICS_PORT)."""
    start_http_server(port, addr=addr)
