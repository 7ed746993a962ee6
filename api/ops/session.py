"""Console sign-in: an operator key posted once opens a server-side session (sms_ops_sessions);
the browser holds only a random token in an HttpOnly, SameSite=Strict cookie (Secure behind
https). Every form carries a CSRF token derived from the session token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from api.connections import autocommit
from api.state import state
from shared.queries import q

SESSION_COOKIE: Final = "ops_session"
# The sign-in form has no session yet: its CSRF token is a random cookie the form echoes back.
SIGN_IN_COOKIE: Final = "ops_sign_in"
CSRF_FIELD: Final = "csrf"
COOKIE_PATH: Final = "/ops"
SESSION_LIFETIME: Final = timedelta(hours=8)
MAX_TOKEN_LENGTH: Final = 100


@dataclass(frozen=True)
class Operator:
    """The signed-in operator key of a console request."""

    key_id: int
    key_name: str
    csrf: str  # the token every form of this session carries

    @property
    def actor(self) -> str:
        """What the events and logs name as having acted (as the API's `api-key:N`)."""
        return f"api-key:{self.key_id}"


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def csrf_for(session_token: str) -> str:
    """The CSRF token of a session: an HMAC keyed by its secret token, so none is stored and
    none can be made without the cookie (which scripts cannot read: HttpOnly)."""
    return hmac.new(session_token.encode("ascii"), b"ops-csrf", hashlib.sha256).hexdigest()


def _plausible(token: str | None) -> bool:
    return bool(token) and len(token or "") <= MAX_TOKEN_LENGTH and (token or "").isascii()


def is_https(request: Request) -> bool:
    """Whether the browser reached us over https: the request's own scheme (uvicorn applies a
    trusted proxy's X-Forwarded-Proto) or, behind a proxy that does not say, PUBLIC_BASE_URL."""
    if request.url.scheme == "https":
        return True
    return state(request).settings.public_base_url.startswith("https://")


def _set_cookie(
    request: Request, response: Response, name: str, value: str, max_age: int | None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


async def current_operator(request: Request) -> Operator | None:
    """The operator of this request's session cookie, or None (no, unknown or expired session,
    or a key revoked or no longer an operator)."""
    token = request.cookies.get(SESSION_COOKIE)
    if token is None or not _plausible(token):
        return None
    async with autocommit(state(request).pool) as conn:
        cur = await conn.execute(
            q("api_keys_session_authenticate"), {"token_sha256": _sha256(token)}
        )
        row = await cur.fetchone()
    if row is None:
        return None
    return Operator(int(row[0]), str(row[1]), csrf_for(token))


async def open_session(request: Request, response: Response, key_id: int) -> bool:
    """Open a session for operator key `key_id` and set its cookie on `response`; False when
    the key stopped being an active operator key meanwhile."""
    token = secrets.token_urlsafe(32)
    params = {"token_sha256": _sha256(token), "api_key_id": key_id, "lifetime": SESSION_LIFETIME}
    async with autocommit(state(request).pool) as conn:
        row = await (await conn.execute(q("api_keys_session_open"), params)).fetchone()
    if row is None:
        return False
    _set_cookie(request, response, SESSION_COOKIE, token, int(SESSION_LIFETIME.total_seconds()))
    response.delete_cookie(SIGN_IN_COOKIE, path=COOKIE_PATH)
    return True


async def close_session(request: Request, response: Response) -> None:
    """Delete this request's session (if any) and its cookie."""
    token = request.cookies.get(SESSION_COOKIE)
    if token is not None and _plausible(token):
        async with autocommit(state(request).pool) as conn:
            await conn.execute(q("api_keys_session_close"), {"token_sha256": _sha256(token)})
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)


def sign_in_token(request: Request) -> str:
    """The sign-in form's CSRF token: the browser's current one, or a new one."""
    token = request.cookies.get(SIGN_IN_COOKIE)
    return token if token is not None and _plausible(token) else secrets.token_urlsafe(32)


def keep_sign_in_token(request: Request, response: Response, token: str) -> None:
    """Set the sign-in form's CSRF cookie (lives as long as a form may sit open)."""
    _set_cookie(request, response, SIGN_IN_COOKIE, token, 3600)


def same_token(expected: str | None, given: object) -> bool:
    """Constant-time comparison of a form's CSRF field with what it must be."""
    if not expected or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii", "replace"))
