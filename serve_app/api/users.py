"""Users of the web UI: first-start owner, login and logout, users, and members of applications."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from serve_app.auth import require_admin, require_principal
from serve_app.context import AppContext, request_context
from serve_app.errors import ADMIN_TOKEN_REQUIRED, RATE_LIMITED, ApiError
from serve_app.sessions import (FORBIDDEN, SESSION_COOKIE, Principal, clear_session_cookie,
                                set_session_cookie)
from serve_app.user_schemas import (LoginBody, Me, MemberBody, MemberOut, SetupBody, SetupState, UserCreate,
                                    UserOut, UsersPage, UserUpdate)
from serve_app.validation import RowId
from store.errors import Conflict
from store.users import LoginThrottled, Session, User, UserStore

auth_router = APIRouter(prefix="/api/v1/auth", tags=["users"])
router = APIRouter(prefix="/api/v1/admin", tags=["users"])
Ctx = Annotated[AppContext, Depends(request_context)]
Admin = Annotated[Principal, Depends(require_admin)]
Caller = Annotated[Principal, Depends(require_principal)]


def user_out(user: User) -> UserOut:
    return UserOut(id=user.id, email=user.email, global_role=user.global_role, created_at=user.created_at.isoformat())


async def _users(context: AppContext) -> UserStore:
    return UserStore((await context.control()).pool)


def _me(session: Session, roles: dict[int, str]) -> Me:
    return Me(user=user_out(session.user), csrf_token=session.csrf_token, applications=roles)


@auth_router.get("/setup", response_model=SetupState)
async def setup_state(context: Ctx):
    """Whether the platform still waits for its owner."""
    return SetupState(needs_owner=not await (await _users(context)).has_owner())


@auth_router.post("/setup", response_model=Me, status_code=201)
async def create_owner(body: SetupBody, response: Response, context: Ctx):
    """Create the owner, once (while there is none), proving with the admin token printed on the first
    start; logs them in."""
    if not await (await context.control()).check_admin_token(body.admin_token):
        raise ApiError(401, "wrong admin token: it is printed by the first start of the server "
                            "(or set as FACES_ADMIN_TOKEN)", ADMIN_TOKEN_REQUIRED)
    users = await _users(context)
    owner = await users.create(body.email, body.password, "owner")
    token, session = await users.open_session(owner.id)
    set_session_cookie(response, token, context.settings.ui_secure_cookies)
    return _me(session, {})


@auth_router.post("/login", response_model=Me)
async def login(body: LoginBody, response: Response, context: Ctx):
    """Log in: a session cookie (HttpOnly, SameSite=Strict) and the CSRF token for changes."""
    users = await _users(context)
    try:
        opened = await users.login(body.email, body.password)
    except LoginThrottled as exc:
        raise ApiError(429, str(exc), RATE_LIMITED, {"Retry-After": str(exc.retry_after_s)}) from None
    if opened is None:
        raise ApiError(401, "wrong e-mail or password", ADMIN_TOKEN_REQUIRED)
    token, session = opened
    set_session_cookie(response, token, context.settings.ui_secure_cookies)
    return _me(session, await users.application_roles(session.user.id))


@auth_router.post("/logout", status_code=204)
async def logout(request: Request, caller: Caller, context: Ctx):
    """End the session (its cookie stops working at once, on every replica)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await (await _users(context)).close_session(cookie)
    response = Response(status_code=204)
    clear_session_cookie(response, context.settings.ui_secure_cookies)
    return response


@auth_router.get("/me", response_model=Me)
async def me(request: Request, caller: Caller, context: Ctx):
    """The caller: their user, the session's CSRF token and their roles per application."""
    if caller.user is None:
        return Me(user=None, csrf_token=None, applications={})
    session = await (await _users(context)).session(request.cookies[SESSION_COOKIE])
    return _me(session, caller.app_roles)


@router.get("/users", response_model=UsersPage)
async def list_users(admin: Admin, context: Ctx, page: int = Query(0, ge=0, le=10**9),
                     size: int = Query(50, ge=1, le=500)):
    users, total = await (await _users(context)).page(page * size, size)
    return UsersPage(users=[user_out(u) for u in users], total=total)


def _may_manage(admin: Principal, role: str) -> None:
    """Administrators manage users; only the owner (or the admin token) makes or changes administrators."""
    if role != "user" and admin.user is not None and admin.user.global_role != "owner":
        raise ApiError(403, "only the owner may create or change administrators", FORBIDDEN)


@router.post("/users", response_model=UserOut, status_code=201)
async def create_user(body: UserCreate, admin: Admin, context: Ctx):
    _may_manage(admin, body.global_role)
    return user_out(await (await _users(context)).create(body.email, body.password, body.global_role))


@router.put("/users/{user_id}", response_model=UserOut)
async def update_user(user_id: RowId, body: UserUpdate, admin: Admin, context: Ctx):
    """Change a user's global role or password (their sessions end with a new password)."""
    users = await _users(context)
    target = await users.get(user_id)
    if target.global_role == "owner":
        if admin.user is None or admin.user.id != target.id or body.global_role is not None:
            raise ApiError(403, "the owner's role cannot be changed, and only they change their password",
                           FORBIDDEN)
    else:
        _may_manage(admin, target.global_role)
        _may_manage(admin, body.global_role or "user")
    return user_out(await users.update(user_id, global_role=body.global_role, password=body.password))


@router.delete("/users/{user_id}", response_model=UserOut)
async def delete_user(user_id: RowId, admin: Admin, context: Ctx):
    users = await _users(context)
    target = await users.get(user_id)
    if target.global_role == "owner":
        raise ApiError(403, "the owner cannot be deleted", FORBIDDEN)
    _may_manage(admin, target.global_role)
    return user_out(await users.delete(user_id))


@router.get("/applications/{application_id}/members", response_model=list[MemberOut])
async def list_members(application_id: RowId, caller: Caller, context: Ctx):
    caller.require_app(application_id, "user")
    return [MemberOut(user=user_out(u), role=r) for u, r in await (await _users(context)).members(application_id)]


@router.put("/applications/{application_id}/members", response_model=MemberOut)
async def set_member(application_id: RowId, body: MemberBody, caller: Caller, context: Ctx):
    """Give a user a role in the application (owners of the application, and global administrators)."""
    caller.require_app(application_id, "owner")
    users = await _users(context)
    user = await users.by_email(body.email)
    if caller.user is not None and caller.user.id == user.id:
        raise Conflict("you cannot change your own role")
    await (await context.control()).get_application(application_id)
    await users.set_application_role(application_id, user.id, body.role)
    return MemberOut(user=user_out(user), role=body.role)


@router.delete("/applications/{application_id}/members/{user_id}", status_code=204)
async def remove_member(application_id: RowId, user_id: RowId, caller: Caller, context: Ctx):
    caller.require_app(application_id, "owner")
    await (await _users(context)).remove_application_role(application_id, user_id)
    return Response(status_code=204)
