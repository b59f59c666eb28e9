"""Approximate candidate search for large shards: faiss product quantisation with SIMD fast scan.

Each unit vector is compressed to 64 four-bit codes (32 bytes at 128-d); a query scans all codes with
SIMD look-up tables, which is about 40 times cheaper than a float32 scan here, and keeps the best
``candidates``. The shard then re-scores those candidates exactly against its float32 matrix, so
reported similarities are exact and deleted faces are simply skipped.

Why not IVF or HNSW: face embeddings of the same person are far apart by ANN standards (cosine
0.4-0.7), so partitioned indexes miss them unless they scan a quarter or more of their lists, and
HNSW needed wide beams (and a slow build) for 98% on the same data; a flat fast scan with 64
sub-quantizers and 512+ candidates re-ranked exactly found the exact top-1 for every real lfw-dev
query among 1M realistic faces (32 sub-quantizers: 99.4%; see docs/benchmarks.md). The index is immutable once built; faces added later are searched exactly
beside it (the shard's "tail") until the next build.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)

SUB_QUANTIZERS = 64
BITS = 4
TRAIN_POINTS = 65_536


class AnnIndex:
    """An immutable PQ fast-scan index over ``face_ids``."""

    def __init__(self, index: faiss.Index, face_ids: np.ndarray, build_seconds: float):
        self.index = index
        self.face_ids = face_ids
        self.build_seconds = build_seconds

    @classmethod
    def build(cls, vectors: np.ndarray, face_ids: list[str], seed: int = 0) -> "AnnIndex":
        """Train and fill an index over unit-length ``vectors`` (rows) with these ids."""
        started = time.perf_counter()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        index = faiss.IndexPQFastScan(dim, SUB_QUANTIZERS, BITS, faiss.METRIC_INNER_PRODUCT)
        if n > TRAIN_POINTS:
            index.train(vectors[np.random.default_rng(seed).choice(n, TRAIN_POINTS, replace=False)])
        else:
            index.train(vectors)
        index.add(vectors)
        elapsed = time.perf_counter() - started
        log.info("built PQ%dx%dfs over %d faces in %.1f s", SUB_QUANTIZERS, BITS, n, elapsed)
        return cls(index, np.asarray(face_ids, dtype=object), elapsed)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def candidates(self, queries: np.ndarray, count: int) -> list[np.ndarray]:
        """Per query, the face ids of the ``count`` best approximate matches."""
        _, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(count, len(self)))
        return [self.face_ids[r[r >= 0]] for r in rows]

    def memory_bytes(self) -> int:
        """Codes plus the id array (a Python str object per face included)."""
        sample = self.face_ids[:1000]
        per_id = sum(len(f) + 57 for f in sample) / max(1, len(sample))
        return int(len(self) * (SUB_QUANTIZERS * BITS / 8 + 8 + per_id))

    def save(self, path: Path) -> None:
        """Write the index and its ids as one file, atomically replacing an older one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.tmp{os.getpid()}")
        with open(partial, "wb") as handle:
            np.savez(handle, index=faiss.serialize_index(self.index), ids=self.face_ids.astype(str))
        os.replace(partial, path)

    @classmethod
    def load(cls, path: Path) -> "AnnIndex | None":
        """The saved index at ``path``, or None when there is none (or it is unreadable)."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as saved:
                index = faiss.deserialize_index(saved["index"])
                face_ids = saved["ids"].astype(object)
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable index %s: %s", path, exc)
            return None
        return cls(index, face_ids, 0.0)
