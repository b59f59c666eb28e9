"""Exact top-k over a matrix of unit embeddings: numpy on the host, torch on a GPU.

An :class:`IndexShard` on a node with a GPU keeps a half-precision copy of its matrix on the GPU
(:class:`TorchMatrixSearch`: 2 bytes per dimension, 256 bytes per 128-d face) and asks it for
candidates: the top ``count`` rows per query by one matrix product and ``torch.topk`` on the GPU.
The shard re-scores those candidates exactly in float32 from its host matrix, so half precision only
decides which rows are candidates, never a returned score. The copy follows the host matrix lazily:
rows appended since the last search are uploaded on the next one; any other change re-uploads it
whole: rows moved or deleted (the shard's layout ``version`` changed) or embeddings replaced in
place (the shard calls :meth:`invalidate`).

:class:`NumpyMatrixSearch` is the same contract on the host (float32), the reference in tests.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

log = logging.getLogger(__name__)

SCORE_BUDGET = 64_000_000  # most query x row scores held at once on the device


class NumpyMatrixSearch:
    """Exact top rows per query of a host float32 matrix."""

    device = "cpu"

    def top(self, queries: np.ndarray, vectors: np.ndarray, count: int,
            version: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, scores)``, each ``(Q, min(count, N))``, best first, of ``queries @ vectors.T``."""
        count = min(count, len(vectors))
        scores = queries @ vectors.T
        if count < len(vectors):
            rows = np.argpartition(scores, len(vectors) - count, axis=1)[:, len(vectors) - count:]
        else:
            rows = np.broadcast_to(np.arange(len(vectors)), scores.shape).copy()
        picked = np.take_along_axis(scores, rows, axis=1)
        order = np.argsort(-picked, axis=1, kind="stable")
        return np.take_along_axis(rows, order, axis=1), np.take_along_axis(picked, order, axis=1)

    def invalidate(self) -> None:
        """Nothing to do: the host matrix is searched directly."""

    def memory_bytes(self) -> int:
        return 0


class TorchMatrixSearch(NumpyMatrixSearch):
    """Exact top rows per query on a torch device (``cuda``; ``cpu`` in tests), at ``float16``.

    ``top`` searches the first ``len(vectors)`` rows of the host matrix ``vectors`` (a view of the
    shard's matrix) through the device copy, uploading the rows it lacks first.
    """

    def __init__(self, device: str = "cuda", dtype: str = "float16"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self._matrix = None  # device tensor with room to grow
        self._rows = 0      # rows of the host matrix the device copy holds
        self._version = None  # the host layout version they were uploaded under
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """Rows moved or changed on the host: the next search uploads the matrix again."""
        with self._lock:
            self._rows = 0

    def _sync(self, vectors: np.ndarray, version: int) -> None:
        torch = self.torch
        n = len(vectors)
        if n < self._rows or version != self._version:
            self._rows = 0
            self._version = version
        if self._matrix is None or len(self._matrix) < n:
            capacity = max(1024, n, 2 * (len(self._matrix) if self._matrix is not None else 0))
            grown = torch.empty((capacity, vectors.shape[1]), dtype=self.dtype, device=self.device)
            if self._matrix is not None and self._rows:
                grown[:self._rows] = self._matrix[:self._rows]
            self._matrix = grown
        step = 1 << 20
        for start in range(self._rows, n, step):
            block = torch.from_numpy(np.ascontiguousarray(vectors[start:start + step]))
            self._matrix[start:start + len(block)] = block.to(self.device).to(self.dtype)  # converted there
        self._rows = n

    def top(self, queries: np.ndarray, vectors: np.ndarray, count: int,
            version: int = 0) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        count = min(count, len(vectors))
        with self._lock:
            self._sync(vectors, version)
            matrix = self._matrix[:len(vectors)]
            step = max(1, SCORE_BUDGET // max(1, len(vectors)))
            rows, scores = [], []
            with torch.inference_mode():
                query_tensor = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(
                    self.device, self.dtype)
                for start in range(0, len(queries), step):
                    block = query_tensor[start:start + step] @ matrix.T
                    values, indices = torch.topk(block, count, dim=1, largest=True, sorted=True)
                    rows.append(indices.cpu())
                    scores.append(values.float().cpu())
        return torch.cat(rows).numpy(), torch.cat(scores).numpy()

    def memory_bytes(self) -> int:
        return 0 if self._matrix is None else self._matrix.numel() * self._matrix.element_size()


def matrix_search(device: str) -> TorchMatrixSearch | None:
    """The device search of a shard: ``None`` for ``numpy`` (the shard searches its host matrix
    itself), else a :class:`TorchMatrixSearch` on that torch device (``cuda``, ``cuda:1``; ``cpu``
    runs the torch code on the host, for tests)."""
    return None if device == "numpy" else TorchMatrixSearch(device)
