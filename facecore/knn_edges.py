"""Nearest neighbours found for a block of query embeddings, as graph edges.

Edges ``(row, neighbour, cosine)`` are in the faces' own row numbers: a face is never its own
neighbour, and neighbours at or below ``floor`` are no edges. :func:`block_edges` searches a block of
queries exactly among a block of faces (faiss's blocked float32 matrix products with a running
top-k, so it holds ``queries x k`` results, never a ``queries x base`` block of scores); both graph
searches (:mod:`facecore.neighbour_graph`, :mod:`facecore.hnsw_search`) turn what they find into
edges with :func:`found_edges`.
"""

from __future__ import annotations

import numpy as np

from facecore.faiss_runtime import faiss

Edges = tuple[np.ndarray, np.ndarray, np.ndarray]  # rows (int32), neighbours (int32), cosines (float32)
QUERY_CHUNK = 8192  # query faces searched at once: a graph search's unit of work


def found_edges(query_rows: np.ndarray, found_rows: np.ndarray, cosines: np.ndarray, floor: float) -> Edges:
    """Edges from each of ``query_rows`` to the rows found for it (a row of ``found_rows``, -1: none)."""
    rows = np.broadcast_to(np.asarray(query_rows, np.int64)[:, None], found_rows.shape)
    keep = (found_rows >= 0) & (found_rows != rows) & (cosines > floor)
    return rows[keep].astype(np.int32), found_rows[keep].astype(np.int32), cosines[keep].astype(np.float32)


def block_edges(queries: np.ndarray, query_rows: np.ndarray, base: np.ndarray, base_rows: np.ndarray,
                neighbours: int, floor: float) -> Edges:
    """Edges from the unit-length ``queries`` (rows ``query_rows``) to their ``neighbours`` nearest
    among ``base`` (rows ``base_rows``), searched exactly."""
    count = min(neighbours + 1, len(base))  # one more: a query among the base finds itself first
    cosines, found = faiss.knn(np.ascontiguousarray(queries, np.float32), np.ascontiguousarray(base, np.float32),
                               count, metric=faiss.METRIC_INNER_PRODUCT)
    return found_edges(query_rows, np.where(found >= 0, np.asarray(base_rows, np.int64)[found], -1), cosines, floor)


def joined(parts: list[Edges]) -> Edges:
    """The edges of several searches as one set of columns."""
    if not parts:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    return tuple(np.concatenate(column) for column in zip(*parts))
