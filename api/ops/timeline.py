"""One message's page (its events in order, the recipient masked until revealed) and what an
operator does there: reveal the recipient, retry, cancel. Retry and cancel are the API's own
operations (shared.operations), so they refuse the same things with the same codes."""

from __future__ import annotations

import logging
from typing import Final
from uuid import UUID

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from api.ops import data
from api.ops.forms import FormRefused, back_to, checked_form, signed_in
from api.ops.render import page
from api.ops.session import Operator
from api.state import state
from shared import messages, metrics, operations

log = logging.getLogger(__name__)
RETRYABLE_LOOKING: Final = frozenset({"failed", "undelivered", "expired"})
DONE: Final = {"retry": "Requeued: the message is pending again.", "cancel": "Canceled."}


def _message_id(request: Request) -> UUID | None:
    try:
        return UUID(request.path_params["message_id"])
    except ValueError:
        return None


def _not_found(request: Request, operator: Operator) -> Response:
    return page(
        request,
        "error.html",
        operator,
        status=404,
        title="No such message",
        field="message_id",
        message="No message has this id.",
    )


async def _timeline(
    request: Request,
    operator: Operator,
    message_id: UUID,
    *,
    reveal: bool = False,
    refusal: operations.Refused | None = None,
    status: int = 200,
) -> Response:
    async with state(request).pool.connection() as conn:
        row = await messages.get_message(conn, message_id)
        if row is None:
            return _not_found(request, operator)
        events = await messages.get_events(conn, message_id)
    return page(
        request,
        "message.html",
        operator,
        status=status,
        message=row,
        events=events,
        reveal=reveal,
        refusal=refusal,
        done=DONE.get(request.query_params.get("done", "")),
        can_retry=row["delivery_status"] in RETRYABLE_LOOKING,
        can_cancel=row["delivery_status"] == "pending",
    )


@signed_in
async def message_page(request: Request, operator: Operator) -> Response:
    message_id = _message_id(request)
    if message_id is None:
        return _not_found(request, operator)
    return await _timeline(request, operator, message_id)


@signed_in
async def reveal(request: Request, operator: Operator) -> Response:
    """Show the full recipient, once, and record that this operator key saw it."""
    try:
        await checked_form(request, operator)
    except FormRefused as refused:
        return refused.response
    message_id = _message_id(request)
    if message_id is None:
        return _not_found(request, operator)
    async with state(request).pool.connection() as conn:
        found = await data.record_reveal(
            conn, message_id, api_key_id=operator.key_id, actor=operator.actor
        )
    if not found:
        return _not_found(request, operator)
    log.info(
        "recipient revealed",
        extra={
            "action": "recipient_revealed",
            "message_id": str(message_id),
            "actor": operator.actor,
        },
    )
    return await _timeline(request, operator, message_id, reveal=True)


async def _operate(request: Request, operator: Operator, action: str) -> Response:
    try:
        form = await checked_form(request, operator)
    except FormRefused as refused:
        return refused.response
    message_id = _message_id(request)
    if message_id is None:
        return _not_found(request, operator)
    app = state(request)
    async with app.pool.connection() as conn:
        try:
            if action == "cancel":
                await operations.cancel(conn, message_id, actor=operator.actor)
            else:
                await operations.requeue(conn, message_id, actor=operator.actor)
        except operations.NotFound:
            return _not_found(request, operator)
        except operations.Refused as e:
            return await _timeline(request, operator, message_id, refusal=e, status=409)
    metrics.OPERATOR_ACTIONS.labels(action).inc()
    if action == "retry":
        app.wakeup.wake()
    target = back_to(form, f"/ops/messages/{message_id}")
    return RedirectResponse(f"{target}?done={action}", status_code=303)


@signed_in
async def retry(request: Request, operator: Operator) -> Response:
    return await _operate(request, operator, "retry")


@signed_in
async def cancel(request: Request, operator: Operator) -> Response:
    return await _operate(request, operator, "cancel")
