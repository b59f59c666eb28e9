"""Migration: re-embed every stored face of a service with another embedder model or version.

    faces migrate --service NAME [--model NAME@VERSION]

(CompreFace's ``/migrate``; the command lives in :mod:`faces_cli.enroll_commands`). No original image is needed: faces are
re-embedded from the aligned 112x112 crops stored with them.

1. Each shard's table is pinned at its current version (a snapshot) and streamed by Ray Data
   (:class:`StoredFaces`); an actor pool (:class:`EmbedCrops`) embeds the crops with the new model.
2. The driver writes the new rows to one staging table per shard (``<table>_migrate``), which it
   alone writes. The live tables and their in-memory indexes keep serving, unchanged.
3. Switch: each IndexShard replaces its rows by the staging table's in one commit and reloads
   (:meth:`faceindex.shard.IndexShard.replace_from`), under its lock, so searches see the old
   faces or the new ones, never a mix. Faces added meanwhile are embedded here and the switch is
   retried; faces deleted or renamed meanwhile are dropped or renamed. The staging tables are then
   dropped; the old rows stay in the table's version history until the next compaction prunes them.

If any crop cannot be re-embedded the job fails before the switch and the service is unchanged.
The new model must have the service's embedding dimension.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray
import ray.data
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from actors.index_shard import ShardGroup
from batch_jobs.embedding import pipeline_config, plan_pool
from batch_jobs.errors import JobInputError
from batch_jobs.model_choice import embedding_models
from batch_jobs.runtime import BLOCK_BYTES, dataset_batches
from batch_jobs.tracking import JobTracker
from facecore.align import CHIP_SIZE
from facecore.embed import ChipEmbedder
from facecore.errors import FaceError
from facecore.images import decode_image
from facecore.models import SFACE
from facecore.pipeline import PipelineConfig
from faceindex.layout import ServiceLayout
from faces_settings import Settings
from store.control import Service
from store.faces import FaceRecord, FaceTable

log = logging.getLogger(__name__)

STORED_COLUMNS = ["face_id", "subject", "crop", "source", "created_at"]
READ_BATCH_ROWS = 1024
SWITCH_ATTEMPTS = 5


def load_embedder(model: str, config: PipelineConfig) -> ChipEmbedder:
    """An embedder of 112x112 aligned chips for registry model ``model``."""
    return ChipEmbedder.from_registry(config.backend_options(), embedding_models()[model], config.embed_batch)


def staging_name(layout: ServiceLayout, shard: int) -> str:
    return f"{layout.table_name(shard)}_migrate"


class StoredFaces(Datasource):
    """The faces of a service's shard tables, each pinned at a version: one streaming read task per shard."""

    def __init__(self, faces_uri: str, dim: int, tables: list[tuple[str, int, int]]):
        self.faces_uri = faces_uri
        self.dim = dim
        self.tables = tables  # (name, version, rows)

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        return [ReadTask(lambda name=name, version=version: self._read(name, version),
                         BlockMetadata(num_rows=rows, size_bytes=None, exec_stats=None, input_files=None))
                for name, version, rows in self.tables if rows]

    def _read(self, name: str, version: int) -> Iterator[pa.Table]:
        table = FaceTable.open(self.faces_uri, name, self.dim)
        table.checkout(version)
        for batch in table.batches(STORED_COLUMNS, READ_BATCH_ROWS):
            yield pa.Table.from_batches([batch])


class EmbedCrops:
    """Ray Data callable class: embeds stored crops (``crop`` column) with the target model."""

    def __init__(self, model: str, config: PipelineConfig):
        self.embedder = load_embedder(model, config)
        self.model = self.embedder.model_id

    def __call__(self, batch: pa.Table) -> pa.Table:
        chips, rows, errors = [], [], [None] * batch.num_rows
        for row, crop in enumerate(batch.column("crop").to_pylist()):
            try:
                chip = decode_image(crop or b"")
                if chip.shape[:2] != (CHIP_SIZE, CHIP_SIZE):
                    raise FaceError(f"the crop is {chip.shape[1]}x{chip.shape[0]}, not {CHIP_SIZE}x{CHIP_SIZE}")
                chips.append(chip)
                rows.append(row)
            except FaceError as exc:
                errors[row] = f"unusable crop: {exc}"
        vectors = self.embedder.embed(chips)
        matrix = np.zeros((batch.num_rows, self.embedder.dimension), np.float32)
        matrix[rows] = vectors
        embeddings = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), self.embedder.dimension)
        return (batch.append_column("embedding", embeddings)
                .append_column("model", pa.array([self.model] * batch.num_rows, pa.string()))
                .append_column("error", pa.array(errors, pa.string())))


def _records(batch: pa.Table) -> tuple[list[FaceRecord], list[tuple[str, str]]]:
    """The re-embedded faces of a batch, and (face_id, error) of those that failed."""
    vectors = batch.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = vectors.reshape(batch.num_rows, -1)
    records, failed = [], []
    for row, entry in enumerate(batch.select(STORED_COLUMNS + ["model", "error"]).to_pylist()):
        if entry["error"] is not None:
            failed.append((entry["face_id"], entry["error"]))
            continue
        records.append(FaceRecord(face_id=entry["face_id"], subject=entry["subject"], embedding=vectors[row],
                                  model=entry["model"], crop=entry["crop"], source=entry["source"],
                                  created_at=entry["created_at"]))
    return records, failed


