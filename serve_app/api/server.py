"""Server status for the owner and administrators: Ray nodes, Serve replicas, GPUs and versions."""

from __future__ import annotations

import asyncio
import platform
from importlib.metadata import version

import ray
from fastapi import APIRouter, Depends
from ray import serve

from serve_app.auth import require_admin
from serve_app.context import AppContext, request_context

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


def _cluster() -> dict:
    """Ray's nodes and Serve's applications, read from the cluster (blocking calls: run in a thread)."""
    nodes = [{"node_id": node["NodeID"], "address": node["NodeManagerAddress"], "alive": node["Alive"],
              "cpus": node["Resources"].get("CPU", 0), "gpus": node["Resources"].get("GPU", 0),
              "memory_bytes": node["Resources"].get("memory", 0)} for node in ray.nodes()]
    status = serve.status()
    applications = {name: {"status": str(app.status), "deployments": {
        deployment: {"status": str(d.status), "replicas": {str(state): count for state, count in d.replica_states.items()}}
        for deployment, d in app.deployments.items()}} for name, app in status.applications.items()}
    return {"nodes": nodes, "applications": applications}


@router.get("/status")
async def server_status(context: AppContext = Depends(request_context)):
    """Nodes (CPUs, GPUs, memory), Serve deployments with their replicas, versions of the parts."""
    cluster, models = await asyncio.gather(asyncio.to_thread(_cluster), context.model_versions())
    return {**cluster, "versions": {"rayfaces": version("rayfaces"), "ray": ray.__version__,
                                    "python": platform.python_version(), "models": models}}
