"""The HTTP ingress deployment: the FastAPI app with every router, auth, errors and metrics."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from ray import serve

from facecore.settings import Settings
from serve_app.api import admin, detection, health, jobs, recognition, subjects, verification, video
from serve_app.context import AppContext, get_context, set_context
from serve_app.errors import install_error_handlers
from serve_app.metrics import LATENCY, REQUESTS


def create_fastapi_app() -> FastAPI:
    app = FastAPI(title="rayfaces", version="0.1.0",
                  description="Face detection, verification and recognition; CompreFace-compatible API.")
    for module in (recognition, subjects, detection, verification, admin, health, video, jobs):
        app.include_router(module.router)
    install_error_handlers(app)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = f"{request.method} {route.path}" if route is not None else "unmatched"
        REQUESTS.labels(endpoint, str(response.status_code)).inc()
        LATENCY.labels(endpoint).observe(time.perf_counter() - started)
        response.headers["x-faces-replica"] = get_context().replica
        service_id = getattr(request.state, "service_id", None)
        if service_id is not None:
            get_context().count_request(service_id, endpoint, response.status_code >= 400)
        return response

    return app


fastapi_app = create_fastapi_app()


@serve.deployment(name="Ingress")
@serve.ingress(fastapi_app)
class Ingress:
    """One replica of the HTTP API; all replicas share the embedder and the index shards."""

    def __init__(self, embedder, settings: Settings):
        replica = serve.get_replica_context().replica_id.unique_id
        set_context(AppContext(settings, embedder, replica))
