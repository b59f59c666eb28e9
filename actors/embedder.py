"""Embedder deployment: decode -> detect -> align -> embed, batched across concurrent requests.

Each replica holds one :class:`FacePipeline`: on a replica given a GPU fraction (``embedder_num_gpus``)
the torch pipeline on CUDA with GPU preprocessing (:mod:`facecore.pipelines`), else one on the
configured inference backend (``auto``: CUDA when a GPU is visible, OpenVINO on x86 CPUs, ONNX
Runtime otherwise). Requests
arriving within ``batch_wait_ms`` of each other are processed together (``@serve.batch``): detection
runs over all their images at once, embedding over all their faces at once. Per-request parameters
(threshold, limit) are applied after the shared detection. Errors are returned per request, so one
bad image never fails the other requests of its batch.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
from ray import serve

from facecore.errors import FaceError
from facecore.images import encode_jpeg
from facecore.pipeline import Face, FacePipeline, StageTimer
from facecore.pipelines import open_pipeline
from faces_settings import Settings



@dataclass
class FaceRequest:
    """One image to process: encoded bytes, or a decoded BGR array (a video frame, no encode/decode
    round trip). ``embed`` adds the embedding, and with ``quality`` the quality (and pose) too;
    ``crops`` adds aligned JPEG chips."""

    image: bytes | np.ndarray
    det_prob_threshold: float
    limit: int = 0
    embed: bool = True
    crops: bool = False
    quality: bool = True


@dataclass
class FaceResponse:
    """``faces`` as selected by the request's limit; ``found`` counts the faces above its threshold."""

    faces: list[Face] = field(default_factory=list)
    crops: list[bytes] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: FaceError | None = None
    found: int = 0

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
        pipeline.describe([decoded[n] for n in to_embed], [selected[n] for n in to_embed], timer,
                          quality=[requests[live[n]].quality for n in to_embed])
        started = time.perf_counter()
        for n, index in enumerate(live):
            response = responses[index]
            response.faces = selected[n]
            response.found = sum(1 for face in detected[n] if face.score >= requests[index].det_prob_threshold)
            if requests[index].crops:
                response.crops = [encode_jpeg(face.chip) for face in response.faces]
            for face in response.faces:
                face.chip = None  # large and not needed by the caller
        if any(requests[index].crops for index in live):
            timer.add("crops", started)
    for response in responses:
        response.timings = dict(timer.stages)
    return responses


@serve.deployment(name="Embedder")
class Embedder:
    """Serve deployment wrapping :func:`process_batch` with dynamic batching."""

    def __init__(self, settings: Settings):
        self.pipeline = open_pipeline(settings.pipeline_config(gpu=settings.embedder_num_gpus > 0))
        self.process.set_max_batch_size(settings.batch_max_size)
        self.process.set_batch_wait_timeout_s(settings.batch_wait_ms / 1000.0)
        self.embed_chips.set_max_batch_size(settings.batch_max_size)
        self.embed_chips.set_batch_wait_timeout_s(settings.batch_wait_ms / 1000.0)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def process(self, requests: list[FaceRequest]) -> list[FaceResponse]:
        return await asyncio.to_thread(process_batch, self.pipeline, requests)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def embed_chips(self, chip_sets: list[np.ndarray]) -> list[np.ndarray]:
        """Embeddings of aligned chips cut elsewhere (the video workers align their faces themselves)."""
        return await asyncio.to_thread(self.pipeline.embedder.embed_groups, chip_sets)

    def model_versions(self) -> dict[str, str]:
        """Model ids, and the inference backend, device and precision they run on."""
        detector = self.pipeline.detector.spec
        running = self.pipeline.embedder.description
        return {"detector": f"{detector.name}@{detector.version}", "calculator": self.pipeline.model_id,
                "backend": running.backend, "device": running.device, "precision": running.precision}
