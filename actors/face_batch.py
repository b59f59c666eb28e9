"""The embedder's batch core, free of Ray: requests, responses and :func:`process_batch`.

A batch of images is decoded, detected at once, and the faces of the requests that name the same
embedding model embedded at once; per-request parameters (threshold, limit) are applied after the
shared detection, and errors stay per request. The Serve deployment (:mod:`actors.embedder`), the
bulk jobs' embedder actors (:mod:`batch_jobs.embedding`) and the video workers run it; the last two
import this module alone, not Ray Serve (about 0.3 s of CPU in every process that imports it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from facecore.embed import DEFAULT_EMBEDDING_MODEL
from facecore.errors import FaceError
from facecore.images import encode_jpeg
from facecore.pipeline import Face, FacePipeline, StageTimer


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
