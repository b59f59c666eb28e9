"""Synthetic face embeddings that match the statistics of real ones, for capacity tests.

Uniform random unit vectors are far apart from each other and from real faces, an unrealistically
hard case for approximate indexes and an unrealistically easy one for identification. Real face
embeddings cluster in a cone; we fit a Gaussian (mean and shrunk covariance) to real embeddings and
draw unit vectors from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHRINKAGE = 0.05


@dataclass(frozen=True)
class EmbeddingDistribution:
    mean: np.ndarray
    factor: np.ndarray  # covariance = factor @ factor.T

    @classmethod
    def fit(cls, embeddings: np.ndarray) -> "EmbeddingDistribution":
        """Fit to ``(N, D)`` real embeddings (N may be below D: the covariance is shrunk)."""
        data = np.asarray(embeddings, dtype=np.float64)
        mean = data.mean(axis=0)
        covariance = np.cov(data, rowvar=False)
        target = np.eye(data.shape[1]) * np.trace(covariance) / data.shape[1]
        shrunk = (1 - SHRINKAGE) * covariance + SHRINKAGE * target
        return cls(mean=mean, factor=np.linalg.cholesky(shrunk))

    def sample(self, count: int, rng: np.random.Generator, chunk: int = 1_000_000) -> np.ndarray:
        """``(count, D)`` unit-length float32 vectors."""
        out = np.empty((count, len(self.mean)), dtype=np.float32)
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            draws = self.mean + rng.standard_normal((size, len(self.mean))) @ self.factor.T
            out[start:start + size] = draws / np.linalg.norm(draws, axis=1, keepdims=True)
        return out


def noisy_sightings(centres: np.ndarray, labels: np.ndarray, same_cosine: float, rng: np.random.Generator,
                    chunk: int = 100_000) -> np.ndarray:
    """Unit-length sightings of the identities ``labels`` (rows of the unit-length ``centres``): each is
    its centre plus isotropic noise scaled so that two sightings of one identity average ``same_cosine``
    (as two real photos of one person do)."""
    dim = centres.shape[1]
    spread = np.sqrt((1 / same_cosine - 1) / dim)  # E[cos] of two noisy copies = 1 / (1 + dim spread^2)
    out = np.empty((len(labels), dim), np.float32)
    for start in range(0, len(labels), chunk):
        part = slice(start, start + chunk)
        noisy = centres[labels[part]] + spread * rng.standard_normal((len(labels[part]), dim))
        out[part] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    return out
