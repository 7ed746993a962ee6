"""The scenarios `python -m chaos` knows: one fault each (`mix`: several), with the simulator's
fault settings chosen relative to the dispatchers' PROVIDER_TIMEOUT_SECONDS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chaos import nemesis
from chaos.nemesis import Nemesis

Faults = Callable[[float], dict[str, Any]]  # provider timeout (s) -> simulator settings

# A provider that takes a while to answer, so process faults catch sends in flight.
IN_FLIGHT = {"latency": 0.1, "jitter": 0.3}


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    faults: Faults
    nemesis: Nemesis | None = None
    recipients: int = 8  # distinct recipients the messages are spread over

    def linger(self, timeout: float) -> float:
        """Seconds after the heal during which the provider may still create held messages."""
        settings = self.faults(timeout)
        if settings.get("ingress_delay_rate"):
            return float(settings["ingress_delay_max"])
        return 0.0


def _none(timeout: float) -> dict[str, Any]:
    return {}


def _in_flight(timeout: float) -> dict[str, Any]:
    return dict(IN_FLIGHT)


def _hang(timeout: float) -> dict[str, Any]:
    # A hung request is held until the dispatcher gives up at its timeout (or hang_max).
    return {"hang_rate": 0.10, "hang_max": timeout + 30.0}


def _ingress(timeout: float) -> dict[str, Any]:
    # Held longer than the dispatcher waits, then created anyway: the first lookup misses it.
    return {
        "ingress_delay_rate": 0.05,
        "ingress_delay_min": timeout + 1.0,
        "ingress_delay_max": timeout + 6.0,
    }


def _errors5xx(timeout: float) -> dict[str, Any]:
    return {"server_error_rate": 0.20, "server_error_status": 503}


def _ratelimit(timeout: float) -> dict[str, Any]:
    return {"retry_after": 2.0}  # the storms themselves come and go (nemesis.rate_limit_storms)


def _callbacks(timeout: float) -> dict[str, Any]:
    return {
        "callback_drop_rate": 0.20,
        "callback_duplicate_rate": 0.20,
        "callback_reorder_rate": 0.20,
    }


def _mix(timeout: float) -> dict[str, Any]:
    return {
        **IN_FLIGHT,
        "hang_rate": 0.03,
        "hang_max": timeout + 30.0,
        "server_error_rate": 0.05,
        "rate_limit_rate": 0.05,
        "retry_after": 2.0,
        "callback_drop_rate": 0.10,
        "callback_duplicate_rate": 0.10,
        "callback_reorder_rate": 0.10,
        "ingress_delay_rate": 0.02,
        "ingress_delay_min": timeout + 1.0,
        "ingress_delay_max": timeout + 6.0,
    }


_ALL = (
    Scenario("none", "no fault: the control run", _none),
    Scenario(
        "kill", "SIGKILL a random dispatcher every 2-5 s, restart it", _in_flight, nemesis.kill
    ),
    Scenario(
        "pause",
        "SIGSTOP the busiest dispatcher past its lease, then SIGCONT",
        _in_flight,
        nemesis.pause,
    ),
    Scenario("hang", "10 % of sends accepted, then never answered", _hang),
    Scenario("ingress", "5 % of sends held timeout+1..+6 s, then created anyway", _ingress),
    Scenario("errors5xx", "20 % of sends answered 503 (not created)", _errors5xx),
    Scenario(
        "ratelimit",
        "429 storms (90 % of sends, Retry-After 2 s) on and off",
        _ratelimit,
        nemesis.rate_limit_storms,
    ),
    Scenario("callbacks", "20 % of callbacks dropped, 20 % doubled, 20 % reordered", _callbacks),
    Scenario("api-kill", "SIGKILL the API twice mid-load, restart it", _none, nemesis.api_kill),
    Scenario(
        "pg-restart",
        "crash-stop PostgreSQL mid-load for 3-6 s, start it again",
        _none,
        nemesis.pg_restart,
    ),
    Scenario(
        "mix",
        "hangs, 5xx, 429s, callback faults, ingress delays and dispatcher kills at once",
        _mix,
        nemesis.kill_sometimes,
    ),
    Scenario("hang-pair", "10 % accept-then-hang, all to 2 recipients", _hang, recipients=2),
    # Many of our messages to one recipient inside one reconciliation window: a lookup that cannot
    # compare bodies (SignalWire's message log has none) must still not adopt another's copy.
    Scenario("errors5xx-pair", "20 % 503s, all to 2 recipients", _errors5xx, recipients=2),
)
SCENARIOS: dict[str, Scenario] = {s.name: s for s in _ALL}
QUICK = ("kill", "ingress", "callbacks", "api-kill", "pg-restart")
