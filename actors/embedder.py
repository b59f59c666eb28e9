"""Embedder deployment: decode -> detect -> align -> embed, batched across concurrent requests.

Each replica holds one :class:`FacePipeline`: on a replica given a GPU fraction (``embedder_num_gpus``)
the torch pipeline on CUDA with GPU preprocessing (:mod:`facecore.pipelines`), else one on the
configured inference backend (``auto``: CUDA when a GPU is visible, OpenVINO on x86 CPUs, ONNX
Runtime otherwise). Requests
arriving within ``batch_wait_ms`` of each other are processed together (``@serve.batch``): detection
runs over all their images at once, embedding over all the faces of the requests that name the same
embedding model at once (a request names its service's model; the replica serves every registered
model, each opened on first use). Per-request parameters
(threshold, limit) are applied after the shared detection. A recognize request also names its
service's shards (:class:`SubjectSearch`): the faces of every such request of a batch are searched
with one call per service (:class:`SearchCoalescer`), not one call per request from the ingress.
Errors are returned per request, so one bad image (or one service's unavailable shard) never fails
the other requests of its batch. A replica warms its models up in a thread as it starts, while
no batch is being served (:mod:`facecore.warmup`): every input shape its batches can have is run
once, so neither its memory nor its latency steps up when a batch size first arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from ray import serve

from actors.index_shard import RequestShardGroups, ShardGroup
from facecore.embed import DEFAULT_EMBEDDING_MODEL
from facecore.errors import FaceError
from facecore.images import encode_jpeg
from facecore.pipeline import Face, FacePipeline, StageTimer
from facecore.pipelines import open_pipeline
from facecore.warmup import IdleGate, warm_up_in_background
from faces_settings import Settings



Match = tuple[str, float, str]  # (subject, cosine, face_id)


@dataclass(frozen=True)
class SubjectSearch:
    """Search the request's faces among the subjects of a recognition service: its id, its shard
    count, the top ``k`` distinct subjects wanted per face, its actors per shard (None: the
    platform's default) and its embedding model (its shards')."""

    service_id: int
    shards: int
    k: int
    replicas: int | None
    model: str = DEFAULT_EMBEDDING_MODEL


@dataclass
class FaceRequest:
    """One image to process: encoded bytes, or a decoded BGR array (a video frame, no encode/decode
    round trip). ``embed`` adds the embedding, and with ``quality`` the quality (and pose) too;
    ``crops`` adds the faces' aligned context crops (JPEG, :mod:`facecore.context_crop`); ``search`` the best subjects of each face (needs ``embed``).
    ``model``: the embedding model (:data:`facecore.embed.EMBEDDING_MODELS`; None: the pipeline's own)."""

    image: bytes | np.ndarray
    det_prob_threshold: float
    limit: int = 0
    embed: bool = True
    crops: bool = False
    quality: bool = True
    search: SubjectSearch | None = None
    model: str | None = None


@dataclass
class FaceResponse:
    """``faces`` as selected by the request's limit; ``found`` counts the faces above its threshold;
    ``matches``: per face, its best subjects (requests with a ``search``). ``error``: the request's
    own failure (a bad image, or its service's shards unavailable). ``model``: ``name@version`` of
    the model that embedded the faces (empty when nothing was embedded)."""

    faces: list[Face] = field(default_factory=list)
    crops: list[bytes] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: Exception | None = None
    found: int = 0
    matches: list[list[Match]] = field(default_factory=list)
    model: str = ""

    def unwrap(self) -> "FaceResponse":
        """Raise the request's own error, if any."""
        if self.error is not None:
            raise self.error
        return self


def _select(faces: list[Face], threshold: float, limit: int) -> list[Face]:
    kept = [face for face in faces if face.score >= threshold]
    return kept[:limit] if limit > 0 else kept


def process_batch(pipeline: FacePipeline, requests: list[FaceRequest]) -> list[FaceResponse]:
    """Run a batch of requests through one pipeline; the core of the deployment, Ray-free."""
    responses = [FaceResponse() for _ in requests]
    timer = StageTimer()
    decoded: list[np.ndarray] = []
    live: list[int] = []
    for index, request in enumerate(requests):
        try:
            decoded.extend(pipeline.decode([request.image], timer))
            live.append(index)
        except FaceError as exc:
            responses[index].error = exc
    if live:
        threshold = min(requests[i].det_prob_threshold for i in live)
        detected = pipeline.detect_decoded(decoded, threshold, 0, timer)
        selected = [_select(faces, requests[i].det_prob_threshold, requests[i].limit)
                    for i, faces in zip(live, detected)]
        to_embed = [n for n, i in enumerate(live) if requests[i].embed]
        for model in dict.fromkeys(requests[live[n]].model for n in to_embed):  # one run per model
            group = [n for n in to_embed if requests[live[n]].model == model]
            pipeline.describe([decoded[n] for n in group], [selected[n] for n in group], timer,
                              quality=[requests[live[n]].quality for n in group], model=model)
            for n in group:
                responses[live[n]].model = pipeline.embedder_for(model).model_id
        started = time.perf_counter()
        for n, index in enumerate(live):
            response = responses[index]
            response.faces = selected[n]
            response.found = sum(1 for face in detected[n] if face.score >= requests[index].det_prob_threshold)
            if requests[index].crops:
                response.crops = [encode_jpeg(crop) for crop in pipeline.context_crops(decoded[n], response.faces)]
            for face in response.faces:
                face.chip = None  # large and not needed by the caller
        if any(requests[index].crops for index in live):
            timer.add("crops", started)
    for response in responses:
        response.timings = dict(timer.stages)
    return responses


class SearchCoalescer:
    """Subject searches of concurrent requests, sent to each service's shards together.

    The requests of one pipeline batch finish at the same moment: each :meth:`search` joins the
    pending searches of its service, and the first one schedules a flush that runs once they have
    all joined (one turn of the event loop later): one shard call per service for all their faces,
    each request then taking its own faces' matches, cut to its own ``k``. Services never wait for
    each other's shards. ``shards_of`` opens a service's :class:`ShardGroup`.
    """

    def __init__(self, shards_of: Callable[[SubjectSearch], ShardGroup]):
        self.shards_of = shards_of
        self._pending: dict[tuple[int, int, int | None, str],
                            list[tuple[SubjectSearch, np.ndarray, asyncio.Future]]] = {}

    async def search(self, search: SubjectSearch, queries: np.ndarray) -> list[list[Match]]:
        """Per row of ``queries``, the top ``search.k`` distinct subjects of the service."""
        key = (search.service_id, search.shards, search.replicas, search.model)
        future = asyncio.get_running_loop().create_future()
        if key not in self._pending:
            self._pending[key] = []
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._flush(key)))
        self._pending[key].append((search, queries, future))
        return await future

    async def _flush(self, key: tuple[int, int, int | None, str]) -> None:
        waiting = self._pending.pop(key)
        try:
            matches = await self.shards_of(waiting[0][0]).search_subjects(
                np.concatenate([queries for _, queries, _ in waiting]), max(search.k for search, _, _ in waiting))
        except Exception as exc:  # each request raises it in its own context (ShardUnavailable: a 503)
            for _, _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        offset = 0
        for search, queries, future in waiting:
            if not future.done():
                future.set_result([found[:search.k] for found in matches[offset:offset + len(queries)]])
            offset += len(queries)


