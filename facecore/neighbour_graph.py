"""The k-nearest-neighbour graph of face embeddings, computed in chunks of queries.

Each chunk of query rows is searched exactly against all rows (faiss's blocked float32 matrix
products with a running top-k, so a chunk holds ``chunk x k`` results, never a ``chunk x n`` block of
scores); only neighbours with cosine above ``floor`` are kept, as edges ``(row, neighbour,
cosine)``. The graph takes ``O(n k)`` memory; its time is ``O(n^2 d)`` multiply-adds (exact search,
so no same-person neighbour is missed, which partitioned indexes do with faces: see
``faceindex/ann_index.py``), spread over as many processes as compute chunks.
"""

from __future__ import annotations

import faiss
import numpy as np

NEIGHBOURS = 32     # nearest neighbours per face kept as edges
EDGE_FLOOR = 0.0    # neighbours at or below this cosine are no edges (counted as 0 by the linkage)
QUERY_CHUNK = 8192  # query rows searched at once


def chunk_edges(queries: np.ndarray, first_row: int, base: np.ndarray, neighbours: int = NEIGHBOURS,
                floor: float = EDGE_FLOOR) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges ``(rows, neighbours, cosines)`` from the queries (rows ``first_row`` on of ``base``) to
    their ``neighbours`` nearest rows of ``base`` (unit length), self and cosines <= ``floor`` left out."""
    queries = np.ascontiguousarray(queries, np.float32)
    count = min(neighbours + 1, len(base))
    cosines, found = faiss.knn(queries, np.ascontiguousarray(base, np.float32), count,
                               metric=faiss.METRIC_INNER_PRODUCT)
    rows = np.repeat(np.arange(first_row, first_row + len(queries), dtype=np.int64), count).reshape(found.shape)
    keep = (found >= 0) & (found != rows) & (cosines > floor)
    return rows[keep].astype(np.int32), found[keep].astype(np.int32), cosines[keep].astype(np.float32)


def neighbour_edges(vectors: np.ndarray, neighbours: int = NEIGHBOURS, floor: float = EDGE_FLOOR,
                    chunk: int = QUERY_CHUNK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The edges of the whole graph, chunk after chunk in this process."""
    parts = [chunk_edges(vectors[start:start + chunk], start, vectors, neighbours, floor)
             for start in range(0, len(vectors), chunk)]
    if not parts:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    return tuple(np.concatenate(column) for column in zip(*parts))
