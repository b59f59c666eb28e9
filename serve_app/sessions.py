"""Who makes a request: the admin token (automation) or a user of the web UI by session cookie.

A session cookie is HttpOnly, SameSite=Strict and Secure (``FACES_UI_SECURE_COOKIES``); requests that
change something must also carry the session's CSRF token in ``x-csrf-token``, which only the UI's
own pages can read (from ``GET /api/v1/auth/me``).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from fastapi import Request, Response

from serve_app.context import AppContext
from serve_app.errors import ADMIN_TOKEN_REQUIRED, ApiError
from store.errors import NotFound
from store.users import RANK, SESSION_HOURS, User, UserStore

SESSION_COOKIE = "faces_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
FORBIDDEN = 34


@dataclass(frozen=True)
class Principal:
    """The admin token (``user`` None) or a logged-in user with their roles per application."""

    user: User | None
    app_roles: dict[int, str] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        """The admin token, or a user whose global role is owner or administrator: every application."""
        return self.user is None or self.user.global_role in ("owner", "administrator")

    def app_role(self, application_id: int) -> str | None:
        return "owner" if self.is_admin else self.app_roles.get(application_id)

    def require_app(self, application_id: int, role: str) -> None:
        """At least ``role`` in the application: 404 for an application the user may not see (as if
        it did not exist), 403 for one they see without the role."""
        held = self.app_role(application_id)
        if held is None:
            raise NotFound(f"application {application_id} not found")
        if RANK[held] < RANK[role]:
            raise ApiError(403, f"your role in this application ({held}) does not allow this; it needs {role}",
                           FORBIDDEN)

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ApiError(403, "only the owner and administrators may do this", FORBIDDEN)


def admin_token_of(request: Request) -> str | None:
    token = request.headers.get("x-admin-token")
    authorization = request.headers.get("authorization")
    if not token and authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    return token or None


async def authenticate(request: Request, context: AppContext) -> Principal | None:
    """The request's principal; None without any credential. 401 for a wrong admin token or an
    expired session, 403 for a change without the session's CSRF token."""
    control = await context.control()
    token = admin_token_of(request)
    if token is not None:
        if not await control.check_admin_token(token):
            raise ApiError(401, "invalid admin token", ADMIN_TOKEN_REQUIRED)
        return Principal(None)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    users = UserStore(control.pool)
    session = await users.session(cookie)
    if session is None:
        raise ApiError(401, "your session has ended; log in again", ADMIN_TOKEN_REQUIRED)
    if request.method not in SAFE_METHODS and not hmac.compare_digest(
            request.headers.get(CSRF_HEADER, ""), session.csrf_token):
        raise ApiError(403, "missing or wrong CSRF token (x-csrf-token)", FORBIDDEN)
    return Principal(session.user, await users.application_roles(session.user.id))


def set_session_cookie(response: Response, value: str, secure: bool) -> None:
    response.set_cookie(SESSION_COOKIE, value, max_age=SESSION_HOURS * 3600, path="/", httponly=True,
                        samesite="strict", secure=secure)


def clear_session_cookie(response: Response, secure: bool) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=secure)
