"""Batched face embedding of aligned chips, the embedding models by name, and vector similarity.

An embedding model takes :class:`AlignedFaces` (the faces' landmarks and boxes in their images,
aligned on demand to each chip kind a model needs) and returns unit-length vectors:

- :class:`ChipEmbedder`: one registry model on its own chip (SFace: 112x112 ArcFace-aligned from
  the five landmarks; dlib's ResNet: dlib's 150x150 chip from dlib's own landmarks in the box);
- :class:`FusionEmbedder`: several models' unit embeddings, each scaled by a weight, concatenated
  and normalised again, so the cosine of two fused vectors is the weighted mean (weights squared)
  of the members' cosines.

:data:`EMBEDDING_MODELS` names them (``sface`` is the default); :func:`open_embedder` opens one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from facecore.align import CHIP_SIZE, DLIB_CHIP_SIZE, align_faces
from facecore.backends import BackendOptions, Description, InferenceModel
from facecore.dlib_landmarks import dlib_chips, five_point_predictor
from facecore.errors import ModelError
from facecore.models import DLIB_RESNET, SFACE, ModelSpec, open_registry_model

DEFAULT_BATCH = 32


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity between rows of ``a`` ``(N, D)`` and rows of ``b`` ``(M, D)``: ``(N, M)``."""
    return l2_normalize(np.atleast_2d(a)) @ l2_normalize(np.atleast_2d(b)).T


CHIP_SIDES = {"arcface112": CHIP_SIZE, "dlib150": DLIB_CHIP_SIZE}


def _arcface_chips(images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray],
                   boxes: Sequence[np.ndarray] | None) -> np.ndarray:
    made = [align_faces(image, points) for image, points in zip(images, landmarks) if len(points)]
    return np.concatenate(made) if made else np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)


# The aligners of each chip kind: ``(images, (n_i, 5, 2) landmarks and (n_i, 4) boxes or None per
# image) -> (N, side, side, 3)`` chips of all faces, images in order.
CHIP_ALIGNERS = {"arcface112": _arcface_chips, "dlib150": dlib_chips}


class AlignedFaces:
    """Faces of decoded images (``(n_i, 5, 2)`` landmarks and ``(n_i, 4)`` boxes per image), aligned
    once per chip kind.

    ``arcface_chips``, when given, are the 112x112 chips already made (the pipeline keeps them for
    quality and crops). ``boxes`` are the detector's; without them (faces known only by their
    landmarks, as in a stored crop) dlib's chips are cut from the detector's landmarks instead of
    dlib's own (:func:`facecore.dlib_landmarks.dlib_chips`)."""

    def __init__(self, images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray],
                 arcface_chips: np.ndarray | None = None, boxes: Sequence[np.ndarray] | None = None):
        self.images = list(images)
        self.landmarks = [np.asarray(points, np.float64).reshape(-1, 5, 2) for points in landmarks]
        self.boxes = None if boxes is None else [np.asarray(box, np.float64).reshape(-1, 4) for box in boxes]
        self._chips: dict[str, np.ndarray] = {} if arcface_chips is None else {"arcface112": arcface_chips}

    @classmethod
    def of_chips(cls, chips: dict[str, np.ndarray]) -> "AlignedFaces":
        """Faces known only by their chips, already cut (e.g. from stored crops), per chip kind."""
        faces = cls([], [])
        faces._chips = dict(chips)
        return faces

    def __len__(self) -> int:
        return sum(len(points) for points in self.landmarks)

    def chips(self, kind: str) -> np.ndarray:
        """``(N, side, side, 3)`` uint8 chips of every face, images in order."""
        if kind not in self._chips:
            self._chips[kind] = CHIP_ALIGNERS[kind](self.images, self.landmarks, self.boxes)
        return self._chips[kind]


