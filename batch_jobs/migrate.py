"""Migration: re-embed every stored face of a service with another embedding model or version.

    faces migrate --service NAME [--model NAME[@VERSION]]

(CompreFace's ``/migrate``; the command lives in :mod:`faces_cli.enroll_commands`). No original
image is needed: faces are re-embedded from the aligned crops stored with them
(:mod:`facecore.context_crop`): each model's chip is cut from a face's context crop. A face stored
before context crops holds only its 112x112 chip: it re-embeds with SFace, but not with dlib's
ResNet (nor the fusion), whose chip it does not hold; such a migration fails naming how many faces
those are (delete and re-enroll them from photos), and the service is unchanged.

The stored faces are read by Ray Data, each shard's table pinned at its current version (a
snapshot, :class:`StoredFaces`), and re-embedded by an actor pool (:class:`EmbedCrops`). Then:

- to a new version of the service's own model (same layout, same dimension): the driver writes the
  new rows to one staging table per shard (``<table>_migrate``) while the live tables keep serving;
  each IndexShard then replaces its rows by the staging table's in one commit and reloads
  (:meth:`faceindex.shard.IndexShard.replace_from`), under its lock, so searches see the old faces or
  the new ones, never a mix. Faces added meanwhile are embedded here and the switch is retried; faces
  deleted or renamed meanwhile are dropped or renamed. The staging tables are then dropped.
- to another model (its embeddings may have another dimension): the new rows fill the shards of the
  model's own layout (:mod:`faceindex.layout`: tables and actors named with the model) beside the
  old one, like a re-shard; faces added, deleted or renamed meanwhile are caught up (added ones
  re-embedded from their crops); the service's model in PostgreSQL is switched in one statement, so
  every request after it is embedded and searched with the new model; after a grace period for
  requests in flight the layouts are caught up once more and the old one is dropped.

If any crop cannot be re-embedded the job fails before the switch and the service is unchanged.
Sightings of unknown faces are not migrated: they are kept for SFace services only.
"""

from __future__ import annotations

import dataclasses
import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray
import ray.data
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from actors.index_shard import ShardGroup
from batch_jobs.embedding import pipeline_config, plan_pool
from batch_jobs.model_choice import embedding_models
from batch_jobs.reshard import SWITCH_GRACE_SECONDS, catch_up, open_layout_tables
from batch_jobs.runtime import dataset_batches, set_block_size
from batch_jobs.tracking import JobTracker
from facecore.context_crop import chips_of_crops
from facecore.embed import AlignedFaces, Embedder, embedding_model, model_members, open_embedder
from facecore.pipeline import PipelineConfig
from faceindex.layout import ServiceLayout
from faces_settings import Settings
from store.control import ControlPlane, Service
from store.faces import FaceRecord, FaceTable

log = logging.getLogger(__name__)

STORED_COLUMNS = ["face_id", "subject", "crop", "source", "created_at"]
READ_BATCH_ROWS = 1024
SWITCH_ATTEMPTS = 5


def load_embedder(model: str, config: PipelineConfig) -> Embedder:
    """The embedder of ``model`` (``name@version``)."""
    return open_embedder(embedding_models()[model], config.backend_options(), config.embed_batch)


def embed_crops(embedder: Embedder, crops: list[bytes]) -> tuple[np.ndarray, list[str | None]]:
    """``(N, D)`` embeddings of faces from their stored crops (zero rows where a crop failed), and per
    crop None or why it could not be re-embedded."""
    kinds = sorted({spec.chip for spec in model_members(embedder.spec.name)})
    chips, errors = chips_of_crops(crops, kinds)
    matrix = np.zeros((len(crops), embedder.dimension), np.float32)
    if chips:
        matrix[[row for row, error in enumerate(errors) if error is None]] = embedder.embed_aligned(
            AlignedFaces.of_chips(chips))
    return matrix, errors


def _re_embedded(embedder: Embedder, records: list[FaceRecord]) -> list[FaceRecord]:
    """``records`` with new embeddings from their crops; RuntimeError naming the faces that have none."""
    vectors, errors = embed_crops(embedder, [record.crop for record in records])
    failed = [(record.face_id, error) for record, error in zip(records, errors) if error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} faces added during the migration could not be re-embedded "
                           f"(e.g. {failed[0][0]}: {failed[0][1]})")
    return [dataclasses.replace(record, embedding=vector, model=embedder.model_id)
            for record, vector in zip(records, vectors)]


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
        matrix, errors = embed_crops(self.embedder, batch.column("crop").to_pylist())
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
    """The staging tables of a same-layout migration, written in batches by this driver only."""

    def __init__(self, faces_uri: str, service: Service, dim: int, commit_faces: int):
        self.service = service
        self.layout = ServiceLayout(service.id, service.shards, model=service.model)
        self.commit_faces = commit_faces
        self.tables = []
        for shard in range(service.shards):
            name = staging_name(self.layout, shard)
            FaceTable.drop_table(faces_uri, name)  # a failed attempt's leftovers
            self.tables.append(FaceTable.open(faces_uri, name, dim))
        self._pending: list[list[FaceRecord]] = [[] for _ in self.tables]
        self.written = 0

    async def add(self, records: list[FaceRecord]) -> None:
        for record in records:
            self._pending[self.layout.shard_of(record.face_id)].append(record)
        if sum(map(len, self._pending)) >= self.commit_faces:
            await self.flush()

    async def flush(self) -> None:
        for table, records in zip(self.tables, self._pending):
            table.add(records)
            self.written += len(records)
        self._pending = [[] for _ in self.tables]

    def drop(self) -> None:
        for table in self.tables:
            table.drop()


