"""The console's guards: who is signed in, and a posted form with its CSRF token checked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Final
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from api.ops.render import page
from api.ops.session import CSRF_FIELD, Operator, current_operator, same_token

SIGN_IN_PATH: Final = "/ops/sign-in"
# The console's forms hold a few short fields; anything bigger is not one of them.
MAX_FORM_BYTES: Final = 8192

Handler = Callable[[Request, Operator], Awaitable[Response]]


def signed_in(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Run `handler` with the request's operator; without a session, go to the sign-in page."""

    @wraps(handler)
    async def guarded(request: Request) -> Response:
        operator = await current_operator(request)
        if operator is None:
            return RedirectResponse(SIGN_IN_PATH, status_code=303)
        return await handler(request, operator)

    return guarded


class FormRefused(Exception):
    """A posted form we will not act on; `response` says why (nothing was changed)."""

    def __init__(self, response: Response) -> None:
        super().__init__("form refused")
        self.response = response


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form's fields (the first of each name)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if content_type != "application/x-www-form-urlencoded" or len(body) > MAX_FORM_BYTES:
        return {}
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), max_num_fields=20):
        fields.setdefault(name, value)
    return fields


def csrf_refused(request: Request, operator: Operator | None) -> Response:
    """The one 403 of a form posted without its token (or with another session's)."""
    return page(
        request,
        "error.html",
        operator,
        status=403,
        title="Form refused",
        field=CSRF_FIELD,
        message=(
            "The form did not carry this session's security token (csrf), so nothing was "
            "changed. Reload the page and submit the form again."
        ),
    )


async def checked_form(request: Request, operator: Operator) -> dict[str, str]:
    """The posted form when its CSRF token is this session's; FormRefused otherwise."""
    form = await read_form(request)
    if not same_token(operator.csrf, form.get(CSRF_FIELD)):
        raise FormRefused(csrf_refused(request, operator))
    return form


def back_to(form: dict[str, str], default: str) -> str:
    """Where to go after an action: the form's `return_to` when it is a console path (no
    query: the action's notice is added to it)."""
    target = form.get("return_to", "")
    ok = target.startswith("/ops/") and not any(c in target for c in ("//", "\\", "?", "#"))
    return target if ok else default
