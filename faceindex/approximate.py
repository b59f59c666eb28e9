"""The life cycle of a shard's approximate index: when it is built, installed, saved, restored and
searched beside the faces added since (the tail).

A build runs in a background thread from a snapshot of the rows (a view, not a copy), while searches
go on; faces added meanwhile stay in the exactly searched tail, faces deleted meanwhile are skipped at
query time. The built index is saved under ``SearchConfig.index_dir`` (a folder or an object-store
URI) and loaded by a restarted shard, on whichever node, instead of being built again.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

import numpy as np

from faceindex.ann_index import AnnIndex
from faceindex.config import SearchConfig
from faceindex.exact import CANDIDATE_FACTOR, FaceHit, SubjectHit, top_rows
from faceindex.packed_ids import PackedIds
from faceindex.rows import ShardRows
from store.object_storage import delete_uri, join_uri

log = logging.getLogger(__name__)

INSTALL_ATTEMPTS = 3       # a build maps its faces to rows that moved meanwhile at most this often unlocked
CANDIDATES_PER_INDEXED = 5000  # approximate search re-scores at least one face in this many


class ApproximateSearch:
    """The approximate index of one shard's ``rows``, guarded by the shard's ``lock``."""

    def __init__(self, rows: ShardRows, lock: threading.RLock, search: SearchConfig, table_name: str,
                 on_device: bool, saves: bool = True):
        self.rows = rows
        self.lock = lock
        self.search = search
        self.table_name = table_name
        self.on_device = on_device  # a shard searching on a GPU builds no approximate index of its own
        self.saves = saves  # a read replica loads the primary's saved index, and saves or removes none
        self.building = threading.Lock()
        self.clear()

    def clear(self) -> None:
        """No index (the rows were cleared)."""
        self.index: AnnIndex | None = None
        self.tail: dict[str, None] = {}  # ids added since the index's snapshot
        self.tail_rows: np.ndarray | None = None  # their rows, cached between writes

    def removed(self, face_ids) -> None:
        """Faces deleted (the remaining rows moved): they leave the tail, which holds live faces only
        (a shard with no index yet, or add and delete churn between builds, kept every id ever added)."""
        for face_id in face_ids:
            self.tail.pop(face_id, None)
        self.tail_rows = None

    def added(self, face_ids) -> None:
        """Faces added or replaced: searched exactly beside the index until the next build."""
        self.tail.update(dict.fromkeys(face_ids))
        self.tail_rows = None

    def in_use(self) -> bool:
        return self.index is not None and self.search.mode != "exact"

    def unindexed(self) -> int:
        return len(self.tail) if self.index is not None else self.rows.n

    def holds_deleted(self) -> bool:
        """Whether the index still holds the codes of faces deleted since it was built."""
        return self.rows.index_rows is not None and bool((self.rows.index_rows < 0).any())

    def memory_bytes(self) -> int:
        return (self.index.memory_bytes() if self.index is not None else 0) + sys.getsizeof(self.tail)

    def stats(self) -> dict:
        index = self.index
        return {"search": "ann" if index is not None and self.search.mode != "exact" else "exact",
                "indexed_faces": len(index) if index is not None else 0, "unindexed_faces": self.unindexed(),
                "index_parts": len(index.parts) if index is not None else 0,
                "last_build_seconds": index.build_seconds if index is not None else None}

    # ------------------------------------------------------------------------------ searching

    def scores(self, matrix: np.ndarray, wanted: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: candidate rows (index candidates plus the unindexed tail) and exact cosines."""
        rows = self.rows
        count = max(self.search.candidates, len(self.index) // CANDIDATES_PER_INDEXED, 4 * wanted)
        if self.tail_rows is None:
            self.tail_rows = rows.rows_now(list(self.tail))
        scored = []
        for query, positions in zip(matrix, self.index.positions(matrix, count)):
            candidates = np.unique(np.concatenate([rows.index_rows[positions], self.tail_rows]))
            candidates = candidates[candidates >= 0]  # deleted since the build
            scored.append((candidates, rows.vectors[candidates] @ query))
        return scored

    def best_subjects(self, matrix: np.ndarray, wanted: int) -> list[list[SubjectHit]]:
        """Per query, the best face of each of the ``wanted`` best subjects among the candidates."""
        rows, results = self.rows, []
        for candidates, scores in self.scores(matrix, CANDIDATE_FACTOR * wanted):
            order = np.argsort(-scores, kind="stable")
            _, first = np.unique(rows.codes[candidates[order]], return_index=True)
            best = order[np.sort(first)[:wanted]]
            results.append([(rows.subject(candidates[i]), float(scores[i]), rows.ids[candidates[i]]) for i in best])
        return results

    def best_faces(self, matrix: np.ndarray, k: int) -> list[list[FaceHit]]:
        """Per query, the top-``k`` faces among the candidates."""
        rows, results = self.rows, []
        for candidates, scores in self.scores(matrix, k):
            results.append([(rows.ids[candidates[i]], rows.subject(candidates[i]), float(scores[i]))
                            for i in top_rows(scores, k)])
        return results

    # ------------------------------------------------------------------------------ life cycle

    def path(self) -> str | None:
        """Where the saved index lives: a local path or an object-store URI (``SearchConfig.index_dir``)."""
        return join_uri(self.search.index_dir, f"{self.table_name}.ivf.npz") if self.search.index_dir else None

    def forget_saved(self) -> None:
        """Remove the saved index (the rows it indexes were replaced or dropped)."""
        path = self.path()
        if path is not None and self.saves:
            delete_uri(path)

    def build_in_background_if_due(self) -> None:
        if (self.search.mode != "auto" or self.on_device or self.rows.n < self.search.ann_min_faces
                or self.building.locked()):
            return
        if self.index is None or len(self.tail) > self.search.rebuild_fraction * len(self.index):
            self.build_in_background()

    def build_in_background(self) -> None:
        threading.Thread(target=self.build, name=f"build-{self.table_name}", daemon=True).start()

    def restore(self) -> None:
        """After a (re)start: the saved index with its tail recomputed, or a build when one is due."""
        path = self.path()
        started = time.perf_counter()
        saved = AnnIndex.load(path) if path is not None and self.search.mode != "exact" else None
        if saved is not None:
            index_rows = self._rows_of(saved.face_ids)
            with self.lock:
                self._install(saved, index_rows)
                self.tail = dict.fromkeys(self.rows.unindexed_ids())
            log.info("shard %s restored its index of %d faces in %.2f s (%d unindexed)", self.table_name,
                     len(saved), time.perf_counter() - started, len(self.tail))
        self.build_in_background_if_due()

    def _rows_of(self, saved_ids: PackedIds) -> np.ndarray:
        """The rows now of a saved index's faces (-1: gone). When the rows begin with exactly its faces
        in its order (the table's order: none deleted since the build), that is one comparison."""
        held = self.rows.ids[:len(saved_ids)]
        if saved_ids.equals(held):
            return np.arange(len(held), dtype=np.int64)
        return self.rows.rows_now(saved_ids.unpack())

    def _install(self, index: AnnIndex, index_rows: np.ndarray) -> None:
        """Search with ``index``, whose face at position p is now at row ``index_rows[p]`` (-1: deleted)."""
        self.rows.map_index(index_rows)
        self.index = index
        self.tail_rows = None

    def build(self) -> None:
        """Build the index from a snapshot while searches go on, save and install it. A call while a
        build runs waits for that build instead of starting one."""
        if not self.building.acquire(blocking=False):
            with self.building:
                return
        try:
            rows = self.rows
            with self.lock:
                # A view, not a copy (a copy would double the shard's memory at build time): rows that
                # a concurrent delete moves get a stale code, which only costs recall until the next
                # build, since candidates are re-scored exactly.
                vectors = rows.vectors[:rows.n]
                ids = list(rows.ids)
                layout = rows.layout
            if not ids:
                return
            index = AnnIndex.build(vectors, ids, self.search.scan_threads)
            del vectors
            path = self.path()
            if path is not None and self.saves:
                index.save(path)
            self._install_built(index, ids, layout)
        finally:
            self.building.release()

    def _install_built(self, index: AnnIndex, ids: list[str], layout: int) -> None:
        """Install an index built over ``ids`` (then at rows 0..n-1 under ``layout``), mapping them to
        the rows they moved to meanwhile without blocking searches where it can."""
        snapshot = set(ids)
        index_rows = np.arange(len(ids))
        for attempt in range(INSTALL_ATTEMPTS):
            with self.lock:
                if self.rows.layout == layout or attempt == INSTALL_ATTEMPTS - 1:
                    if self.rows.layout != layout:  # rows kept moving: map them while holding the lock
                        index_rows = self.rows.rows_now(ids)
                    self.tail = dict.fromkeys(f for f in self.tail if f not in snapshot)
                    self._install(index, index_rows)
                    return
                layout = self.rows.layout
            index_rows = self.rows.rows_now(ids)  # rows moved during the build: find them without blocking searches