class NewLayout:
    """The shards of the target model's layout, filled through their actors (a cross-model migration)."""

    def __init__(self, settings: Settings, service: Service):
        self.service = service
        self.shards = ShardGroup.of(service, settings)
        self.written = 0

    async def add(self, records: list[FaceRecord]) -> None:
        if records:
            await self.shards.add(records)
            self.written += len(records)

    async def flush(self) -> None:
        """Nothing is held back: every batch is added at once."""


def _snapshot(settings: Settings, service: Service) -> list[tuple[str, int, int]]:
    """(table, version, rows) of every shard table of the service, as of now."""
    return [(table.name, table.version, table.count())
            for table in open_layout_tables(settings, service, service.shards)]


async def _switch(settings: Settings, shards: ShardGroup, staging: Staging, embedder: Callable[[], Embedder]) -> None:
    """Switch every shard to its staging table, first copying faces the shard gained meanwhile."""
    dim = embedding_model(staging.service.model).embedding_dim
    for shard in range(len(shards.actors)):
        live = staging.layout.open_table(settings.faces_uri, shard, dim)
        for _ in range(SWITCH_ATTEMPTS):
            missing = await shards.replace_from(shard, staging.tables[shard].name)
            if not missing:
                break
            log.info("shard %d gained %d faces during the migration; embedding them", shard, len(missing))
            stored = [face for face in map(live.get, missing) if face is not None]
            await staging.add(await asyncio.to_thread(lambda: _re_embedded(embedder(), stored)))
            await staging.flush()
        else:
            raise RuntimeError(f"shard {shard} kept gaining faces; pause writes to the service and migrate again")


async def _switch_model(settings: Settings, control: ControlPlane, service: Service, target: NewLayout,
                        embedder: Callable[[], Embedder]) -> None:
    """Catch the new layout up with the old one, switch the service's model, catch up once more after
    requests in flight have ended, and drop the old layout."""
    old_tables = open_layout_tables(settings, service, service.shards)
    new_tables = open_layout_tables(settings, target.service, service.shards)

    def transform(records: list[FaceRecord]) -> list[FaceRecord]:
        return _re_embedded(embedder(), records)

    await catch_up(old_tables, new_tables, target.shards, transform)
    await control.set_model(service.id, target.service.model)
    await asyncio.sleep(SWITCH_GRACE_SECONDS)
    await catch_up(old_tables, new_tables, target.shards, transform)
    await ShardGroup.of(service, settings).drop()


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
    set_block_size(dataset, settings)
    return dataset


async def _fill(settings: Settings, tracker: JobTracker, tables: list[tuple[str, int, int]], model: str,
                dim: int, target: Staging | NewLayout) -> None:
    """Re-embed the snapshot's faces into ``target``; RuntimeError (before any switch) naming how many
    faces could not be."""
    failed: list[tuple[str, str]] = []
    processed = 0
    if any(rows for _, _, rows in tables):
        async for batch in dataset_batches(_reembedded(settings, tables, model, dim, tracker.job_id)):
            records, errors = _records(batch)
            await target.add(records)
            failed.extend(errors)
            processed += batch.num_rows
            await tracker.update(processed, {"faces": target.written, "failed": len(failed)})
    await target.flush()
    await tracker.update(processed, {"faces": target.written, "failed": len(failed)})
    if failed:
        face, reason = failed[0]
        raise RuntimeError(f"{len(failed)} faces could not be re-embedded with {model} (e.g. {face}: {reason}); "
                           "delete them (or re-enroll them from photos) and migrate again. The service is unchanged.")


async def run_migrate(settings: Settings, control: ControlPlane, tracker: JobTracker, service: Service,
                      model: str) -> MigrateResult:
    """Re-embed every face of ``service`` with ``model`` (``name@version``) and switch to the new rows
    (Ray must be connected)."""
    started = time.perf_counter()
    dim = embedding_model(service.model).embedding_dim
    tables = _snapshot(settings, service)
    await tracker.start(sum(rows for _, _, rows in tables))
    target_service = dataclasses.replace(service, model=embedding_models()[model])
    embedder = functools.cache(lambda: load_embedder(model, settings.pipeline_config()))  # for faces added meanwhile
    if target_service.model == service.model:
        staging = Staging(settings.faces_uri, service, dim, settings.enroll_commit_faces)
        try:
            await _fill(settings, tracker, tables, model, dim, staging)
            shards = ShardGroup.of(service, settings)
            await _switch(settings, shards, staging, embedder)
        finally:
            staging.drop()
    else:
        target = NewLayout(settings, target_service)
        await target.shards.delete_all()  # leftovers of an interrupted earlier run
        try:
            await _fill(settings, tracker, tables, model, dim, target)
            await _switch_model(settings, control, service, target, embedder)
        except BaseException:
            if (await control.get_service(service.id)).model == service.model:  # failed before the switch
                await target.shards.drop()
            raise
        shards = target.shards
    faces = await shards.count()
    seconds = time.perf_counter() - started
    log.info("job %d: %d faces of service %d re-embedded with %s in %.1f s", tracker.job_id, faces, service.id,
             model, seconds)
    return MigrateResult(tracker.job_id, model, faces, service.shards, seconds)
