"""Re-cluster a recognition service's whole history of unknown sightings (merging identities that
drifted together, splitting ones that grew together wrongly), keeping ids where clusters survive.

The clustering is the online rule's offline form (:mod:`facecore.identities`: average linkage at the
service's recognition threshold) and needs every sighting at once, so the Ray Data job carries the
history as one block to one worker, which computes the cluster labels there (not in the caller's
process); it holds an n x n similarity matrix, so a history of tens of thousands of sightings fits,
1M does not. The service's identity keeper then turns the labels into identities (it alone chooses ids),
the result is recorded in PostgreSQL, and the keeper reloaded from it.

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


@dataclass
class ReclusterResult:
    sightings: int
    changed: int
    identities: int
    seconds: float


def _cluster_block(batch: dict[str, np.ndarray], threshold: float) -> dict[str, np.ndarray]:
    from facecore.face_clusters import agglomerate

    return {"label": agglomerate(np.asarray(batch["data"], np.float32), threshold)}


def _cluster_labels(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """Average-linkage labels of ``vectors`` (cosine ``threshold``), computed on a Ray worker."""
    import ray

    if not len(vectors):
        return np.zeros(0, np.int64)
    dataset = ray.data.from_numpy(vectors).repartition(1).map_batches(
        _cluster_block, batch_size=None, batch_format="numpy", fn_kwargs={"threshold": threshold})
    return np.concatenate([batch["label"] for batch in dataset.iter_batches(batch_size=None, batch_format="numpy")])


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
        return await asyncio.to_thread(_cluster_labels, vectors, cosine_from_similarity(threshold))

    changed, identities = await unknown.recluster(cluster)
    return ReclusterResult(counted, changed, identities, time.perf_counter() - started)
