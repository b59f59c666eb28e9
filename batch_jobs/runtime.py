"""What bulk jobs share: joining Ray, opening the control plane, checking a service's type, streaming batches."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import pyarrow as pa
import ray
from ray.data import Dataset

from batch_jobs.errors import JobInputError
from faces_settings import Settings
from store.control import ControlPlane, Service
from store.embedded_pg import resolve_dsn


def set_block_size(dataset: Dataset, settings: Settings) -> None:
    """Give a job's dataset blocks of ``job_block_bytes``. Ray Data coalesces a task's output into
    blocks of up to 128 MiB by default, so a whole input block of images would reach the next stage
    (and the driver) at once: jobs keep every stage, and the commits, streaming with a small target.
    Not too small: every block is an object of its own, which its task reports and waits on the
    executor for, so blocks of 1 MiB (a quarter of a batch of 256 images and their faces) cost the
    embedder actors 0.4-0.6 ms per image (docs/benchmarks.md)."""
    dataset.context.target_max_block_size = settings.job_block_bytes


def connect_ray(settings: Settings, ray_init_options: dict | None = None) -> bool:
    """Join ``FACES_RAY_ADDRESS`` or ``RAY_ADDRESS`` (as under ``ray job submit``), else start a local
    Ray (``ray_init_options``: more arguments of ``ray.init``). Returns whether this call started the
    connection (and so should shut it down)."""
    if ray.is_initialized():
        return False
    address = settings.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **(ray_init_options or {}))
    else:
        ray.init(include_dashboard=False, **(ray_init_options or {}))
    return True


@asynccontextmanager
async def control_plane(settings: Settings) -> AsyncIterator[ControlPlane]:
    """The control plane of ``FACES_POSTGRES_DSN``, or of the embedded PostgreSQL under the data dir."""
    dsn, embedded = resolve_dsn(settings.postgres_dsn, settings.data_dir.resolve())
    try:
        control = await ControlPlane.connect(dsn)
        try:
            yield control
        finally:
            await control.close()
    finally:
        if embedded is not None:
            embedded.stop()


def require_recognition(service: Service) -> Service:
    """``service`` if it stores faces; :class:`JobInputError` otherwise."""
    if service.type != "recognition":
        raise JobInputError(f"service {service.name!r} ({service.id}) is a {service.type} service; "
                            "bulk jobs need a recognition service")
    return service


async def dataset_batches(dataset: Dataset) -> AsyncIterator[pa.Table]:
    """The dataset's output blocks as Arrow tables, pulled on one helper thread so that the event loop
    (progress, heartbeat, commits) stays free while Ray Data works.

    Each block as soon as Ray Data has it: with ``prefetch_batches`` of n, Ray Data hands out a block
    only once n more are known, so the driver saw an embedder task's faces only when the next task had
    finished too (a first commit 2.7 s later, at 256-image batches of small photos)."""
    iterator = iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0))
    with ThreadPoolExecutor(1, thread_name_prefix="dataset-batches") as pull:
        loop = asyncio.get_running_loop()
        while (batch := await loop.run_in_executor(pull, next, iterator, None)) is not None:
            yield batch