@serve.deployment(name="Embedder")
class Embedder:
    """Serve deployment wrapping :func:`process_batch` with dynamic batching, and the subject
    searches of recognize requests (:class:`SearchCoalescer`)."""

    def __init__(self, settings: Settings):
        self.pipeline = open_pipeline(settings.pipeline_config(gpu=settings.embedder_num_gpus > 0))
        self.idle = IdleGate()  # the warm-up runs while no batch is served
        warm_up_in_background(self.pipeline, settings.batch_max_size, self.idle.wait)
        shard_groups = RequestShardGroups(settings)
        self.searches = SearchCoalescer(
            lambda search: shard_groups.of(search.service_id, search.shards, search.replicas, search.model))
        self.analyze.set_max_batch_size(settings.batch_max_size)
        self.analyze.set_batch_wait_timeout_s(settings.batch_wait_ms / 1000.0)
        self.embed_chips.set_max_batch_size(settings.batch_max_size)
        self.embed_chips.set_batch_wait_timeout_s(settings.batch_wait_ms / 1000.0)

    async def process(self, request: FaceRequest) -> FaceResponse:
        """The faces of one image (batched with concurrent requests), and their subjects when asked."""
        response = await self.analyze(request)
        if request.search is not None and response.error is None and response.faces:
            started = time.perf_counter()
            try:
                response.matches = await self.searches.search(
                    request.search, np.stack([face.embedding for face in response.faces]))
            except Exception as exc:  # raised by the caller: an unavailable shard is the request's own 503
                response.error = exc
            response.timings["search"] = (time.perf_counter() - started) * 1000
        return response

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def analyze(self, requests: list[FaceRequest]) -> list[FaceResponse]:
        with self.idle.busy():
            return await asyncio.to_thread(process_batch, self.pipeline, requests)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def embed_chips(self, chip_sets: list[np.ndarray]) -> list[np.ndarray]:
        """Embeddings of aligned chips cut elsewhere (the video workers align their faces themselves)."""
        with self.idle.busy():
            return await asyncio.to_thread(self.pipeline.embedder.embed_groups, chip_sets)

    async def open_model(self, model: str) -> str:
        """Open embedding model ``model`` now (building its graph if needed), not on a first request;
        its ``name@version``."""
        return (await asyncio.to_thread(self.pipeline.embedder_for, model)).model_id

    def model_versions(self) -> dict[str, str]:
        """Model ids, and the inference backend, device and precision they run on."""
        detector = self.pipeline.detector.spec
        running = self.pipeline.embedder.description
        return {"detector": f"{detector.name}@{detector.version}", "calculator": self.pipeline.model_id,
                "backend": running.backend, "device": running.device, "precision": running.precision}