@dataclass
class MigrateResult:
    job_id: int
    model: str
    faces: int
    shards: int
    seconds: float


class Staging:
    """The staging tables of a migration, written in batches by this driver only."""

    def __init__(self, faces_uri: str, service: Service, dim: int, commit_faces: int):
        self.service = service
        self.layout = ServiceLayout(service.id, service.shards)
        self.commit_faces = commit_faces
        self.tables = []
        for shard in range(service.shards):
            name = staging_name(self.layout, shard)
            FaceTable.drop_table(faces_uri, name)  # a failed attempt's leftovers
            self.tables.append(FaceTable.open(faces_uri, name, dim))
        self._pending: list[list[FaceRecord]] = [[] for _ in self.tables]
        self.written = 0

    def add(self, records: list[FaceRecord]) -> None:
        for record in records:
            self._pending[self.layout.shard_of(record.face_id)].append(record)
        if sum(map(len, self._pending)) >= self.commit_faces:
            self.flush()

    def flush(self) -> None:
        for table, records in zip(self.tables, self._pending):
            table.add(records)
            self.written += len(records)
        self._pending = [[] for _ in self.tables]

    def drop(self) -> None:
        for table in self.tables:
            table.drop()


def _snapshot(settings: Settings, service: Service, dim: int) -> list[tuple[str, int, int]]:
    """(table, version, rows) of every shard table of the service, as of now."""
    return [(table.name, table.version, table.count())
            for table in ServiceLayout(service.id, service.shards).open_tables(settings.faces_uri, dim)]


async def _switch(settings: Settings, shards: ShardGroup, staging: Staging, model: str, dim: int) -> None:
    """Switch every shard to its staging table, first copying faces the shard gained meanwhile."""
    embedder = None
    for shard in range(len(shards.actors)):
        live = staging.layout.open_table(settings.faces_uri, shard, dim)
        for _ in range(SWITCH_ATTEMPTS):
            missing = await shards.replace_from(shard, staging.tables[shard].name)
            if not missing:
                break
            log.info("shard %d gained %d faces during the migration; embedding them", shard, len(missing))
            stored = [face for face in map(live.get, missing) if face is not None]
            embedder = embedder or load_embedder(model, settings.pipeline_config())
            vectors = embedder.embed([decode_image(face.crop) for face in stored])
            staging.add([dataclasses.replace(face, embedding=vector, model=embedder.model_id)
                         for face, vector in zip(stored, vectors)])
            staging.flush()
        else:
            raise RuntimeError(f"shard {shard} kept gaining faces; pause writes to the service and migrate again")


def _reembedded(settings: Settings, tables: list[tuple[str, int, int]], model: str, dim: int,
                 job_id: int) -> ray.data.Dataset:
    """The stored faces with their new embeddings (columns of :data:`STORED_COLUMNS`, embedding, model, error)."""
    plan = plan_pool(settings, ray.cluster_resources(), ray.available_resources())
    dataset = ray.data.read_datasource(StoredFaces(settings.faces_uri, dim, tables), num_cpus=0).map_batches(
        EmbedCrops, batch_format="pyarrow", batch_size=settings.enroll_batch_size,
        compute=ray.data.ActorPoolStrategy(size=plan.actors), num_cpus=plan.num_cpus,
        num_gpus=plan.num_gpus or None,
        fn_constructor_kwargs={"model": model, "config": pipeline_config(settings, plan)})
    dataset.set_name(f"migrate-job-{job_id}")
    dataset.context.target_max_block_size = BLOCK_BYTES
    return dataset


async def run_migrate(settings: Settings, tracker: JobTracker, service: Service, model: str) -> MigrateResult:
    """Re-embed every face of ``service`` with ``model`` and switch to the new rows (Ray must be connected)."""
    started = time.perf_counter()
    dim = SFACE.embedding_dim
    if embedding_models()[model].embedding_dim != dim:
        raise JobInputError(f"{model} makes {embedding_models()[model].embedding_dim}-d embeddings; "
                            f"the service stores {dim}-d ones")
    shards = ShardGroup.for_service(service.id, service.shards, settings, replicas=service.shard_replicas)
    tables = _snapshot(settings, service, dim)
    await tracker.start(sum(rows for _, _, rows in tables))
    staging = Staging(settings.faces_uri, service, dim, settings.enroll_commit_faces)
    try:
        failed: list[tuple[str, str]] = []
        processed = 0
        if any(rows for _, _, rows in tables):
            async for batch in dataset_batches(_reembedded(settings, tables, model, dim, tracker.job_id)):
                records, errors = _records(batch)
                staging.add(records)
                failed.extend(errors)
                processed += batch.num_rows
                await tracker.update(processed, {"faces": staging.written, "failed": len(failed)})
        staging.flush()
        await tracker.update(processed, {"faces": staging.written, "failed": len(failed)})
        if failed:
            face, reason = failed[0]
            raise RuntimeError(f"{len(failed)} faces could not be re-embedded (e.g. {face}: {reason}); "
                               "delete them and migrate again. The service is unchanged.")
        await _switch(settings, shards, staging, model, dim)
    finally:
        staging.drop()
    faces = await shards.count()
    seconds = time.perf_counter() - started
    log.info("job %d: %d faces of service %d re-embedded with %s in %.1f s", tracker.job_id, faces, service.id,
             model, seconds)
    return MigrateResult(tracker.job_id, model, faces, service.shards, seconds)
