"""A service's identities whose best match is searched through an approximate index once they are many.

:class:`facecore.identities.OnlineIdentities` scores a new sighting against every identity's mean: one
pass over ``identities x 128`` floats, ~50 MB at 100k identities, too slow for a few milliseconds
per sighting. Here, from ``MIN_INDEXED`` identities on, candidates come from the platform's PQ
fast-scan index (:class:`faceindex.ann_index.AnnIndex`, built over a snapshot of the means) and are
re-scored exactly against the current means, together with every identity that changed since the
snapshot (joined by a sighting, merged, split, new): those are always scored exactly, so an index that
is behind never hides them. Every index is built in a background thread from a snapshot of the
means while assignments go on (scanning exactly until the first is ready), and installed by the next
call: when the identities first reach ``MIN_INDEXED``, after a full replacement (loading,
re-clustering), and when ``MAX_CHANGED`` identities have changed since the last snapshot.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor, wait

import numpy as np

from faceindex.ann_index import AnnIndex
from facecore.identities import UNASSIGNED, OnlineIdentities

log = logging.getLogger(__name__)

MIN_INDEXED = 20_000   # fewer identities are scanned exactly (under ~1 ms)
CANDIDATES = 512       # identities re-scored exactly per sighting (as faceindex's shards do)
MAX_CHANGED = 4096     # identities changed since the index's snapshot before a new one is built


class IndexedIdentities(OnlineIdentities):
    def __init__(self, dim: int, threshold: float, min_quality: float, next_id: int = 1):
        super().__init__(dim, threshold, min_quality, next_id)
        self._index: AnnIndex | None = None
        self._indexed_ids = np.zeros(0, np.int64)  # the identity of each of the index's positions
        self._changed: set[int] = set()  # identities changed since the index's snapshot
        self._changed_since_build: set[int] = set()  # ...and since the snapshot of the build under way
        self._build: Future | None = None
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="identity-index")

    @property
    def indexed(self) -> bool:
        return self._index is not None

    def best_match(self, vector: np.ndarray) -> tuple[int, float]:
        self._install_build()
        if self._index is None:
            return super().best_match(vector)
        vector = np.asarray(vector, np.float32)
        found = self._indexed_ids[self._index.positions(vector[None], CANDIDATES)[0]]
        rows = [self._rows[identity] for identity in (*found.tolist(), *self._changed) if identity in self._rows]
        if not rows:
            return UNASSIGNED, -np.inf
        rows = np.asarray(rows)
        scores = self._means[rows] @ vector
        best = int(np.argmax(scores))
        return int(self._ids[rows[best]]), float(scores[best])

    def rebuild(self, vectors: np.ndarray, identities: np.ndarray) -> None:
        super().rebuild(vectors, identities)
        self._build = None  # a build under way started from the replaced state: its index is dropped
        self._index, self._indexed_ids = None, np.zeros(0, np.int64)
        self._changed.clear()
        self._changed_since_build.clear()
        self._build_if_due()

    def settle(self) -> bool:
        """Wait for the index being built, if any, and install it; whether an index is in use."""
        if self._build is not None:
            wait([self._build])
            self._install_build()
        return self.indexed

    def _refresh(self, row: int) -> None:
        super()._refresh(row)
        identity = int(self._ids[row])
        self._changed.add(identity)
        self._changed_since_build.add(identity)
        self._build_if_due()

    def _build_if_due(self) -> None:
        if self._build is None and (len(self._changed) >= MAX_CHANGED
                                    or (self._index is None and len(self) >= MIN_INDEXED)):
            self._changed_since_build.clear()
            self._build = self._builder.submit(self._built, *self._snapshot())

    def _snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        size = len(self)
        return self._means[:size].copy(), self._ids[:size].copy()

    @staticmethod
    def _built(means: np.ndarray, ids: np.ndarray) -> tuple[AnnIndex, np.ndarray]:
        return AnnIndex.build(means, [str(identity) for identity in ids.tolist()]), ids  # an index's ids are strings

    def _install_build(self) -> None:
        """Install the index a background build finished: what changed since its snapshot stays
        scored exactly."""
        if self._build is None or not self._build.done():
            return
        build, self._build = self._build, None
        try:
            self._index, self._indexed_ids = build.result()
        except Exception:  # an index is only an accelerator: keep the old one (or exact scans)
            log.exception("building the identities' index failed")
            return
        self._changed, self._changed_since_build = self._changed_since_build, set()
