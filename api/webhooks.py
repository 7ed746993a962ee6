"""Signed provider status callbacks (filled in by the callbacks work)."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
