"""FacePipeline: images in, faces out (box, landmarks, score, pose, quality, embedding).

Composes the detector, the aligner and the embedder. Every method takes a list of images (bytes or
BGR arrays) and works batched: detection runs over several images at once, embedding over all the
faces of all the images.
"""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from facecore.align import CHIP_SIZE, align_faces
from facecore.backends import BackendOptions
from facecore.context_crop import CONTEXT_SIZE, context_crops
from facecore.detect import DEFAULT_MAX_SIDE, Detection, YuNetDetector
from facecore.embed import (DEFAULT_EMBEDDING_MODEL, AlignedFaces, ChipEmbedder, Embedder,
                            FusionEmbedder, FusionSpec, embedding_model)
from facecore.images import ImageLimits, decode_image, reduction_of
from facecore.quality import Pose, Quality, assess_quality, estimate_pose
from facecore.warmup import no_wait, timed, warm_up_detector, warm_up_embedder

ImageInput = bytes | bytearray | memoryview | np.ndarray
DEFAULT_CACHE_DIR = "data/models"
DEFAULT_DET_PROB_THRESHOLD = 0.8
DEFAULT_DECODE_MIN_SIDE = 3 * DEFAULT_MAX_SIDE


@dataclass
class Face:
    """One face of an image. ``embedding`` and ``quality`` are set by :meth:`FacePipeline.analyze`;
    ``pose`` is estimated from the landmarks when first read."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    chip: np.ndarray | None = None
    quality: Quality | None = None
    embedding: np.ndarray | None = None
    _pose: Pose | None = field(default=None, repr=False)

    @property
    def pose(self) -> Pose:
        if self._pose is None:
            self._pose = estimate_pose(self.landmarks)
        return self._pose


@dataclass
class PipelineConfig:
    """Knobs of the pipeline; the service fills these from its settings.

    ``backend`` and ``precision`` choose the inference backend (:mod:`facecore.backends`);
    ``cache_dir`` holds the converted graphs and the backends' compiled models; ``model`` names the
    embedding model (``sface``, ``dlib-resnet`` or ``fusion``). JPEGs whose longer
    side is at least twice ``decode_min_side`` are decoded at 1/2, 1/4 or 1/8 of their size, their
    longer side staying at least ``decode_min_side`` (0: always in full); the default, 3x the
    detector's input side, keeps the faces it can find large enough for 112x112 chips.
    """

    threads: int | None = None
    backend: str = "auto"
    precision: str = "auto"
    max_side: int = DEFAULT_MAX_SIDE
    decode_min_side: int = DEFAULT_DECODE_MIN_SIDE
    detect_batch: int = 8
    embed_batch: int = 32
    limits: ImageLimits = field(default_factory=ImageLimits)
    cache_dir: str = DEFAULT_CACHE_DIR
    model: str = DEFAULT_EMBEDDING_MODEL  # the embedding model (facecore.embed.EMBEDDING_MODELS)
    gpu: bool = False  # this process was given a GPU (a fraction of one): see facecore.pipelines

    def backend_options(self) -> BackendOptions:
        return BackendOptions(backend=self.backend, precision=self.precision, threads=self.threads,
                              cache_dir=Path(self.cache_dir))


@dataclass
class StageTimer:
    """Milliseconds spent per stage, reported as ``execution_time``; ``details`` splits stages further
    (the detector's resize, inference and decoding with NMS) for profiling."""

    stages: dict[str, float] = field(default_factory=dict)
    details: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + (now - started) * 1000.0
        return now

    def detail(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.details[stage] = self.details.get(stage, 0.0) + (now - started) * 1000.0
        return now


class FacePipeline:
    """Decode -> detect -> align -> embed, batched."""

    _warm = False  # warm_up was called: embedding models opened later are warmed up when they open

    def __init__(self, config: PipelineConfig | None = None):
        self.config = config or PipelineConfig()
        cfg = self.config
        options = cfg.backend_options()
        self.detector = YuNetDetector.from_registry(options, cfg.max_side)
        self.model_options = options  # the backend that opens embedding models (embedder_for)
        self._embedders: dict[str, Embedder] = {}
        self.embedder = self.embedder_for(cfg.model)

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    def embedder_for(self, model: str | None) -> Embedder:
        """The embedding model ``model`` (None: the configured one), opened on first use; a fusion
        shares its members with the models of the same name."""
        if model is None:
            return self.embedder
        if model not in self._embedders:
            spec = embedding_model(model)
            if isinstance(spec, FusionSpec):
                embedder = FusionEmbedder(spec, [self.embedder_for(member.name) for member in spec.members])
            else:
                embedder = ChipEmbedder.from_registry(self.model_options, spec, self.config.embed_batch)
                if self._warm:
                    timed(spec.name, warm_up_embedder, embedder)
            self._embedders[model] = embedder
        return self._embedders[model]

    def warm_up(self, max_images: int, wait: Callable[[], object] = no_wait) -> float:
        """Run the models once at every input shape this process will give them (see
        :mod:`facecore.warmup`), detecting at most ``max_images`` images at once (and at most
        ``detect_batch``), calling ``wait()`` before each run; embedding models opened later are
        warmed up when they open. Seconds taken."""
        self._warm = True
        detected = max(1, min(max_images, self.config.detect_batch))
        seconds = timed("detector", warm_up_detector, self.detector, detected, wait)
        for name, embedder in list(self._embedders.items()):  # a request may open another meanwhile
            if isinstance(embedder, ChipEmbedder):
                seconds += timed(name, warm_up_embedder, embedder, wait)
        return seconds

    def decode(self, images: Sequence[ImageInput], timer: StageTimer | None = None) -> list[np.ndarray]:
        """Bytes are decoded (with the configured limits; large JPEGs at a reduced size, see
        ``PipelineConfig.decode_min_side``); arrays pass through as BGR."""
        started = time.perf_counter()
        decoded = [image if isinstance(image, np.ndarray)
                   else decode_image(bytes(image), self.config.limits, self.config.decode_min_side)
                   for image in images]
        if timer:
            timer.add("decode", started)
        return decoded

    def detect(self, images: Sequence[ImageInput], det_prob_threshold: float = DEFAULT_DET_PROB_THRESHOLD,
               limit: int = 0, timer: StageTimer | None = None) -> list[list[Face]]:
        """Faces of every image (box, score, landmarks, pose), largest first."""
        decoded = self.decode(images, timer)
        return self.detect_decoded(decoded, det_prob_threshold, limit, timer)

    def detect_decoded(self, decoded: list[np.ndarray], det_prob_threshold: float, limit: int,
                        timer: StageTimer | None) -> list[list[Face]]:
        started = time.perf_counter()
        detections: list[list[Detection]] = []
        step = max(1, self.config.detect_batch)
        for start in range(0, len(decoded), step):
            detections.extend(self.detector.detect_batch(decoded[start:start + step], det_prob_threshold, limit,
                                                         timer))
        if timer:
            timer.add("detect", started)
        return [[Face(box=d.box, score=d.score, landmarks=d.landmarks) for d in per_image]
                for per_image in detections]

    def analyze(self, images: Sequence[ImageInput], det_prob_threshold: float = DEFAULT_DET_PROB_THRESHOLD,
                limit: int = 0, timer: StageTimer | None = None, quality: bool = True) -> list[list[Face]]:
        """Faces of every image with aligned chip, embedding and (with ``quality``) quality and pose."""
        decoded = self.decode(images, timer)
        faces = self.detect_decoded(decoded, det_prob_threshold, limit, timer)
        self.describe(decoded, faces, timer, quality)
        return faces

    def describe(self, decoded: list[np.ndarray], faces: list[list[Face]], timer: StageTimer | None = None,
                 quality: bool | Sequence[bool] = True, model: str | None = None) -> None:
        """Fill chip, embedding and (where ``quality``, one flag or one per image) quality and pose of
        detected ``faces`` (one list per decoded image): the 112x112 chips of all faces (kept for
        quality and crops) are warped into one array; the embedding model (``model``, None: the
        configured one) aligns its own chips when it needs others, and embeds in batches."""
        started = time.perf_counter()
        flat = [face for per_image in faces for face in per_image]
        chips = np.empty((len(flat), CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
        landmarks = [np.stack([face.landmarks for face in per_image]) / reduction_of(image)
                     if per_image else np.zeros((0, 5, 2)) for image, per_image in zip(decoded, faces)]
        boxes = [np.stack([face.box[:4] for face in per_image]) / reduction_of(image)
                 if per_image else np.zeros((0, 4)) for image, per_image in zip(decoded, faces)]
        offset = 0
        for image, points in zip(decoded, landmarks):
            if len(points):
                align_faces(image, points, out=chips[offset:offset + len(points)])
                offset += len(points)
        for face, chip in zip(flat, chips):
            face.chip = chip
        if timer:
            started = timer.add("align", started)
        wanted = [quality] * len(faces) if isinstance(quality, bool) else list(quality)
        if any(wanted):
            for per_image, wants in zip(faces, wanted):
                for face in per_image if wants else ():
                    face.quality = assess_quality(face.score, face.box[2] - face.box[0],
                                                  face.box[3] - face.box[1], face.chip, face.pose)
            if timer:
                started = timer.add("quality", started)
        embedder = self.embedder_for(model)
        vectors = embedder.embed_aligned(AlignedFaces(decoded, landmarks, chips, boxes))
        for face, vector in zip(flat, vectors):
            face.embedding = vector
        if timer:
            timer.add("embed", started)

    def context_crops(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """The aligned context crops (:mod:`facecore.context_crop`) of detected ``faces`` of a decoded image."""
        if not faces:
            return np.zeros((0, CONTEXT_SIZE, CONTEXT_SIZE, 3), np.uint8)
        return context_crops(image, np.stack([face.landmarks for face in faces]) / reduction_of(image))

    def embed(self, images: Sequence[ImageInput], det_prob_threshold: float = DEFAULT_DET_PROB_THRESHOLD,
              limit: int = 0) -> list[np.ndarray]:
        """Per image, an ``(n_faces, D)`` array of unit-length embeddings, largest face first."""
        dimension = self.embedder.dimension
        return [np.stack([f.embedding for f in per_image]) if per_image else np.zeros((0, dimension), np.float32)
                for per_image in self.analyze(images, det_prob_threshold, limit, quality=False)]
