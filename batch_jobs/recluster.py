"""Re-cluster a recognition service's whole history of unknown sightings (merging identities that
drifted together, splitting ones that grew together wrongly), keeping ids where clusters survive.

The clustering is the online rule's offline form (average linkage at the service's recognition
threshold) over the sightings' k-nearest-neighbour graph (:mod:`facecore.graph_linkage`), so memory
grows with the sightings, not their square. One task chooses the graph's search
(:func:`facecore.neighbour_graph.graph_search`: exact for a small history; above, an HNSW graph of
the history, built there); the Ray Data job then computes the graph's edges in chunks of query
sightings (searched against the whole history, put once in the object store, or through the HNSW
graph), on as many workers as the cluster gives; one task then links the graph's edges into cluster
labels (not the caller's process). The service's identity keeper turns the labels into identities
(it alone chooses ids), the result is recorded in PostgreSQL, and the keeper reloaded from it.

    faces unknowns recluster --service NAME
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from faces_settings import Settings
from store.control import ControlPlane, Service

# Ray and the actors are imported where used, so that importing this module stays cheap.

UNITS_PER_TASK = 4  # units of the graph's search (8,192 query sightings each) per Ray Data batch


@dataclass
class ReclusterResult:
    sightings: int
    changed: int
    identities: int
    seconds: float


def _edges_of_units(batch: dict[str, np.ndarray], history: list, search: list) -> dict[str, np.ndarray]:
    """The nearest-neighbour edges found by the search's units ``batch["unit"]``."""
    import ray

    from facecore.knn_edges import joined
    from facecore.neighbour_graph import EDGE_FLOOR, NEIGHBOURS

    vectors, search = ray.get(history[0]), ray.get(search[0])
    parts = [search.edges(vectors, int(unit), NEIGHBOURS, EDGE_FLOOR) for unit in batch["unit"]]
    return dict(zip(("row", "neighbour", "cosine"), joined(parts)))


def _search_of(vectors: np.ndarray, approximate: bool | None):
    """The graph's search and its number of units (the caller needs only the number)."""
    from facecore.neighbour_graph import graph_search

    search = graph_search(vectors, approximate)
    return search, search.units


def _link(vectors: np.ndarray, edges, threshold: float) -> np.ndarray:
    from facecore.graph_linkage import graph_average_linkage

    blocks = list(edges.iter_batches(batch_size=None, batch_format="numpy"))
    row, neighbour, cosine = (np.concatenate([block[name] for block in blocks]) if blocks else np.zeros(0)
                              for name in ("row", "neighbour", "cosine"))
    return graph_average_linkage(vectors, row.astype(np.int64), neighbour.astype(np.int64), cosine, threshold)


def cluster_labels(vectors: np.ndarray, threshold: float, approximate: bool | None = None) -> np.ndarray:
    """Average-linkage labels of unit-length ``vectors`` (cosine ``threshold``), computed by Ray workers
    (the graph through HNSW above a size, or as ``approximate`` says: ``graph_search``)."""
    import ray

    if not len(vectors):
        return np.zeros(0, np.int64)
    history = ray.put(np.ascontiguousarray(vectors, np.float32))
    search, units = ray.remote(num_returns=2)(_search_of).remote(history, approximate)
    units = np.arange(ray.get(units))
    edges = ray.data.from_numpy(units).rename_columns({"data": "unit"}).map_batches(
        _edges_of_units, batch_size=UNITS_PER_TASK, batch_format="numpy",
        fn_kwargs={"history": [history], "search": [search]},
    ).materialize()
    return ray.get(ray.remote(_link).remote(history, edges, threshold))


async def recluster(settings: Settings, control: ControlPlane, service: Service) -> ReclusterResult:
    """Re-cluster ``service``'s sightings of no subject; see the module docstring."""
    from actors.unknown_faces import UnknownFaces
    from facecore.similarity import cosine_from_similarity
    from store.sightings import SightingStore

    started = time.perf_counter()
    threshold = settings.recognition_threshold_of(service)
    unknown = UnknownFaces.open(service, SightingStore(control.pool), settings, threshold)
    counted = 0

    async def cluster(vectors: np.ndarray) -> np.ndarray:
        nonlocal counted
        counted = len(vectors)
        return await asyncio.to_thread(cluster_labels, vectors, cosine_from_similarity(threshold))

    changed, identities = await unknown.recluster(cluster)
    return ReclusterResult(counted, changed, identities, time.perf_counter() - started)
