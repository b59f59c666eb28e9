"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serve_app.context import AppContext, request_context
from serve_app.metrics import REGISTRY

router = APIRouter(tags=["health"])
READY_TIMEOUT_S = 5.0


@router.get("/healthz")
async def healthz():
    """The ingress answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(context: Annotated[AppContext, Depends(request_context)]):
    """PostgreSQL answers and an embedder replica has its models loaded."""
    checks = {}
    try:
        await asyncio.wait_for((await context.control()).ping(), READY_TIMEOUT_S)
        checks["postgres"] = "ok"
    except Exception as exc:  # readiness reports, it does not fail
        checks["postgres"] = f"unavailable: {exc}"
    try:
        checks["models"] = await asyncio.wait_for(context.model_versions(), READY_TIMEOUT_S)
    except Exception as exc:
        checks["models"] = f"unavailable: {exc}"
    ready = checks["postgres"] == "ok" and isinstance(checks["models"], dict)
    return JSONResponse(status_code=200 if ready else 503, content={"ready": ready, "checks": checks})


@router.get("/metrics")
async def metrics():
    """Prometheus metrics of this ingress replica."""
    return Response(content=generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