class ChipEmbedder:
    """One registry model: L2-normalised embeddings of its aligned BGR chips, computed in batches."""

    def __init__(self, model: InferenceModel, spec: ModelSpec = SFACE, batch_size: int = DEFAULT_BATCH):
        self.model = model
        self.spec = spec
        self.batch_size = batch_size
        self.input_name = model.input_names[0]
        self.dimension = spec.embedding_dim
        self.chip_side = CHIP_SIDES[spec.chip]

    @classmethod
    def from_registry(cls, options: BackendOptions, spec: ModelSpec = SFACE,
                      batch_size: int = DEFAULT_BATCH) -> "ChipEmbedder":
        model = open_registry_model(spec, replace(options, batch=batch_size))
        if spec.chip == "dlib150":
            five_point_predictor()  # read now (seconds), not on the first face
        return cls(model, spec, batch_size)

    @property
    def description(self) -> Description:
        """The backend, device and precision the model runs on."""
        return self.model.description

    @property
    def model_id(self) -> str:
        """``name@version``, stored with every embedding."""
        return f"{self.spec.name}@{self.spec.version}"

    def embed_aligned(self, faces: AlignedFaces) -> np.ndarray:
        """``(N, D)`` unit-length embeddings of the faces, on this model's chip."""
        return self.embed(faces.chips(self.spec.chip))

    def embed(self, chips: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Embed ``(N, side, side, 3)`` BGR uint8 chips of this model; returns ``(N, D)`` unit-length float32."""
        if len(chips) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        stack = np.asarray(chips)
        side = self.chip_side
        if stack.shape[1:] != (side, side, 3):
            raise ValueError(f"chips must be (N, {side}, {side}, 3), got {stack.shape}")
        stack = np.ascontiguousarray(stack, dtype=np.uint8)
        outputs = [self.model.run({self.input_name: stack[start:start + self.batch_size]})[0]
                   for start in range(0, len(stack), self.batch_size)]
        return l2_normalize(np.concatenate(outputs).reshape(len(stack), -1))

    def embed_groups(self, groups: list[np.ndarray]) -> list[np.ndarray]:
        """Embed several ``(N_i, side, side, 3)`` chip arrays in one batched run; one ``(N_i, D)`` array each."""
        sizes = [len(chips) for chips in groups]
        if not sum(sizes):
            return [np.zeros((0, self.dimension), np.float32) for _ in groups]
        vectors = self.embed(np.concatenate([chips for chips in groups if len(chips)]))
        return np.split(vectors, np.cumsum(sizes)[:-1])


@dataclass(frozen=True)
class FusionSpec:
    """Models whose unit embeddings are weighted, concatenated and normalised again."""

    name: str
    members: tuple[ModelSpec, ...]
    weights: tuple[float, ...]

    @property
    def version(self) -> str:
        parts = [f"{spec.name}@{spec.version}*{weight:g}" for spec, weight in zip(self.members, self.weights)]
        return "+".join(parts)

    @property
    def embedding_dim(self) -> int:
        return sum(spec.embedding_dim for spec in self.members)


class FusionEmbedder:
    """A :class:`FusionSpec` over one :class:`ChipEmbedder` per member."""

    def __init__(self, spec: FusionSpec, members: list[ChipEmbedder]):
        self.spec = spec
        self.members = members
        self.dimension = spec.embedding_dim

    @property
    def description(self) -> Description:
        return self.members[0].description

    @property
    def model_id(self) -> str:
        return f"{self.spec.name}@{self.spec.version}"

    def embed_aligned(self, faces: AlignedFaces) -> np.ndarray:
        parts = [weight * member.embed_aligned(faces) for weight, member in zip(self.spec.weights, self.members)]
        return l2_normalize(np.concatenate(parts, axis=1))


# The fusion's weights were chosen on lfw-dev's pairs only, by its 10-fold protocol: dlib's weight
# (SFace's is 1) from 0.25 to 3 in steps of 0.05, the most accurate on the training folds, ties going to
# the weight whose fused cosines best separate same-person from different-person pairs (d'). Every
# fold's nine others chose 1.35 or 1.4 (0.9983 on the held-out folds); all of lfw-dev chose 1.35.
FUSION = FusionSpec(name="fusion", members=(SFACE, DLIB_RESNET), weights=(1.0, 1.35))
EMBEDDING_MODELS: dict[str, ModelSpec | FusionSpec] = {spec.name: spec for spec in (SFACE, DLIB_RESNET, FUSION)}
DEFAULT_EMBEDDING_MODEL = SFACE.name

Embedder = ChipEmbedder | FusionEmbedder


def embedding_model(name: str) -> ModelSpec | FusionSpec:
    """The embedding model ``name`` (a key of :data:`EMBEDDING_MODELS`); :class:`ModelError` naming the
    known ones for any other name."""
    spec = EMBEDDING_MODELS.get(name)
    if spec is None:
        raise ModelError(f"unknown embedding model {name!r}; known: {', '.join(EMBEDDING_MODELS)}")
    return spec


def model_members(name: str) -> tuple[ModelSpec, ...]:
    """The registry models embedding model ``name`` runs (a fusion's members, or the model itself)."""
    spec = embedding_model(name)
    return spec.members if isinstance(spec, FusionSpec) else (spec,)


def model_id(name: str) -> str:
    """``name@version`` of embedding model ``name``, as stored with its embeddings."""
    spec = embedding_model(name)
    return f"{spec.name}@{spec.version}"


def open_embedder(name: str, options: BackendOptions, batch_size: int = DEFAULT_BATCH) -> Embedder:
    """The embedding model ``name`` (a key of :data:`EMBEDDING_MODELS`) opened with a backend."""
    spec = embedding_model(name)
    if isinstance(spec, FusionSpec):
        return FusionEmbedder(spec, [ChipEmbedder.from_registry(options, member, batch_size) for member in spec.members])
    return ChipEmbedder.from_registry(options, spec, batch_size)
