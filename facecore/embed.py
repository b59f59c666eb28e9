"""Batched face embedding of aligned 112x112 chips, and vector similarity."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from facecore.align import CHIP_SIZE
from facecore.backends import BackendOptions, Description, InferenceModel
from facecore.models import SFACE, ModelSpec, open_registry_model

DEFAULT_BATCH = 32


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity between rows of ``a`` ``(N, D)`` and rows of ``b`` ``(M, D)``: ``(N, M)``."""
    return l2_normalize(np.atleast_2d(a)) @ l2_normalize(np.atleast_2d(b)).T


class SFaceEmbedder:
    """SFace: 128-d L2-normalised embeddings of aligned BGR chips, computed in batches."""

    def __init__(self, model: InferenceModel, spec: ModelSpec = SFACE, batch_size: int = DEFAULT_BATCH):
        self.model = model
        self.spec = spec
        self.batch_size = batch_size
        self.input_name = model.input_names[0]
        self.dimension = spec.embedding_dim

    @classmethod
    def from_registry(cls, options: BackendOptions, spec: ModelSpec = SFACE,
                      batch_size: int = DEFAULT_BATCH) -> "SFaceEmbedder":
        return cls(open_registry_model(spec, replace(options, batch=batch_size)), spec, batch_size)

    @property
    def description(self) -> Description:
        """The backend, device and precision the model runs on."""
        return self.model.description

    @property
    def model_id(self) -> str:
        """``name@version``, stored with every embedding."""
        return f"{self.spec.name}@{self.spec.version}"

    def embed(self, chips: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Embed ``(N, 112, 112, 3)`` BGR uint8 chips; returns ``(N, D)`` unit-length float32."""
        if len(chips) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        stack = np.asarray(chips)
        if stack.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"chips must be (N, {CHIP_SIZE}, {CHIP_SIZE}, 3), got {stack.shape}")
        stack = np.ascontiguousarray(stack, dtype=np.uint8)
        outputs = [self.model.run({self.input_name: stack[start:start + self.batch_size]})[0]
                   for start in range(0, len(stack), self.batch_size)]
        return l2_normalize(np.concatenate(outputs).reshape(len(stack), -1))

    def embed_groups(self, groups: list[np.ndarray]) -> list[np.ndarray]:
        """Embed several ``(N_i, 112, 112, 3)`` chip arrays in one batched run; one ``(N_i, D)`` array each."""
        sizes = [len(chips) for chips in groups]
        if not sum(sizes):
            return [np.zeros((0, self.dimension), np.float32) for _ in groups]
        vectors = self.embed(np.concatenate([chips for chips in groups if len(chips)]))
        return np.split(vectors, np.cumsum(sizes)[:-1])
