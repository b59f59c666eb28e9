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
the other requests of its batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
from ray import serve

from actors.face_batch import FaceRequest, FaceResponse, Match, SubjectSearch, process_batch
from actors.index_shard import RequestShardGroups, ShardGroup
from facecore.pipelines import open_pipeline
from faces_settings import Settings


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
        return await asyncio.to_thread(process_batch, self.pipeline, requests)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def embed_chips(self, chip_sets: list[np.ndarray]) -> list[np.ndarray]:
        """Embeddings of aligned chips cut elsewhere (the video workers align their faces themselves)."""
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
