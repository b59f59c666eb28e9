"""The k-nearest-neighbour graph of face embeddings: exact for a small history, through HNSW above.

The graph's edges ``(row, neighbour, cosine)`` link each face to its ``NEIGHBOURS`` nearest, those
with cosine above ``floor`` only; it takes ``O(n k)`` memory. The search is cut into units of work,
chunks of ``QUERY_CHUNK`` query faces (computed in this process by :func:`neighbour_edges`, or spread
over Ray workers by ``batch_jobs.recluster``):

- up to ``EXACT_UP_TO`` faces, :class:`ExactSearch`: each chunk searched exactly against all faces,
  ``O(n^2 d)`` multiply-adds, no neighbour missed;
- above, :class:`facecore.hnsw_search.HnswSearch`: each face searched through an HNSW graph of all
  the faces, about ``O(n log n)`` cosines, some true neighbours missed (:func:`neighbour_recall`,
  reported by ``bench/clustering.py``: on its synthetic million-sighting history 43% of the exact
  lists' neighbours were found, and the clusters' pairwise F1 was 0.975, against 1.0 exact at 100,000).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facecore.hnsw_search import HnswSearch
from facecore.knn_edges import QUERY_CHUNK, Edges, block_edges, joined

NEIGHBOURS = 32        # nearest neighbours per face kept as edges
EDGE_FLOOR = 0.0       # neighbours at or below this cosine are no edges (counted as 0 by the linkage)
EXACT_UP_TO = 200_000  # larger histories are searched through an HNSW graph (exact: hours at 1M)


@dataclass(frozen=True)
class ExactSearch:
    """Every chunk of ``chunk`` query faces searched against all the faces."""

    faces: int
    chunk: int = QUERY_CHUNK

    @property
    def units(self) -> int:
        return -(-self.faces // self.chunk)

    def edges(self, vectors: np.ndarray, unit: int, neighbours: int, floor: float) -> Edges:
        rows = np.arange(unit * self.chunk, min(self.faces, (unit + 1) * self.chunk))
        return block_edges(vectors[rows[0]:rows[-1] + 1], rows, vectors, np.arange(self.faces), neighbours, floor)


def graph_search(vectors: np.ndarray, approximate: bool | None = None) -> ExactSearch | HnswSearch:
    """The search that computes the graph of ``vectors``: through HNSW above ``EXACT_UP_TO`` faces (or
    as ``approximate`` says)."""
    if approximate is None:
        approximate = len(vectors) > EXACT_UP_TO
    return HnswSearch.build(vectors) if approximate and len(vectors) else ExactSearch(len(vectors))


def neighbour_edges(vectors: np.ndarray, neighbours: int = NEIGHBOURS, floor: float = EDGE_FLOOR,
                    search: ExactSearch | HnswSearch | None = None) -> Edges:
    """The edges of the whole graph, unit after unit in this process (``search``: chosen by size)."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    search = search or graph_search(vectors)
    return joined([search.edges(vectors, unit, neighbours, floor) for unit in range(search.units)])


def neighbour_recall(vectors: np.ndarray, edges: Edges, rows: np.ndarray, neighbours: int = NEIGHBOURS,
                     min_cosine: float = EDGE_FLOOR) -> float:
    """The share of the exact graph's edges from ``rows`` (those above ``min_cosine``) that ``edges``
    holds: how many true neighbours an approximate search found, measured on a sample of faces."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    rows = np.unique(rows)
    exact_rows, exact_neighbours, _ = block_edges(vectors[rows], rows, vectors, np.arange(len(vectors)),
                                                  neighbours, min_cosine)
    found_rows, found_neighbours, _ = edges
    sampled = np.isin(found_rows, rows)
    found = found_rows[sampled].astype(np.int64) * len(vectors) + found_neighbours[sampled]
    exact = exact_rows.astype(np.int64) * len(vectors) + exact_neighbours
    return float(np.isin(exact, found).mean()) if len(exact) else 1.0
