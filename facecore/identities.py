"""Unknown faces grouped online into identities with persistent ids, and re-clustered keeping them.

The rule is the offline one (:mod:`facecore.face_clusters`, average linkage at a cosine threshold)
applied one face at a time. The average cosine between a new face ``x`` and an identity's sightings
equals ``x`` dotted with their mean embedding, so:

- **online**: a sighting joins the identity whose mean is most similar, if that reaches the
  threshold (exactly average linkage between the face and each identity). Otherwise it seeds a new
  identity when its quality reaches ``min_quality``; a poorer shot seeds nothing and stays
  unassigned (it may join an identity at the next re-clustering). One matrix product over the
  identities' means per sighting: the cost grows with the number of identities, not of sightings.
- **re-clustering**: average linkage over the nearest-neighbour graph of all the sightings
  (:mod:`facecore.graph_linkage`; memory grows with the sightings, not their square), merging
  identities that drifted together and splitting ones that should not have grown together; every
  new cluster keeps the id held
  by most of its sightings, the largest overlaps choosing first and each old id going to one cluster
  only; other clusters get fresh ids, or stay unassigned when none of their sightings may seed.

Ignored identities keep absorbing their sightings (so the same stranger does not come back as a new
identity) and keep their flag across re-clustering while their id survives.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from facecore.graph_linkage import cluster_faces

UNASSIGNED = -1
_INITIAL_CAPACITY = 1024


class OnlineIdentities:
    """The identities of one service: per identity the sum and mean of its sightings' embeddings."""

    def __init__(self, dim: int, threshold: float, min_quality: float, next_id: int = 1):
        self.threshold = threshold
        self.min_quality = min_quality
        self.next_id = next_id
        self._sums = np.zeros((_INITIAL_CAPACITY, dim), np.float32)
        self._means = np.zeros((_INITIAL_CAPACITY, dim), np.float32)
        self._counts = np.zeros(_INITIAL_CAPACITY, np.int64)
        self._ids = np.zeros(_INITIAL_CAPACITY, np.int64)
        self._rows: dict[int, int] = {}
        self.ignored: set[int] = set()

    def __len__(self) -> int:
        return len(self._rows)

    def count(self, identity: int) -> int:
        return int(self._counts[self._row(identity)])

    def ids(self) -> list[int]:
        return sorted(self._rows)

    def best_match(self, vector: np.ndarray) -> tuple[int, float]:
        """The identity whose sightings average the highest cosine with ``vector``, and that cosine
        (``UNASSIGNED`` and -inf without identities)."""
        if not self._rows:
            return UNASSIGNED, -np.inf
        scores = self._means[:len(self._rows)] @ np.asarray(vector, np.float32)
        row = int(np.argmax(scores))
        return int(self._ids[row]), float(scores[row])

    def assign(self, vector: np.ndarray, quality: float) -> int:
        """The identity a new sighting joins (or seeds); ``UNASSIGNED`` for a poor shot alike to none."""
        identity, cosine = self.best_match(vector)
        if cosine >= self.threshold:
            self._add(self._row(identity), vector)
            return identity
        if quality < self.min_quality:
            return UNASSIGNED
        identity = self._new_identity()
        self._add(self._rows[identity], vector)
        return identity

    def merge(self, keep: int, gone: int) -> None:
        """Identity ``gone``'s sightings join ``keep``; ``gone`` no longer exists."""
        if keep == gone:
            raise ValueError("an identity cannot be merged with itself")
        kept, removed = self._row(keep), self._row(gone)
        self._sums[kept] += self._sums[removed]
        self._counts[kept] += self._counts[removed]
        self._refresh(kept)
        self._remove(gone)

    def split(self, identity: int, vectors: np.ndarray) -> int:
        """Move the sightings with embeddings ``vectors`` out of ``identity`` into a new identity."""
        row = self._row(identity)
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        if not 0 < len(vectors) < self._counts[row]:
            raise ValueError("a split moves some of an identity's sightings, not none or all")
        self._sums[row] -= vectors.sum(axis=0)
        self._counts[row] -= len(vectors)
        self._refresh(row)
        new = self._new_identity()
        for vector in vectors:
            self._add(self._rows[new], vector)
        return new

    def remove(self, identity: int) -> None:
        """Forget ``identity`` (promoted to a subject, or deleted)."""
        self._row(identity)
        self._remove(identity)

    def ignore(self, identity: int) -> None:
        self._row(identity)
        self.ignored.add(identity)

    def rebuild(self, vectors: np.ndarray, identities: np.ndarray) -> None:
        """Replace every identity by those of sightings ``vectors`` labelled ``identities``."""
        labelled = identities != UNASSIGNED
        ids, inverse, counts = np.unique(identities[labelled], return_inverse=True, return_counts=True)
        order = np.argsort(inverse, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        sums = (np.add.reduceat(np.asarray(vectors, np.float32)[labelled][order], starts)
                if len(ids) else np.zeros((0, self._sums.shape[1]), np.float32))
        while len(self._ids) < len(ids):
            self._grow()
        size = len(ids)
        self._sums[:size], self._counts[:size], self._ids[:size] = sums, counts, ids
        self._means[:size] = sums / counts[:, None]
        self._rows = {int(identity): row for row, identity in enumerate(ids)}
        self.next_id = max(self.next_id, int(ids.max(initial=0)) + 1)
        self.ignored &= set(self._rows)

    def recluster(self, vectors: np.ndarray, qualities: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """Re-cluster all unknown sightings (embeddings, qualities, current identity or ``UNASSIGNED``),
        keep ids where clusters survive, rebuild, and return every sighting's new identity."""
        vectors = np.asarray(vectors, np.float32)
        labels = cluster_faces(vectors, self.threshold) if len(vectors) else np.zeros(0, np.int64)
        return self.adopt(vectors, labels, qualities, previous)

    def adopt(self, vectors: np.ndarray, labels: np.ndarray, qualities: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """Make clusters ``labels`` of the sightings (average linkage at the threshold, computed
        elsewhere by a job or by :meth:`recluster`) the identities, keeping ids where clusters survive;
        rebuild, and return every sighting's new identity."""
        vectors = np.asarray(vectors, np.float32)
        overlaps = Counter((int(label), int(old)) for label, old in zip(labels, previous) if old != UNASSIGNED)
        kept: dict[int, int] = {}
        taken: set[int] = set()
        for (label, old), _ in sorted(overlaps.items(), key=lambda item: (-item[1], item[0])):
            if label not in kept and old not in taken:
                kept[label] = old
                taken.add(old)
        clusters, member_of = np.unique(labels, return_inverse=True)  # grouped once, not scanned per cluster
        may_seed = np.bincount(member_of, np.asarray(qualities) >= self.min_quality, len(clusters)) > 0
        identity_of = np.full(len(clusters), UNASSIGNED, np.int64)
        for position, label in enumerate(clusters.tolist()):
            if label in kept:
                identity_of[position] = kept[label]
            elif may_seed[position]:
                identity_of[position] = self._fresh_id()
        result = identity_of[member_of]
        self.rebuild(vectors, result)
        return result

    def _row(self, identity: int) -> int:
        try:
            return self._rows[identity]
        except KeyError:
            raise KeyError(f"no identity {identity}") from None

    def _fresh_id(self) -> int:
        identity = self.next_id
        self.next_id += 1
        return identity

    def _new_identity(self) -> int:
        identity = self._fresh_id()
        self._place(identity)
        return identity

    def _place(self, identity: int) -> int:
        row = len(self._rows)
        if row == len(self._ids):
            self._grow()
        self._rows[identity] = row
        self._ids[row] = identity
        self._sums[row] = 0
        self._counts[row] = 0
        return row

    def _grow(self) -> None:
        size = 2 * len(self._ids)
        for name in ("_sums", "_means"):
            old = getattr(self, name)
            grown = np.zeros((size, old.shape[1]), np.float32)
            grown[:len(old)] = old
            setattr(self, name, grown)
        for name in ("_counts", "_ids"):
            old = getattr(self, name)
            grown = np.zeros(size, np.int64)
            grown[:len(old)] = old
            setattr(self, name, grown)

    def _add(self, row: int, vector: np.ndarray) -> None:
        self._sums[row] += vector
        self._counts[row] += 1
        self._refresh(row)

    def _refresh(self, row: int) -> None:
        self._means[row] = self._sums[row] / max(int(self._counts[row]), 1)

    def _remove(self, identity: int) -> None:
        """Drop ``identity``'s row, moving the last row into its place."""
        row, last = self._rows.pop(identity), len(self._rows)
        self.ignored.discard(identity)
        if row != last:
            moved = int(self._ids[last])
            for array in (self._sums, self._means, self._counts, self._ids):
                array[row] = array[last]
            self._rows[moved] = row
