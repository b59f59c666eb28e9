"""The embedding stage of enrollment: an actor pool running the face pipeline on fetched images.

Each actor holds one :class:`FacePipeline` (the torch one on CUDA for actors given a GPU fraction,
see :mod:`facecore.pipelines`) and runs :func:`actors.face_batch.process_batch` (the same
batch core as the Serve embedder) on batches of images, then applies the policy for images with
several faces. Errors stay per image: one bad file never fails its batch. A batch
(``enroll_batch_size`` images, 256 by default) is processed :data:`IMAGES_AT_ONCE` images at a time,
so that large batches spread Ray Data's per-task work over more images while an actor holds no more
decoded images than a small batch would.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from actors.face_batch import FaceRequest, FaceResponse, process_batch
from batch_jobs.outcomes import OnMultiple, Outcome
from facecore.errors import InvalidImage
from facecore.pipeline import PipelineConfig
from facecore.pipelines import open_pipeline
from faces_settings import Settings

log = logging.getLogger(__name__)

# Images an embedder actor decodes and runs through the pipeline at once: decoded photos are the
# large part of an actor's memory (a 12-megapixel JPEG is still over 5 MB decoded at reduced size).
IMAGES_AT_ONCE = 64


def embedded_schema(dim: int) -> pa.Schema:
    """Rows leaving the embedding stage: one per input, with its faces' embeddings and crops."""
    return pa.schema([
        pa.field("source", pa.string()),
        pa.field("subject", pa.string()),
        pa.field("face_id", pa.string()),
        pa.field("status", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("faces", pa.int32()),
        pa.field("model", pa.string()),
        pa.field("embeddings", pa.list_(pa.list_(pa.float32(), dim))),
        pa.field("crops", pa.list_(pa.binary())),
    ])


@dataclass(frozen=True)
class PoolPlan:
    """Size and resources of the embedder actor pool, and inference threads per actor."""

    actors: int
    num_cpus: float
    num_gpus: float
    threads: int


def plan_pool(settings: Settings, total: dict[str, float], available: dict[str, float],
              batches: int | None = None) -> PoolPlan:
    """Size the pool to the cluster.

    With GPUs: one actor per ``enroll_embedder_num_gpus`` of the cluster's GPUs. CPU only: one
    single-threaded actor per ``enroll_embedder_num_cpus`` of the cluster's CPUs, less one in eight
    for reading, the driver and the shard actors. Single-threaded actors side by side beat one
    multi-threaded actor: a batch spends a third of its time in single-threaded Python stages
    (decode, align, crops), which another actor's inference fills (measured on 2 cores: 2 actors x 1
    thread 79-84 images/s, 1 actor x 2 threads 67-70). An actor never reserves more than its share of
    the free CPUs, so a busy cluster (Serve's embedder holds a CPU) still runs the job.
    ``enroll_embedders`` > 0 fixes the number of actors. Sized to the cluster, the pool has no more
    actors than the job has ``batches`` (when known): each actor loads its models, and one started
    for a batch that another actor takes first is start-up work for nothing (a 6-image job on a 3-CPU
    cluster started 6 actors, of which the first ones did all the work).

    An actor runs as many inference threads as the CPUs it asks for (``enroll_embedder_num_cpus``,
    at least one; ``threads`` overrides): a node started with ``--num-cpus=1`` on a larger machine gets
    one core's work, not every core of the machine (a lone actor on such a node took both cores of a
    two-core machine, so one worker node ran as fast as two).
    """
    free_cpus = available.get("CPU", 0.0)
    wanted = settings.enroll_embedder_num_cpus
    gpus = total.get("GPU", 0.0)
    if gpus > 0:
        num_gpus = settings.enroll_embedder_num_gpus
        actors = settings.enroll_embedders or max(1, math.floor(gpus / num_gpus + 1e-9))
    else:
        num_gpus = 0.0
        cpus = total.get("CPU", 0.0)
        actors = settings.enroll_embedders or max(1, math.floor(cpus / wanted + 1e-9) - math.floor(cpus / 8))
    if batches is not None and not settings.enroll_embedders:
        actors = max(1, min(actors, batches))
    num_cpus = min(wanted, free_cpus / actors)
    if num_cpus < wanted:
        log.warning("only %.2f CPUs are free for %d embedder(s); each reserves %.2f instead of %.2f", free_cpus,
                    actors, num_cpus, wanted)
    threads = settings.threads or max(1, round(wanted))
    return PoolPlan(actors, num_cpus, num_gpus, threads)


def _embeddings_column(per_row: list[list[np.ndarray]], dim: int) -> pa.ListArray:
    counts = [len(vectors) for vectors in per_row]
    flat = [vector for vectors in per_row for vector in vectors]
    matrix = np.stack(flat).astype(np.float32, copy=False) if flat else np.zeros((0, dim), np.float32)
    values = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), dim)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, values)


