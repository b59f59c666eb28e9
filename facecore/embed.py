"""Batched face embedding of aligned 112x112 chips, and vector similarity."""

from __future__ import annotations

import numpy as np

from facecore.align import CHIP_SIZE
from facecore.models import SFACE, ModelSpec, converted_model_path, create_session

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

    def __init__(self, session, spec: ModelSpec = SFACE, batch_size: int = DEFAULT_BATCH):
        self.session = session
        self.spec = spec
        self.batch_size = batch_size
        self.input_name = session.get_inputs()[0].name
        self.dimension = int(session.get_outputs()[0].shape[-1])

    @classmethod
    def from_registry(cls, threads: int | None = None, providers: list[str] | None = None,
                      batch_size: int = DEFAULT_BATCH, cache_dir=None) -> "SFaceEmbedder":
        session = create_session(converted_model_path(SFACE, cache_dir), providers, threads)
        return cls(session, SFACE, batch_size)

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
        outputs = []
        for start in range(0, len(stack), self.batch_size):
            part = stack[start:start + self.batch_size]
            blob = np.ascontiguousarray(part[:, :, :, ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
            outputs.append(self.session.run(None, {self.input_name: blob})[0])
        return l2_normalize(np.concatenate(outputs).reshape(len(stack), -1))

    def embed_groups(self, groups: list[np.ndarray]) -> list[np.ndarray]:
        """Embed several ``(N_i, 112, 112, 3)`` chip arrays in one batched run; one ``(N_i, D)`` array each."""
        sizes = [len(chips) for chips in groups]
        if not sum(sizes):
            return [np.zeros((0, self.dimension), np.float32) for _ in groups]
        vectors = self.embed(np.concatenate([chips for chips in groups if len(chips)]))
        return np.split(vectors, np.cumsum(sizes)[:-1])
