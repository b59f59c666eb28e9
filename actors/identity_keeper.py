"""IdentityKeeper: the one place where a service's unknown faces are assigned to identities.

A named, detached actor per recognition service holds the identities' mean embeddings
(:class:`actors.indexed_identities.IndexedIdentities`: searched through an index once they are
many) and chooses every identity id, so concurrent requests of every ingress replica assign
sightings one at a time. The control plane (``store.sightings``) is the
durable record: a keeper that (re)starts is empty and refuses work with :class:`KeeperNotLoaded`
until it is loaded from there (``actors.unknown_faces`` does both). A call cut off by the keeper's
death is retried on the restarted keeper, which refuses it until loaded: an assignment lost with the
old process is never counted twice.

The service's threshold can change at any time (the admin API): every assignment brings the threshold
in force when its request was made, as every request of the platform reads its service's settings
anew; the keeper's own (given at its creation) only stands until the first assignment.
"""

from __future__ import annotations

import numpy as np
import ray

from actors.indexed_identities import IndexedIdentities
from facecore.models import SFACE

NAMESPACE = "faces"


class KeeperNotLoaded(Exception):
    """The keeper (re)started and holds no identities yet: load it from the control plane first."""


class IdentityKeeper:
    def __init__(self, threshold: float, min_quality: float):
        self.threshold = threshold
        self.min_quality = min_quality
        self._online: IndexedIdentities | None = None

    def load(self, vectors: np.ndarray, identities: np.ndarray, next_id: int, ignored: list[int]) -> None:
        """Replace the state by the stored sightings (embeddings and identity ids) of the service."""
        online = IndexedIdentities(SFACE.embedding_dim, self.threshold, self.min_quality, next_id)
        online.rebuild(np.asarray(vectors, np.float32).reshape(-1, SFACE.embedding_dim),
                       np.asarray(identities, np.int64))
        online.next_id = max(online.next_id, next_id)
        online.ignored = set(ignored) & set(online.ids())
        self._online = online

    def _state(self) -> IndexedIdentities:
        if self._online is None:
            raise KeeperNotLoaded("the identity keeper is not loaded")
        return self._online

    def assign(self, vectors: np.ndarray, qualities: list[float], threshold: float) -> list[int]:
        """The identity each sighting joins or seeds (``facecore.identities.UNASSIGNED``: none), at
        cosine ``threshold`` (the service's now: it holds for the assignments after it too)."""
        online = self._state()
        self.threshold = online.threshold = threshold
        return [online.assign(vector, quality) for vector, quality in zip(vectors, qualities)]

    def adopt(self, vectors: np.ndarray, labels: np.ndarray, qualities: np.ndarray, previous: np.ndarray) -> list[int]:
        """A re-clustering's clusters become the identities, keeping ids where clusters survive (fresh
        ids chosen here, as every id); every sighting's new identity (``UNASSIGNED``: none)."""
        return self._state().adopt(vectors, labels, qualities, previous).tolist()

    def settle(self) -> bool:
        """Wait for the identities' index being built, if any; whether one is in use (benchmarks)."""
        return self._state().settle()

    def merge(self, keep: int, gone: int) -> None:
        self._state().merge(keep, gone)

    def split(self, identity: int, vectors: np.ndarray) -> int:
        return self._state().split(identity, vectors)

    def remove(self, identity: int) -> None:
        self._state().remove(identity)

    def ignore(self, identity: int) -> None:
        self._state().ignore(identity)


def keeper_name(service_id: int) -> str:
    return f"identity-keeper-s{int(service_id)}"


def identity_keeper(service_id: int, threshold: float, min_quality: float):
    """The service's keeper actor (created on first use; restarted by Ray if its process dies)."""
    return ray.remote(IdentityKeeper).options(
        name=keeper_name(service_id), namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
        max_restarts=-1, max_task_retries=-1, num_cpus=0, enable_task_events=False,
    ).remote(threshold, min_quality)
