"""Re-cluster a recognition service's whole history of unknown sightings (merging identities that
drifted together, splitting ones that grew together wrongly), keeping ids where clusters survive.

The clustering is the online rule's offline form (average linkage at the service's recognition
threshold) over the sightings' k-nearest-neighbour graph (:mod:`facecore.graph_linkage`), so memory
grows with the sightings, not their square. The Ray Data job computes the graph in chunks of query
sightings, each searched exactly against the whole history (put once in the object store), on as
many workers as the cluster gives; one task then links the graph's edges into cluster labels (not the
caller's process). The service's identity keeper turns the labels into identities (it alone chooses
ids), the result is recorded in PostgreSQL, and the keeper reloaded from it.

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

CHUNKS_PER_TASK = 4  # query chunks (facecore.neighbour_graph.QUERY_CHUNK rows each) per Ray Data batch


@dataclass
class ReclusterResult:
    sightings: int
    changed: int
    identities: int
    seconds: float


def _edges_of_chunks(batch: dict[str, np.ndarray], history: list) -> dict[str, np.ndarray]:
    """The nearest-neighbour edges of the query chunks starting at ``batch["start"]``."""
    import ray

    from facecore.neighbour_graph import QUERY_CHUNK, chunk_edges

    vectors = ray.get(history[0])
    parts = [chunk_edges(vectors[start:start + QUERY_CHUNK], int(start), vectors) for start in batch["start"]]
    return {name: np.concatenate(column) for name, column in zip(("row", "neighbour", "cosine"), zip(*parts))}


def _link(vectors: np.ndarray, edges, threshold: float) -> np.ndarray:
    from facecore.graph_linkage import graph_average_linkage

    blocks = list(edges.iter_batches(batch_size=None, batch_format="numpy"))
    row, neighbour, cosine = (np.concatenate([block[name] for block in blocks]) if blocks else np.zeros(0)
                              for name in ("row", "neighbour", "cosine"))
    return graph_average_linkage(vectors, row.astype(np.int64), neighbour.astype(np.int64), cosine, threshold)


def cluster_labels(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """Average-linkage labels of unit-length ``vectors`` (cosine ``threshold``), computed by Ray workers."""
    import ray

    from facecore.neighbour_graph import QUERY_CHUNK

    if not len(vectors):
        return np.zeros(0, np.int64)
    history = ray.put(np.ascontiguousarray(vectors, np.float32))
    starts = np.arange(0, len(vectors), QUERY_CHUNK)
    edges = ray.data.from_numpy(starts).rename_columns({"data": "start"}).map_batches(
        _edges_of_chunks, batch_size=CHUNKS_PER_TASK, batch_format="numpy", fn_kwargs={"history": [history]},
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
