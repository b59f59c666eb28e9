"""Average-linkage clustering that scales: exact linkages, looked up only along a sparse graph.

With unit-length embeddings, the average cosine between the faces of two clusters is the dot product
of their sums divided by the product of their sizes: the linkage of any two clusters is exact from
one ``d``-vector per cluster, without the pairs' cosines. What does not scale is looking at every pair
of clusters; here only pairs joined by an edge of a sparse graph are (the k nearest neighbours of
every face: :mod:`facecore.neighbour_graph`), and merging two clusters joins their edges. Two
clusters of one person share an edge unless none of their faces is among the other's nearest
neighbours; a person seen thousands of times still ends as one cluster, since the edges inside it
link its parts as they grow. With every pair an edge it is exactly average linkage
(:mod:`facecore.face_clusters`).

Each round merges, at once, every pair of clusters that are each other's best partner with a linkage
of at least ``threshold`` (RAC, Sumengen et al. 2021; average linkage is reducible, so on the
complete graph this gives the same clusters as merging the single best pair at a time). Linkages are
computed again only for the edges of clusters that merged. Memory: the sums (the size of the
embeddings) and the edges, ``O(n k)``; a round costs a pass over the edges.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import sparse

from facecore.face_clusters import labels_by_size
from facecore.neighbour_graph import NEIGHBOURS, neighbour_edges

log = logging.getLogger(__name__)

LINKAGE_CHUNK = 65_536  # edges whose linkage is computed at once (two gathers of 32 MB at 128-d)


def graph_average_linkage(vectors: np.ndarray, rows: np.ndarray, neighbours: np.ndarray, cosines: np.ndarray,
                          threshold: float) -> np.ndarray:
    """Cluster label (0..k-1, largest cluster first) of each of the unit-length ``vectors``, merging
    along the edges ``(rows[i], neighbours[i], cosines[i])`` (either direction is enough; positive
    cosines: others can join no two clusters at a positive threshold and are left out)."""
    count = len(vectors)
    if count == 0:
        return np.zeros(0, np.int64)
    graph = sparse.csr_matrix((np.asarray(cosines, np.float64), (rows, neighbours)), shape=(count, count))
    graph = graph.maximum(graph.T).tocsr()  # a cosine is the same both ways: either edge holds it
    graph.sum_duplicates()
    sums = np.array(vectors, np.float32)
    sizes = np.ones(count, np.float64)
    cluster_of = np.arange(count, dtype=np.int32)
    rounds = 0
    while graph.nnz:
        partner, best = _best_partners(graph)
        clusters = np.arange(len(sizes))
        merging = (best >= threshold) & (partner[partner] == clusters) & (clusters < partner)
        if not merging.any():
            break
        rounds += 1
        keep, gone = clusters[merging], partner[merging]
        target = clusters.copy()
        target[gone] = keep
        kept, renumbered = np.unique(target, return_inverse=True)
        renumbered = renumbered.astype(np.int32)  # halves the relabelled edges' memory
        sums[keep] += sums[gone]
        sizes[keep] += sizes[gone]
        sums, sizes = sums[kept], sizes[kept]
        merged = np.zeros(len(kept), bool)
        merged[renumbered[keep]] = True
        graph = _contract(graph, renumbered)
        _relink(graph, merged, sums, sizes)
        cluster_of = renumbered[cluster_of]
    log.debug("average linkage over %d faces: %d rounds, %d clusters", count, rounds, len(sizes))
    return labels_by_size(cluster_of)


def _best_partners(graph: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster, its partner of highest linkage (lowest index on ties) and that linkage (-inf
    and itself for a cluster without edges)."""
    count = graph.shape[0]
    best = np.full(count, -np.inf)
    partner = np.arange(count)
    row_of = np.repeat(np.arange(count, dtype=np.int32), np.diff(graph.indptr))
    nonempty = np.flatnonzero(np.diff(graph.indptr))
    best[nonempty] = np.maximum.reduceat(graph.data, graph.indptr[nonempty])
    at_best = np.flatnonzero(graph.data == best[row_of])
    first = np.unique(row_of[at_best], return_index=True)[1]  # edges are sorted by row, then column
    partner[row_of[at_best[first]]] = graph.indices[at_best[first]]
    return partner, best


def _contract(graph: sparse.csr_matrix, renumbered: np.ndarray) -> sparse.csr_matrix:
    """The graph of the merged clusters: edges relabelled, parallel ones joined, loops dropped (the
    values of joined edges are meaningless until :func:`_relink`)."""
    edges = graph.tocoo()
    rows, columns = renumbered[edges.row], renumbered[edges.col]
    keep = rows != columns
    size = int(renumbered.max()) + 1
    contracted = sparse.csr_matrix((edges.data[keep], (rows[keep], columns[keep])), shape=(size, size))
    contracted.sum_duplicates()
    return contracted


def _relink(graph: sparse.csr_matrix, merged: np.ndarray, sums: np.ndarray, sizes: np.ndarray) -> None:
    """Compute the exact linkage of every edge of a cluster that just merged."""
    row_of = np.repeat(np.arange(graph.shape[0], dtype=np.int32), np.diff(graph.indptr))
    stale = np.flatnonzero(merged[row_of] | merged[graph.indices])
    for start in range(0, len(stale), LINKAGE_CHUNK):
        edges = stale[start:start + LINKAGE_CHUNK]
        a, b = row_of[edges], graph.indices[edges]
        dots = np.einsum("ij,ij->i", sums[a], sums[b], dtype=np.float64)
        graph.data[edges] = dots / (sizes[a] * sizes[b])


def cluster_faces(vectors: np.ndarray, threshold: float, neighbours: int = NEIGHBOURS) -> np.ndarray:
    """Average-linkage labels of unit-length ``vectors`` over their nearest-neighbour graph, all in
    this process (a job spreads the graph over workers: ``batch_jobs.recluster``)."""
    return graph_average_linkage(vectors, *neighbour_edges(vectors, neighbours), threshold)
