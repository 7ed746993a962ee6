"""The simulator's ASGI app: both providers' APIs plus the `/_sim` control endpoints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator import inbound, signalwire_api, twilio_api, webhook_sink
from simulator.config import ConfigError, SimConfig
from simulator.pace import max_in_window, rule_for
from simulator.state import SimState


def create_app(config: SimConfig | None = None) -> Starlette:
    """Build a simulator; `app.state.sim` is its SimState (tests may reach in)."""
    state = SimState(config or SimConfig())
    sink = webhook_sink.WebhookSink(state.config)

    async def get_config(request: Request) -> Response:
        return JSONResponse(state.config.public())

    async def set_config(request: Request) -> Response:
        try:
            changes = json.loads(await request.body() or b"{}")
            if not isinstance(changes, dict):
                raise ConfigError("the body must be a JSON object")
            state.config.update(changes)
        except (ValueError, ConfigError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        if "seed" in changes:
            state.faults.reseed()
        return JSONResponse(state.config.public())

    async def messages(request: Request) -> Response:
        return JSONResponse({**state.store.report(), "ingress_held": state.ingress_held})

    def sender_report(number: str) -> dict[str, Any]:
        sends = state.pace.sends(number)
        rule = rule_for(state.config.enforce_mps, number)
        return {
            "sends": [{"at": s.at, "segments": s.segments} for s in sends],
            "segments": sum(s.segments for s in sends),
            "max_window_segments": max_in_window(sends),
            "refused": state.pace.refused[number],
            "rule": None if rule is None else rule.public(),
        }

    async def sends(request: Request) -> Response:
        """Accepted sends per `from` number: `at` is the simulator's time.monotonic()."""
        number = request.query_params.get("from")
        if number is not None:
            return JSONResponse({"from": number, "clock": "monotonic", **sender_report(number)})
        every = {n: sender_report(n) for n in state.pace.senders()}
        return JSONResponse({"clock": "monotonic", "senders": every})

    async def texted(request: Request) -> Response:
        return await inbound.post_inbound(request, state)

    async def reset(request: Request) -> Response:
        state.reset()
        sink.clear()
        return JSONResponse({"reset": True})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await state.aclose()

    app = Starlette(
        routes=[
            *twilio_api.routes(state),
            *signalwire_api.routes(state),
            Route("/_sim/config", get_config, methods=["GET"]),
            Route("/_sim/config", set_config, methods=["POST"]),
            Route("/_sim/messages", messages, methods=["GET"]),
            Route("/_sim/sends", sends, methods=["GET"]),
            Route("/_sim/inbound", texted, methods=["POST"]),
            *webhook_sink.routes(sink),
            Route("/_sim/reset", reset, methods=["POST"]),
            Route("/_sim/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.sim = state
    app.state.webhook_sink = sink
    return app
