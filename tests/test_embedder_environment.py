"""The embedder replica's process runs with the allocator settings the platform gives it."""

from __future__ import annotations

import os

import ray

from serve_app.app import EMBEDDER_ENV


def test_the_embedder_replica_runs_with_few_malloc_arenas(server):
    (name,) = [actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
               if "Embedder" in actor["name"] and actor["namespace"] == "serve"]
    replica = ray.get_actor(name, namespace="serve")
    pid = ray.get(replica.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
    with open(f"/proc/{pid}/environ", "rb") as file:  # what the process started with, as glibc read it
        environment = dict(item.split(b"=", 1) for item in file.read().split(b"\0") if b"=" in item)
    assert EMBEDDER_ENV == {"MALLOC_ARENA_MAX": "2"}
    assert environment[b"MALLOC_ARENA_MAX"] == b"2"