class EmbedImages:
    """Ray Data callable class: detect, align and embed the images of a batch (``image`` column)."""

    def __init__(self, config: PipelineConfig, det_prob_threshold: float, on_multiple: str):
        self.pipeline = open_pipeline(config)
        self.threshold = det_prob_threshold
        self.policy = OnMultiple(on_multiple)
        self.dim = self.pipeline.embedder.dimension
        self.schema = embedded_schema(self.dim)

    def _run(self, requests: list[FaceRequest]) -> list[FaceResponse]:
        """:meth:`_run_chunk` over the requests, :data:`IMAGES_AT_ONCE` at a time."""
        return [response for start in range(0, len(requests), IMAGES_AT_ONCE)
                for response in self._run_chunk(requests[start:start + IMAGES_AT_ONCE])]

    def _run_chunk(self, requests: list[FaceRequest]) -> list[FaceResponse]:
        """:func:`process_batch`, redone image by image if the chunk raises anything unexpected."""
        try:
            return process_batch(self.pipeline, requests)
        except Exception:
            log.exception("a chunk of %d images failed; retrying them one by one", len(requests))
        responses = []
        for request in requests:
            try:
                responses.extend(process_batch(self.pipeline, [request]))
            except Exception as exc:
                responses.append(FaceResponse(error=InvalidImage(f"the image could not be processed: {exc}")))
        return responses

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.num_rows
        statuses = batch.column("status").to_pylist()
        reasons = batch.column("reason").to_pylist()
        images = batch.column("image")
        todo = [i for i, status in enumerate(statuses) if status is None]
        limit = 0 if self.policy is OnMultiple.ALL else 1
        requests = [FaceRequest(image=images[i].as_py(), det_prob_threshold=self.threshold, limit=limit, crops=True,
                                quality=False)
                    for i in todo]
        faces = [0] * rows
        models: list[str | None] = [None] * rows
        embeddings: list[list[np.ndarray]] = [[] for _ in range(rows)]
        crops: list[list[bytes]] = [[] for _ in range(rows)]
        for i, response in zip(todo, self._run(requests) if requests else []):
            faces[i] = response.found
            if response.error is not None:
                statuses[i], reasons[i] = Outcome.INVALID.value, str(response.error)
            elif response.found == 0:
                statuses[i], reasons[i] = Outcome.NO_FACE.value, "no face above the detection threshold"
            elif response.found > 1 and self.policy is OnMultiple.REJECT:
                statuses[i], reasons[i] = Outcome.MULTIPLE_FACES.value, f"{response.found} faces; the policy is reject"
            else:
                statuses[i] = Outcome.ENROLLED.value
                models[i] = self.pipeline.model_id
                embeddings[i] = [face.embedding for face in response.faces]
                crops[i] = response.crops
        return pa.table({
            "source": batch.column("source"), "subject": batch.column("subject"),
            "face_id": batch.column("face_id"), "status": statuses, "reason": reasons,
            "faces": pa.array(faces, pa.int32()), "model": models,
            "embeddings": _embeddings_column(embeddings, self.dim),
            "crops": pa.array(crops, pa.list_(pa.binary())),
        }, schema=self.schema)


def pipeline_config(settings: Settings, plan: PoolPlan) -> PipelineConfig:
    """The pipeline configuration of the pool's actors: the platform's, with the plan's threads and GPU."""
    return dataclasses.replace(settings.pipeline_config(gpu=plan.num_gpus > 0), threads=plan.threads)
