"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serve_app.context import AppContext, request_context
from serve_app.errors import classify
from serve_app.metrics import REGISTRY

log = logging.getLogger(__name__)
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
        await asyncio.wait_for(_ping_postgres(context), READY_TIMEOUT_S)
        checks["postgres"] = "ok"
    except Exception as exc:  # readiness reports, it does not fail
        checks["postgres"] = _unavailable("postgres", exc)
    try:
        checks["models"] = await asyncio.wait_for(context.model_versions(), READY_TIMEOUT_S)
    except Exception as exc:
        checks["models"] = _unavailable("models", exc)
    ready = checks["postgres"] == "ok" and isinstance(checks["models"], dict)
    return JSONResponse(status_code=200 if ready else 503, content={"ready": ready, "checks": checks})


async def _ping_postgres(context: AppContext) -> None:
    await (await context.control()).ping()


def _unavailable(check: str, exc: Exception) -> str:
    """The check's failure in the API's words; the exception itself goes to the log only."""
    log.warning("readiness check %s failed: %r", check, exc)
    status, message, _ = classify(exc)
    return f"unavailable: {message}" if status == 503 else "unavailable: internal error"


@router.get("/metrics")
async def metrics():
    """Prometheus metrics of this ingress replica."""
    return Response(content=generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
