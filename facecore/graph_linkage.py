"""Average-linkage clustering on a sparse similarity graph, in rounds of reciprocal nearest neighbours.

The graph's edges are face pairs with their cosine (the k nearest neighbours of every face:
:mod:`facecore.neighbour_graph`); a pair that is no edge counts as cosine 0, which is about what two
faces of different people score. Between two clusters the linkage is the sum of their edges divided
by the product of their sizes: with every pair an edge, exactly average linkage
(:mod:`facecore.face_clusters`).

Each round merges, at once, every pair of clusters that are each other's best partner with a linkage
of at least ``threshold`` (RAC, Sumengen et al. 2021); since average linkage is reducible, this gives
the same clusters as merging the single best pair at a time. A round is a few passes over the edges,
and merging relabels them and adds up parallel edges, so time and memory stay proportional to the
edges, ``O(n k)``, and the number of rounds is small (each one at least halves the clusters that
still have a partner above the threshold, or merges more).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import sparse

from facecore.face_clusters import labels_by_size
from facecore.neighbour_graph import NEIGHBOURS, neighbour_edges

log = logging.getLogger(__name__)


def graph_average_linkage(count: int, rows: np.ndarray, neighbours: np.ndarray, cosines: np.ndarray,
                          threshold: float) -> np.ndarray:
    """Cluster label (0..k-1, largest cluster first) of each of ``count`` faces, from edges
    ``(rows[i], neighbours[i], cosines[i])`` (one direction is enough; positive cosines only)."""
    if count == 0:
        return np.zeros(0, np.int64)
    if len(cosines) and float(np.min(cosines)) <= 0:
        raise ValueError("edges carry positive cosines (a missing edge counts as 0)")
    graph = sparse.csr_matrix((np.asarray(cosines, np.float64), (rows, neighbours)), shape=(count, count))
    graph = graph.maximum(graph.T).tocsr()
    graph.sum_duplicates()
    sizes = np.ones(count, np.float64)
    cluster_of = np.arange(count)
    rounds = 0
    while graph.nnz:
        partner, linkage = _best_partners(graph, sizes)
        clusters = np.arange(len(sizes))
        merging = (linkage >= threshold) & (partner[partner] == clusters) & (clusters < partner)
        if not merging.any():
            break
        rounds += 1
        target = clusters.copy()
        target[partner[merging]] = clusters[merging]
        _, renumbered = np.unique(target, return_inverse=True)
        graph = _contract(graph, renumbered)
        sizes = np.bincount(renumbered, weights=sizes)
        cluster_of = renumbered[cluster_of]
    log.debug("average linkage over %d faces: %d rounds, %d clusters", count, rounds, len(sizes))
    return labels_by_size(cluster_of)


def _best_partners(graph: sparse.csr_matrix, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster, its partner of highest linkage (lowest index on ties) and that linkage (-inf
    and itself for a cluster without edges)."""
    count = graph.shape[0]
    row_of = np.repeat(np.arange(count), np.diff(graph.indptr))
    linkage = graph.data / (sizes[row_of] * sizes[graph.indices])
    best = np.full(count, -np.inf)
    partner = np.arange(count)
    if not len(linkage):
        return partner, best
    starts = graph.indptr[:-1]
    nonempty = np.flatnonzero(np.diff(graph.indptr))
    best[nonempty] = np.maximum.reduceat(linkage, starts[nonempty])
    at_best = np.flatnonzero(linkage == best[row_of])
    first = np.unique(row_of[at_best], return_index=True)[1]  # edges are sorted by row, then column
    partner[row_of[at_best[first]]] = graph.indices[at_best[first]]
    return partner, best


def _contract(graph: sparse.csr_matrix, renumbered: np.ndarray) -> sparse.csr_matrix:
    """The graph of the merged clusters: edges relabelled, parallel ones added up, loops dropped."""
    edges = graph.tocoo()
    rows, columns = renumbered[edges.row], renumbered[edges.col]
    keep = rows != columns
    size = int(renumbered.max()) + 1
    merged = sparse.csr_matrix((edges.data[keep], (rows[keep], columns[keep])), shape=(size, size))
    merged.sum_duplicates()
    return merged


def cluster_faces(vectors: np.ndarray, threshold: float, neighbours: int = NEIGHBOURS) -> np.ndarray:
    """Average-linkage labels of unit-length ``vectors`` over their nearest-neighbour graph, all in
    this process (a job spreads the graph over workers: ``batch_jobs.recluster``)."""
    return graph_average_linkage(len(vectors), *neighbour_edges(vectors, neighbours), threshold)
