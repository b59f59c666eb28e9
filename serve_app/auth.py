"""API key and admin token checks, as FastAPI dependencies."""

from __future__ import annotations

from fastapi import Depends, Header, Request

from serve_app.context import AppContext, request_context
from serve_app.errors import (ADMIN_TOKEN_REQUIRED, MISSING_API_KEY, UNKNOWN_API_KEY, WRONG_SERVICE_TYPE,
                              ApiError)
from store.control import Service


def service_key(kind: str):
    """Dependency: the service of the request's ``x-api-key``, which must be of type ``kind``."""

    async def dependency(request: Request, x_api_key: str | None = Header(None),
                         context: AppContext = Depends(request_context)) -> Service:
        if not x_api_key:
            raise ApiError(401, "missing x-api-key header", MISSING_API_KEY)
        service = await (await context.control()).service_by_key(x_api_key.strip())
        if service is None:
            raise ApiError(401, "unknown API key", UNKNOWN_API_KEY)
        if service.type != kind:
            raise ApiError(403, f"this API key belongs to a {service.type} service; this endpoint needs "
                                f"a {kind} service key", WRONG_SERVICE_TYPE)
        request.state.service_id = service.id
        await context.admit(service)
        return service

    return dependency


async def require_admin(x_admin_token: str | None = Header(None), authorization: str | None = Header(None),
                        context: AppContext = Depends(request_context)) -> None:
    """Dependency: the admin token, as ``x-admin-token`` or ``Authorization: Bearer``."""
    token = x_admin_token
    if not token and authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    if not token:
        raise ApiError(401, "admin token required (x-admin-token header or Authorization: Bearer)",
                       ADMIN_TOKEN_REQUIRED)
    if not await (await context.control()).check_admin_token(token):
        raise ApiError(401, "invalid admin token", ADMIN_TOKEN_REQUIRED)


def admin_or_service_key(kind: str):
    """Dependency: a ``kind`` service's ``x-api-key`` (returns the service) or the admin token (returns None)."""
    key_check = service_key(kind)

    async def dependency(request: Request, x_api_key: str | None = Header(None),
                         x_admin_token: str | None = Header(None), authorization: str | None = Header(None),
                         context: AppContext = Depends(request_context)) -> Service | None:
        if x_api_key:
            return await key_check(request, x_api_key, context)
        if not x_admin_token and not authorization:
            raise ApiError(401, f"an admin token or a {kind} service key (x-api-key) is required", MISSING_API_KEY)
        await require_admin(x_admin_token, authorization, context)
        return None

    return dependency


recognition_service = service_key("recognition")
detection_service = service_key("detection")
verification_service = service_key("verification")
