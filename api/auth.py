"""Bearer-key authentication: one 401 body for a missing, malformed, wrong or revoked key; the
key's role, limits and countries come with the same read."""

from __future__ import annotations

from starlette.requests import Request

from api.connections import autocommit
from api.errors import ApiError
from api.state import state
from shared import apikeys
from shared.apikeys import Caller
from shared.senders import Sender

UNAUTHORIZED_MESSAGE = "a valid API key is required: Authorization: Bearer <key>"


def unauthorized() -> ApiError:
    """The one 401 of every refused key."""
    return ApiError(
        401,
        code="unauthorized",
        message=UNAUTHORIZED_MESSAGE,
        headers={"WWW-Authenticate": "Bearer"},
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, None when absent or malformed."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


async def require_caller(request: Request) -> Caller:
    """The request's API key with its role, limits and countries (one round trip); raises the
    401 ApiError otherwise."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise unauthorized()
    async with autocommit(state(request).pool) as conn:
        caller = await apikeys.authenticate(conn, token)
    if caller is None:
        raise unauthorized()
    return caller


async def require_key(request: Request) -> int:
    """The id of the request's API key; raises the 401 ApiError otherwise."""
    return (await require_caller(request)).id


async def require_caller_and_default_sender(request: Request) -> tuple[Caller, Sender | None]:
    """The request's API key (as require_caller) and the default sender, read in one round trip
    (the send paths), grouped with concurrent requests' (api/key_reads.py)."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise unauthorized()
    app = state(request)
    if app.key_reads is not None:
        caller, default = await app.key_reads.read(token)
    else:
        async with autocommit(app.pool) as conn:
            caller, default = await apikeys.authenticate_with_default_sender(conn, token)
    if caller is None:
        raise unauthorized()
    return caller, default
