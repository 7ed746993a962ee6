"""Bearer-key authentication: one 401 body for a missing, malformed, wrong or revoked key."""

from __future__ import annotations

from starlette.requests import Request

from api.connections import autocommit
from api.errors import ApiError
from api.state import state
from shared import apikeys
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


async def require_key(request: Request) -> int:
    """The id of the request's API key; raises the 401 ApiError otherwise."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise unauthorized()
    async with autocommit(state(request).pool) as conn:
        key_id = await apikeys.authenticate(conn, token)
    if key_id is None:
        raise unauthorized()
    return key_id


async def require_key_and_default_sender(request: Request) -> tuple[int, Sender | None]:
    """The request's API key id and the default sender, read in one round trip (the send paths)."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise unauthorized()
    async with autocommit(state(request).pool) as conn:
        key_id, default = await apikeys.authenticate_with_default_sender(conn, token)
    if key_id is None:
        raise unauthorized()
    return key_id, default
