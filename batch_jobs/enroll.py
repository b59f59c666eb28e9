"""Bulk enrollment: a folder tree or a manifest of images into a recognition service, on Ray Data.

    faces enroll PATH --service NAME [--manifest] [--on-multiple largest|reject|all]

(``python -m faces_cli.main enroll ...`` under ``ray job submit``; the command lives in
:mod:`faces_cli.enroll_commands`). The dataflow:

1. input rows, streamed: a folder tree listed lazily (:class:`batch_jobs.sources.TreeListing`) or a
   CSV / JSON-lines / Parquet manifest read by Ray Data, local or on object storage;
2. read tasks (:func:`batch_jobs.fetch.fetch_images`) skip inputs already enrolled and read bytes;
3. an actor pool (:class:`batch_jobs.embedding.EmbedImages`, fractional GPUs where present) decodes,
   detects, aligns and embeds in large batches and applies the several-faces policy;
4. this driver commits faces in batches of ``enroll_commit_faces`` (subjects to PostgreSQL, faces
   through the service's IndexShard actors), writes the report and the job's progress, and at the
   end compacts the shards' tables.

Face ids derive from (service, source URI, face index), so a re-run, or a run after a crash, stores
nothing twice and ends with the same faces as one uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import ray
import ray.data
from ray.data import Dataset

from actors.index_shard import ShardGroup
from batch_jobs.commit import FaceCommitter
from batch_jobs.embedding import EmbedImages, pipeline_config, plan_pool
from batch_jobs.face_ids import face_id
from batch_jobs.job_files import job_folder
from batch_jobs.fetch import fetch_images
from batch_jobs.locations import Locator, allowed, check_input
from batch_jobs.outcomes import OnMultiple, Outcome
from batch_jobs.rebuild_index import rebuild_indexes
from batch_jobs.report import REPORT_SCHEMA, ReportWriter
from batch_jobs.runtime import dataset_batches, set_block_size
from batch_jobs.sources import manifest_inputs, tree_inputs
from batch_jobs.tracking import JobTracker
from faces_settings import Settings
from gallery.service_gallery import Gallery
from outbound import OutboundPolicy
from store.control import ControlPlane, Service
from store.object_storage import join_uri
from store.faces import FaceRecord

log = logging.getLogger(__name__)

# Faces are committed in batches of ``enroll_commit_faces``, or once they have waited this long, so
# that the stored count (the progress bar's, the job's) moves while a slow job runs.
COMMIT_EVERY_S = 5.0


@dataclass(frozen=True)
class EnrollSpec:
    """What to enroll: a folder tree (or, with ``manifest``, a manifest file) and the several-faces
    policy. ``outbound``: what the job may open (input, rows, report; see
    :mod:`batch_jobs.locations`); None for the command line, which runs with its user's rights."""

    input: str
    manifest: bool = False
    on_multiple: OnMultiple = OnMultiple.LARGEST
    report: str | None = None
    outbound: OutboundPolicy | None = None


@dataclass
class EnrollResult:
    job_id: int
    total: int
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    report: str = ""


def default_report(settings: Settings, job_id: int) -> str:
    return join_uri(job_folder(settings, job_id), "report.parquet")


class EnrollSink:
    """The driver's side: turns embedded rows into face records and report rows, commits in batches."""

    def __init__(self, committer: FaceCommitter, report: ReportWriter, service_id: int, commit_faces: int):
        self.committer = committer
        self.report = report
        self.service_id = service_id
        self.commit_faces = commit_faces
        self.counts: Counter[str] = Counter()
        self.processed = 0
        self._waiting: list[dict] = []  # report rows of faces not yet committed
        self._committed_at = time.monotonic()

    async def consume(self, batch: pa.Table) -> None:
        now = datetime.now(timezone.utc)
        embeddings = batch.column("embeddings").combine_chunks()
        per_row = pc.fill_null(pc.list_value_length(embeddings), 0).to_numpy()
        vectors = embeddings.flatten().flatten().to_numpy(zero_copy_only=False).reshape(
            -1, embeddings.type.value_type.list_size)
        offsets = [0, *per_row.cumsum().tolist()]
        done: list[dict] = []
        for row, (entry, crops) in enumerate(zip(batch.select(["source", "subject", "face_id", "status", "reason",
                                                               "faces", "model"]).to_pylist(),
                                                 batch.column("crops").to_pylist())):
            source, status = entry["source"], entry["status"]
            report_row = {"source": source, "subject": entry["subject"], "status": status, "reason": entry["reason"],
                          "faces": entry["faces"], "face_ids": []}
            if status == Outcome.ENROLLED:
                records = [FaceRecord(face_id=face_id(self.service_id, source, index, entry["face_id"]),
                                      subject=entry["subject"], embedding=vectors[offsets[row] + index],
                                      model=entry["model"], crop=crop, source=source, created_at=now)
                           for index, crop in enumerate(crops)]
                self.committer.add(records)
                report_row["face_ids"] = [record.face_id for record in records]
                self._waiting.append(report_row)
            else:
                if status == Outcome.ALREADY_ENROLLED:
                    report_row["face_ids"] = [face_id(self.service_id, source, 0, entry["face_id"])]
                done.append(report_row)
                self.counts[status] += 1
        self.processed += batch.num_rows
        self.report.write(pa.Table.from_pylist(done, schema=REPORT_SCHEMA))
        pending = self.committer.pending
        if pending >= self.commit_faces or (pending and time.monotonic() - self._committed_at >= COMMIT_EVERY_S):
            await self.flush()

    async def flush(self) -> None:
        """Commit the waiting faces, then report their inputs."""
        self.counts["faces"] += await self.committer.commit()
        self._committed_at = time.monotonic()
        self.counts[Outcome.ENROLLED.value] += len(self._waiting)
        self.report.write(pa.Table.from_pylist(self._waiting, schema=REPORT_SCHEMA))
        self._waiting = []


