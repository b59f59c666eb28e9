"""Who may call what, as FastAPI dependencies: API keys, the admin token, and web UI sessions."""

from __future__ import annotations

from fastapi import Depends, Header, Request

from serve_app.context import AppContext, request_context
from serve_app.errors import (ADMIN_TOKEN_REQUIRED, BAD_PARAMETER, MISSING_API_KEY, UNKNOWN_API_KEY,
                              WRONG_SERVICE_TYPE, ApiError)
from serve_app.sessions import SAFE_METHODS, Principal, authenticate
from store.control import Service

# POST routes that only read a service's gallery: a user role in the application is enough for them.
_READING_POSTS = ("/recognize", "/verify")


def _check_type(service: Service, kind: str) -> None:
    if service.type != kind:
        raise ApiError(403, f"this API key belongs to a {service.type} service; this endpoint needs "
                            f"a {kind} service key", WRONG_SERVICE_TYPE)


async def _service_of_principal(request: Request, service_ref: str, kind: str, context: AppContext) -> Service:
    """The service named by ``x-service-id`` for a UI session or the admin token, with the caller's role
    in its application checked: ``user`` to read and recognize, ``administrator`` to change."""
    principal = await authenticate(request, context)
    if principal is None:
        raise ApiError(401, "x-service-id needs a session or the admin token", MISSING_API_KEY)
    if not service_ref.isdigit() or len(service_ref) > 18:
        raise ApiError(400, "x-service-id must be a service id", BAD_PARAMETER)
    service = await (await context.control()).get_service(int(service_ref))
    reading = request.method in SAFE_METHODS or request.url.path.endswith(_READING_POSTS)
    principal.require_app(service.application_id, "user" if reading else "administrator")
    _check_type(service, kind)
    return service


def service_key(kind: str):
    """Dependency: the service of the request's ``x-api-key``, which must be of type ``kind``; or, for
    the web UI and automation, the service ``x-service-id`` with a session or the admin token."""

    async def dependency(request: Request, x_api_key: str | None = Header(None),
                         x_service_id: str | None = Header(None),
                         context: AppContext = Depends(request_context)) -> Service:
        if not x_api_key and x_service_id:
            service = await _service_of_principal(request, x_service_id.strip(), kind, context)
        else:
            if not x_api_key:
                raise ApiError(401, "missing x-api-key header", MISSING_API_KEY)
            service = await (await context.control()).service_by_key(x_api_key.strip())
            if service is None:
                raise ApiError(401, "unknown API key", UNKNOWN_API_KEY)
            _check_type(service, kind)
        request.state.service_id = service.id
        await context.admit(service)
        return service

    return dependency


async def require_principal(request: Request, context: AppContext = Depends(request_context)) -> Principal:
    """Dependency: the admin token or a UI session (401 without either)."""
    principal = await authenticate(request, context)
    if principal is None:
        raise ApiError(401, "admin token required (x-admin-token header or Authorization: Bearer), or log in",
                       ADMIN_TOKEN_REQUIRED)
    return principal


async def require_admin(principal: Principal = Depends(require_principal)) -> Principal:
    """Dependency: the admin token, or a session of the owner or an administrator."""
    principal.require_admin()
    return principal


def admin_or_service_key(kind: str):
    """Dependency: a ``kind`` service's ``x-api-key`` (returns the service) or the admin's rights (returns None)."""
    key_check = service_key(kind)

    async def dependency(request: Request, x_api_key: str | None = Header(None),
                         context: AppContext = Depends(request_context)) -> Service | None:
        if x_api_key:
            return await key_check(request, x_api_key, None, context)
        principal = await authenticate(request, context)
        if principal is None:
            raise ApiError(401, f"an admin token or a {kind} service key (x-api-key) is required", MISSING_API_KEY)
        principal.require_admin()
        return None

    return dependency


recognition_service = service_key("recognition")
detection_service = service_key("detection")
verification_service = service_key("verification")
