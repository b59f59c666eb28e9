"""Frames in, events out: detect, filter, track, pick best shots, embed on demand, match, crop.

:class:`StreamProcessor` is the per-stream logic shared by the stream worker (``actors/video.py``,
whose backend is the Embedder deployment and whose watchlist is a service's index shards) and by
``faces video scan`` / ``bench/video.py`` (a local :class:`~facecore.pipeline.FacePipeline` and an
in-memory watchlist). Detection runs on every frame it is given; embeddings only where the tracker
asks for them (see :mod:`facevideo.tracking`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from facecore.align import align_face
from facecore.images import encode_jpeg
from facecore.pipeline import Face, FacePipeline
from facecore.quality import assess_quality
from facecore.similarity import similarity_from_cosine
from facevideo.config import ProcessingOptions
from facevideo.events import EventPolicy, VideoEvent
from facevideo.source import Frame
from facevideo.tracking import Observation, Track, Tracker, TrackerConfig, appearance_signature

CROP_MARGIN = 0.3
JPEG_QUALITY = 90


class FaceBackend(Protocol):
    """Detection and embedding, wherever they run."""

    async def detect(self, image: np.ndarray, threshold: float) -> list[Face]:
        """Faces of one BGR frame (box, score, landmarks, pose), largest first."""

    async def embed(self, chips: np.ndarray) -> np.ndarray:
        """Unit embeddings ``(N, D)`` of aligned ``(N, 112, 112, 3)`` BGR chips."""


class Watchlist(Protocol):
    """The faces to match against (a recognition service)."""

    async def best_matches(self, queries: np.ndarray) -> list[tuple[str, float] | None]:
        """Per query row, the most similar subject and its cosine, or None when the list is empty."""


class _Coalescer:
    """Runs ``work(items) -> results`` on a thread, one run at a time; what is submitted while a run
    is busy goes into the next run together. One caller waits for nothing; concurrent callers (several
    streams) are batched, as ``@serve.batch`` batches the Embedder's callers."""

    def __init__(self, work: Callable[[list], list]):
        self.work = work
        self._pending: list[tuple[object, asyncio.Future]] = []
        self._runner: asyncio.Task | None = None

    async def submit(self, item):
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await asyncio.to_thread(self.work, [item for item, _ in batch])
            except Exception as exc:  # every caller of the batch gets the error
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


class LocalBackend:
    """A :class:`FacePipeline` in this process, run on worker threads, batching concurrent streams."""

    def __init__(self, pipeline: FacePipeline):
        self.pipeline = pipeline
        self._detections = _Coalescer(self._detect_batch)
        self._embeddings = _Coalescer(pipeline.embedder.embed_groups)

    def _detect_batch(self, requests: list[tuple[np.ndarray, float]]) -> list[list[Face]]:
        lowest = min(threshold for _, threshold in requests)
        found = self.pipeline.detect_decoded([image for image, _ in requests], lowest, 0, None)
        return [[face for face in faces if face.score >= threshold] for faces, (_, threshold) in zip(found, requests)]

    async def detect(self, image: np.ndarray, threshold: float) -> list[Face]:
        return await self._detections.submit((image, threshold))

    async def embed(self, chips: np.ndarray) -> np.ndarray:
        return await self._embeddings.submit(chips)


class MatrixWatchlist:
    """Subjects and their face embeddings held in memory (``vectors``: unit rows, one per face)."""

    def __init__(self, subjects: list[str], vectors: np.ndarray):
        if len(subjects) != len(vectors):
            raise ValueError(f"{len(subjects)} subjects for {len(vectors)} vectors")
        self.subjects = subjects
        self.vectors = np.asarray(vectors, np.float32)

    async def best_matches(self, queries: np.ndarray) -> list[tuple[str, float] | None]:
        if not len(self.subjects):
            return [None] * len(queries)
        scores = queries @ self.vectors.T
        best = scores.argmax(axis=1)
        return [(self.subjects[row], float(scores[q, row])) for q, row in enumerate(best)]


@dataclass
class Shot:
    """What an observation keeps for its possible best shot: its frame and aligned chip."""

    frame: np.ndarray
    chip: np.ndarray