def build_dataset(settings: Settings, service: Service, spec: EnrollSpec, job_id: int) -> tuple[int, Dataset]:
    """How many input rows, and the whole pipeline over them (inputs -> read -> embed)."""
    location = check_input(spec.input, spec.manifest, spec.outbound)
    batch = settings.enroll_batch_size
    inputs = manifest_inputs(location, batch) if spec.manifest else tree_inputs(location, batch)
    total = inputs.count()
    locator = Locator(location, base_is_folder=location.info().type == pafs.FileType.Directory,
                      policy=spec.outbound)
    plan = plan_pool(settings, ray.cluster_resources(), ray.available_resources(), batches=-(-total // batch))
    log.info("job %d: %d embedder actor(s), %.2f CPU and %.2f GPU each, threads %s", job_id, plan.actors,
             plan.num_cpus, plan.num_gpus, plan.threads)
    fetched = inputs.dataset.map_batches(
        fetch_images, batch_format="pyarrow", batch_size=batch, num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=settings.enroll_readers),
        fn_kwargs={"locator": locator, "service": service, "settings": settings})
    embedded = fetched.map_batches(
        EmbedImages, batch_format="pyarrow", batch_size=batch, compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.num_cpus, num_gpus=plan.num_gpus or None,
        fn_constructor_kwargs={"config": dataclasses.replace(pipeline_config(settings, plan), model=service.model),
                               "det_prob_threshold": settings.det_prob_threshold,
                               "on_multiple": spec.on_multiple.value})
    embedded.set_name(f"enroll-job-{job_id}")
    set_block_size(embedded, settings)
    return total, embedded


async def refresh_indexes(settings: Settings, service: Service, shards: ShardGroup) -> None:
    """After the bulk commits: compact the shards' tables, and rebuild their approximate indexes where
    the shards search with one (``search_mode`` ann, or auto from ``ann_min_faces`` faces)."""
    await shards.optimize()
    largest = max(shard["faces"] for shard in await shards.stats())
    if settings.search_mode == "ann" or (settings.search_mode == "auto" and largest >= settings.ann_min_faces):
        await rebuild_indexes(settings, [service])


async def run_enroll(settings: Settings, control: ControlPlane, tracker: JobTracker, service: Service,
                     spec: EnrollSpec) -> EnrollResult:
    """Run one enrollment job (Ray must be connected); progress and outcome go through ``tracker``."""
    started = time.perf_counter()
    total, dataset = build_dataset(settings, service, spec, tracker.job_id)
    report_uri = allowed(spec.report, spec.outbound) if spec.report else default_report(settings, tracker.job_id)
    shards = ShardGroup.of(service, settings)
    report = ReportWriter(report_uri)
    await tracker.start(total, report.uri)
    sink = EnrollSink(FaceCommitter(Gallery(control, shards, service.id)), report, service.id, settings.enroll_commit_faces)
    try:
        async for batch in dataset_batches(dataset):
            await sink.consume(batch)
            await tracker.update(sink.processed, dict(sink.counts))
        await sink.flush()
    finally:
        report.close()
    await tracker.update(sink.processed, dict(sink.counts))
    await refresh_indexes(settings, service, shards)
    seconds = time.perf_counter() - started
    log.info("job %d: %d inputs in %.1f s: %s", tracker.job_id, sink.processed, seconds, dict(sink.counts))
    return EnrollResult(tracker.job_id, total, dict(sink.counts), seconds, report.uri)
