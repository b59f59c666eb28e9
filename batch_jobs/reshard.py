"""Re-shard a service: move its faces from S shards to S' shards without losing or duplicating one.

The new layout's tables and actors have their own names (the shard count is part of a table's
name), so both layouts exist side by side while the job runs:

1. copy every face of the old shards into the new ones (each face to ``crc32(id) % S'``);
2. catch up: copy faces added and delete faces deleted in the meantime (compared by id);
3. switch: the service's shard count in PostgreSQL becomes S', so new requests use the new layout;
4. after a grace period for requests in flight, catch up once more and drop the old layout.

    faces reshard --service NAME --shards 4
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batch_jobs.errors import JobInputError
from faces_settings import Settings
from store.control import ControlPlane, Service

if TYPE_CHECKING:
    from store.faces import FaceRecord

Transform = Callable[[list["FaceRecord"]], list["FaceRecord"]]
log = logging.getLogger(__name__)

COPY_BATCH = 5000
SWITCH_GRACE_SECONDS = 2.0
MAX_SHARDS = 256


@dataclass
class ReshardResult:
    faces: int
    old_shards: int
    new_shards: int
    seconds: float


def open_layout_tables(settings: Settings, service: Service, shards: int):
    """The face tables of ``service``'s layout of ``shards`` shards (and of its model)."""
    from facecore.embed import embedding_model
    from faceindex.layout import ServiceLayout

    return ServiceLayout(service.id, shards, model=service.model).open_tables(
        settings.faces_uri, embedding_model(service.model).embedding_dim)


def _placements(tables) -> set[tuple[str, str]]:
    """Every (face id, subject) held by ``tables``."""
    return {(face_id, subject) for table in tables for batch in table.batches(["face_id", "subject"], COPY_BATCH)
            for face_id, subject in zip(batch.column("face_id").to_pylist(), batch.column("subject").to_pylist())}


async def _copy(tables, target, wanted: set[str] | None, progress: Callable[[int], None],
                transform: Transform | None = None) -> int:
    """Copy the rows of ``tables`` (only ids in ``wanted`` when given) into the ``target`` group, each
    batch changed by ``transform`` first (in a thread) when given."""
    from store.faces import records_from_rows

    copied = 0
    for table in tables:
        for batch in table.batches(batch_rows=COPY_BATCH):
            records = records_from_rows(batch)
            if wanted is not None:
                records = [r for r in records if r.face_id in wanted]
            if records and transform is not None:
                records = await asyncio.to_thread(transform, records)
            if records:
                await target.add(records)
                copied += len(records)
                progress(copied)
    return copied


async def catch_up(old_tables, new_tables, target, transform: Transform | None = None) -> tuple[int, int]:
    """Make the new layout hold exactly the old layout's faces and subjects; returns (copied, deleted).

    Faces deleted or renamed since the copy are deleted first; faces added or renamed are then copied
    (through ``transform``, see :func:`_copy`).
    """
    old, new = _placements(old_tables), _placements(new_tables)
    stale = {face_id for face_id, _ in new - old}
    if stale:
        await target.delete_ids(sorted(stale))
    missing = {face_id for face_id, _ in old - new} | (stale & {face_id for face_id, _ in old})
    copied = await _copy(old_tables, target, missing, lambda _: None, transform) if missing else 0
    return copied, len(stale)


async def reshard(settings: Settings, control: ControlPlane, service: Service, shards: int,
                  progress: Callable[[int], None] = lambda copied: None) -> ReshardResult:
    """Move ``service``'s faces onto ``shards`` shards and switch the service to them."""
    from actors.index_shard import ShardGroup

    if not 1 <= shards <= MAX_SHARDS:
        raise JobInputError(f"shards must be between 1 and {MAX_SHARDS}, got {shards}")
    if shards == service.shards:
        raise JobInputError(f"service {service.name!r} already has {shards} shard(s)")
    started = time.perf_counter()
    old = ShardGroup.of(service, settings)
    new = ShardGroup.for_service(service.id, shards, settings, replicas=service.shard_replicas, model=service.model)
    await new.delete_all()  # leftovers of an interrupted earlier run
    old_tables = open_layout_tables(settings, service, service.shards)
    new_tables = open_layout_tables(settings, service, shards)
    await _copy(old_tables, new, None, progress)
    await catch_up(old_tables, new_tables, new)
    await control.set_shards(service.id, shards)
    await asyncio.sleep(SWITCH_GRACE_SECONDS)
    await catch_up(old_tables, new_tables, new)
    faces = await new.count()
    await old.drop()
    log.info("service %d re-sharded from %d to %d shards (%d faces)", service.id, service.shards, shards, faces)
    return ReshardResult(faces=faces, old_shards=service.shards, new_shards=shards,
                         seconds=time.perf_counter() - started)
