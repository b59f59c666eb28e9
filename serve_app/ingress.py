"""The HTTP ingress deployment: the FastAPI app with every router, auth, errors, body limits and metrics."""

from __future__ import annotations

import time

from fastapi import FastAPI
from ray import serve

from faces_settings import Settings
from serve_app.body_limits import BodyLimits, RouteLimits
from serve_app.api import (admin, detection, health, jobs, quotas, recognition, server, subjects, unknowns, users,
                           verification, video)
from serve_app.context import AppContext, get_context, set_context
from serve_app.errors import install_error_handlers
from serve_app.metrics import LATENCY, REQUESTS
from serve_app.ui_files import ui_files


class ObserveRequests:
    """ASGI middleware: Prometheus metrics, per-service request statistics, the ``x-faces-replica`` header.

    Plain ASGI rather than ``@app.middleware("http")``, which wraps every request in an extra task and
    a pair of memory streams.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        context = get_context()
        status = 500

        async def send_with_replica(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-faces-replica", context.replica.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_replica)
        finally:
            route = scope.get("route")
            endpoint = f"{scope['method']} {route.path}" if route is not None else "unmatched"
            REQUESTS.labels(endpoint, str(status)).inc()
            LATENCY.labels(endpoint).observe(time.perf_counter() - started)
            service_id = scope.get("state", {}).get("service_id")
            if service_id is not None:
                context.count_request(service_id, endpoint, status >= 400)


def create_fastapi_app() -> FastAPI:
    app = FastAPI(title="rayfaces", version="0.1.0",
                  description="Face detection, verification and recognition; CompreFace-compatible API.")
    for module in (recognition, subjects, unknowns, detection, verification, admin, quotas, health, video, jobs, users,
                   server):
        app.include_router(module.router)
    app.include_router(users.auth_router)
    app.mount("/ui", ui_files(), name="ui")
    install_error_handlers(app)
    app.add_middleware(BodyLimits, limit_for=RouteLimits(app.openapi))  # before routing, authentication and parsing
    app.add_middleware(ObserveRequests)
    return app


fastapi_app = create_fastapi_app()


@serve.deployment(name="Ingress")
@serve.ingress(fastapi_app)
class Ingress:
    """One replica of the HTTP API; all replicas share the embedder and the index shards."""

    def __init__(self, embedder, settings: Settings):
        replica = serve.get_replica_context().replica_id.unique_id
        set_context(AppContext(settings, calls_as_configured(embedder), replica))


def calls_as_configured(handle):
    """``handle`` calling over gRPC where this replica's Serve runs requests between deployments over
    gRPC (throughput mode, ``RAY_SERVE_USE_GRPC_BY_DEFAULT``). The handle was made by the driver,
    which may have imported Serve before those settings were in its environment; its calls would then
    go as Ray actor calls, by reference."""
    from ray.serve._private.constants import RAY_SERVE_USE_GRPC_BY_DEFAULT

    return handle.options(_by_reference=not RAY_SERVE_USE_GRPC_BY_DEFAULT)
