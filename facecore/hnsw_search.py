"""The nearest neighbours of every face of a large history, through a navigable small-world graph.

Exact search of every face against every face costs ``n^2 d`` multiply-adds (1.3e14 at a million
128-d faces). Here the faces are put in a faiss HNSW index (``LINKS`` links per face, built with a
beam of ``BUILD_BEAM``), and each face's neighbours are searched through it with a beam of
``SEARCH_BEAM``: about ``n log n`` cosines in all, each exact (the index holds the float32 vectors).

Why a graph, not cells: two sightings of one person average cosine ~0.66 and most of a face's
variation is spread over all dimensions, so partitions by k-means put them in far-apart cells: on
the synthetic 100,000-sighting history (``bench/clustering.py``) an inverted file probing 2.5% of
its cells found 76% of the same-person neighbours (84% after a round of neighbours' neighbours),
where this graph finds 99%, its cost growing as ``n log n`` (at a million, with these
settings, far fewer: :mod:`facecore.neighbour_graph`). A person a search misses from one face
is still joined by the edges found from the others (the linkage reads each edge both ways).

Memory: the vectors again, plus ``2 x LINKS`` int32 links per face (together about 650 MB at a
million). The index travels to other processes serialized (``pickle``: faiss's own format).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from facecore.faiss_runtime import faiss
from facecore.knn_edges import QUERY_CHUNK, Edges, found_edges

log = logging.getLogger(__name__)

LINKS = 16          # HNSW's M: links per face (twice as many on the base layer)
BUILD_BEAM = 40     # efConstruction
SEARCH_BEAM = 64    # efSearch (at least the neighbours asked for)


class HnswSearch:
    def __init__(self, index: faiss.IndexHNSWFlat, chunk: int = QUERY_CHUNK):
        self.index = index
        self.chunk = chunk

    @classmethod
    def build(cls, vectors: np.ndarray, links: int = LINKS, beam: int = BUILD_BEAM) -> "HnswSearch":
        """The index over the unit-length ``vectors`` (their row numbers are its ids)."""
        started = time.perf_counter()
        index = faiss.IndexHNSWFlat(vectors.shape[1], links, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = beam
        index.add(np.ascontiguousarray(vectors, np.float32))
        log.info("built an HNSW graph over %d faces in %.1f s", len(vectors), time.perf_counter() - started)
        return cls(index)

    @property
    def units(self) -> int:
        """Units of work: chunks of ``chunk`` query faces (searched by :meth:`edges`)."""
        return -(-int(self.index.ntotal) // self.chunk)

    def edges(self, vectors: np.ndarray, unit: int, neighbours: int, floor: float) -> Edges:
        """The edges from the faces of chunk ``unit`` to the ``neighbours`` nearest found for each."""
        rows = np.arange(unit * self.chunk, min(int(self.index.ntotal), (unit + 1) * self.chunk))
        count = min(neighbours + 1, int(self.index.ntotal))  # one more: a face finds itself
        parameters = faiss.SearchParametersHNSW(efSearch=max(SEARCH_BEAM, count))
        cosines, found = self.index.search(np.ascontiguousarray(vectors[rows], np.float32), count,
                                           params=parameters)
        return found_edges(rows, found, cosines, floor)

    def __reduce__(self):
        return _loaded, (faiss.serialize_index(self.index), self.chunk)


def _loaded(serialized: np.ndarray, chunk: int) -> HnswSearch:
    return HnswSearch(faiss.deserialize_index(serialized), chunk)
