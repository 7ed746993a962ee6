"""The ops console (DESIGN section 14): server-rendered pages for operators under /ops, signed in
with an operator key. No JavaScript; charts are SVG drawn here."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api.ops import pages, signin, timeline
from api.ops.render import STATIC_DIR

routes: list[BaseRoute] = [
    Route("/ops", pages.overview, methods=["GET"]),
    Route("/ops/sign-in", signin.sign_in_form, methods=["GET"]),
    Route("/ops/sign-in", signin.sign_in, methods=["POST"]),
    Route("/ops/sign-out", signin.sign_out, methods=["POST"]),
    Route("/ops/messages", pages.search, methods=["GET"]),
    Route("/ops/messages/{message_id}", timeline.message_page, methods=["GET"]),
    Route("/ops/messages/{message_id}/reveal", timeline.reveal, methods=["POST"]),
    Route("/ops/messages/{message_id}/retry", timeline.retry, methods=["POST"]),
    Route("/ops/messages/{message_id}/cancel", timeline.cancel, methods=["POST"]),
    Route("/ops/failed", pages.failed, methods=["GET"]),
    Route("/ops/suppressions", pages.suppressions_page, methods=["GET"]),
    Route("/ops/webhooks", pages.webhooks, methods=["GET"]),
    Route("/ops/senders", pages.senders, methods=["GET"]),
    Mount("/ops/static", StaticFiles(directory=STATIC_DIR), name="ops-static"),
]