def face_crop(frame: np.ndarray, box: np.ndarray, margin: float = CROP_MARGIN) -> np.ndarray:
    """The face's box widened by ``margin`` of its size on every side, clipped to the frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    height, width = frame.shape[:2]
    left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
    right, bottom = min(width, int(np.ceil(x2 + dx))), min(height, int(np.ceil(y2 + dy)))
    return frame[top:max(bottom, top + 1), left:max(right, left + 1)]


class StreamProcessor:
    """The per-stream state: tracker, event policy and counters. Feed frames in time order."""

    def __init__(self, backend: FaceBackend, watchlist: Watchlist | None, options: ProcessingOptions,
                 session: str, tracker_config: TrackerConfig | None = None):
        self.backend = backend
        self.watchlist = watchlist
        self.options = options
        self.session = session
        self.tracker = Tracker(tracker_config)
        self.policy = EventPolicy(options.mode)
        self.frames = 0
        self.faces = 0
        self.embedded = 0

    def _wanted(self, face: Face, width: int, height: int) -> bool:
        x1, y1, x2, y2 = (float(v) for v in face.box)
        if min(x2 - x1, y2 - y1) < self.options.min_face_size:
            return False
        if self.options.roi is None:
            return True
        rx1, ry1, rx2, ry2 = self.options.roi
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        return rx1 <= cx <= rx2 and ry1 <= cy <= ry2

    async def process(self, frame: Frame) -> list[VideoEvent]:
        """Detect and track the faces of one frame; the events this frame causes."""
        image = frame.image
        height, width = image.shape[:2]
        faces = [f for f in await self.backend.detect(image, self.options.det_prob_threshold)
                 if self._wanted(f, width, height)]
        self.frames += 1
        self.faces += len(faces)
        observations = []
        for face in faces:
            chip = align_face(image, face.landmarks)
            quality = assess_quality(face.score, face.box[2] - face.box[0], face.box[3] - face.box[1], chip, face.pose)
            observations.append(Observation(box=face.box, score=face.score, quality=quality.score, time=frame.time,
                                            signature=appearance_signature(chip), payload=Shot(image, chip)))
        plan = self.tracker.plan(observations, frame.time)
        embeddings: dict[int, np.ndarray] = {}
        if plan.to_embed:
            vectors = await self.backend.embed(np.stack([observations[i].payload.chip for i in plan.to_embed]))
            embeddings = dict(zip(plan.to_embed, vectors))
            self.embedded += len(plan.to_embed)
        return await self._events(self.policy.decide(self.tracker.commit(plan, embeddings)))

    async def finish(self) -> list[VideoEvent]:
        """End every track (the source ended or dropped); the events that causes."""
        return await self._events(self.policy.decide(self.tracker.finish()))

    async def _events(self, emits: list[tuple[Track, str]]) -> list[VideoEvent]:
        if not emits:
            return []
        queries = np.stack([track.best.embedding for track, _ in emits])
        matches = await self.watchlist.best_matches(queries) if self.watchlist else [None] * len(emits)
        return [self._event(track, reason, match) for (track, reason), match in zip(emits, matches)]

    def _event(self, track: Track, reason: str, match: tuple[str, float] | None) -> VideoEvent:
        best = track.best
        shot: Shot = best.payload
        subject, similarity = None, None
        if match is not None:
            score = float(similarity_from_cosine(match[1]))
            if score >= self.options.recognition_threshold:
                subject, similarity = match[0], round(score, 5)
        return VideoEvent(
            track_id=f"{self.session}-{track.id}", reason=reason, first_seen=track.first_seen,
            last_seen=track.last_seen, box=tuple(round(float(v), 1) for v in best.box),
            quality=round(best.quality, 4), detection_score=round(best.score, 4), embedding=best.embedding,
            crop=encode_jpeg(face_crop(shot.frame, best.box), JPEG_QUALITY),
            frame=encode_jpeg(shot.frame, JPEG_QUALITY) if self.options.save_frame else None,
            subject=subject, similarity=similarity)
