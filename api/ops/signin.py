"""GET/POST /ops/sign-in and POST /ops/sign-out."""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from api.connections import autocommit
from api.ops.forms import SIGN_IN_PATH, FormRefused, checked_form, csrf_refused, read_form
from api.ops.render import page
from api.ops.session import (
    CSRF_FIELD,
    SIGN_IN_COOKIE,
    close_session,
    current_operator,
    keep_sign_in_token,
    open_session,
    same_token,
    sign_in_token,
)
from api.state import state
from shared import apikeys

BAD_KEY: Final = "This is not a valid API key: it is unknown, mistyped or revoked."
SENDER_KEY: Final = (
    "This is a sender key. The console needs an operator key "
    "(smsctl api-keys create --operator NAME)."
)


def _form(request: Request, status: int = 200, error: str | None = None) -> Response:
    token = sign_in_token(request)
    response = page(request, "sign_in.html", None, status=status, token=token, error=error)
    keep_sign_in_token(request, response, token)
    return response


async def sign_in_form(request: Request) -> Response:
    if await current_operator(request) is not None:
        return RedirectResponse("/ops", status_code=303)
    return _form(request)


async def sign_in(request: Request) -> Response:
    """An operator key opens a session; a wrong key is a 401, a sender key a 403."""
    form = await read_form(request)
    if not same_token(request.cookies.get(SIGN_IN_COOKIE), form.get(CSRF_FIELD)):
        return csrf_refused(request, None)
    key = form.get("key", "").strip()
    caller = None
    if key:
        async with autocommit(state(request).pool) as conn:
            caller = await apikeys.authenticate(conn, key)
    if caller is None:
        return _form(request, 401, BAD_KEY)
    if caller.role != "operator":
        return _form(request, 403, SENDER_KEY)
    response = RedirectResponse("/ops", status_code=303)
    if not await open_session(request, response, caller.id):
        return _form(request, 403, SENDER_KEY)
    return response


async def sign_out(request: Request) -> Response:
    operator = await current_operator(request)
    if operator is None:
        return RedirectResponse(SIGN_IN_PATH, status_code=303)
    try:
        await checked_form(request, operator)
    except FormRefused as refused:
        return refused.response
    response = RedirectResponse(SIGN_IN_PATH, status_code=303)
    await close_session(request, response)
    return response
