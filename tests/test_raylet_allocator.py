"""The platform's raylet runs on jemalloc without thread caches (its memory stays flat when idle), on one
machine and in the cluster deployments."""

from __future__ import annotations

from pathlib import Path

import yaml

from process_tree import descendants_named
from serve_app.platform import RAYLET_ALLOCATOR_ENV

REPO = Path(__file__).resolve().parent.parent


def _environment(pid: int) -> dict[bytes, bytes]:
    """What the process started with, as its allocator read it."""
    with open(f"/proc/{pid}/environ", "rb") as file:
        return dict(item.split(b"=", 1) for item in file.read().split(b"\0") if b"=" in item)


def test_the_platforms_raylet_allocates_without_thread_caches(server):
    raylets = descendants_named("raylet")
    assert len(raylets) == 1, "one local Ray node under the platform"
    raylet = raylets[0]
    assert RAYLET_ALLOCATOR_ENV == {"RAY_JEMALLOC_CONF": "tcache:false", "RAY_JEMALLOC_PROFILE": "raylet"}
    assert _environment(raylet)[b"MALLOC_CONF"] == b"tcache:false"
    with open(f"/proc/{raylet}/maps") as maps:  # the allocator that reads MALLOC_CONF is the one in use
        assert "libjemalloc" in maps.read()
    # only the raylet: the GCS server keeps jemalloc's defaults
    (gcs,) = descendants_named("gcs_server")
    assert b"MALLOC_CONF" not in _environment(gcs)


def test_cluster_deployments_start_their_raylets_with_the_same_setting():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    for command in (config["head_start_ray_commands"][-1], config["worker_start_ray_commands"][-1]):
        assert all(f"{name}={value} " in command for name, value in RAYLET_ALLOCATOR_ENV.items()), command
    documents = list(yaml.safe_load_all((REPO / "deploy" / "kuberay" / "rayservice.yaml").read_text()))
    (node_env,) = [d["data"] for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rayfaces-env"]
    assert {name: node_env[name] for name in RAYLET_ALLOCATOR_ENV} == RAYLET_ALLOCATOR_ENV
