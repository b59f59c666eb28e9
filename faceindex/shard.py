"""IndexShard: one LanceDB face table plus an in-memory copy of its embeddings for search.

The caller makes it an actor (``ray.remote(IndexShard).options(...)``); this package does not import
Ray. Every write commits to LanceDB first and changes the in-memory rows only after the commit, so a
write is acknowledged only once it is durable, and a new IndexShard on the same table (after a crash
or restart) loads exactly the acknowledged faces.

The shard composes the package's parts under one lock: the rows (:mod:`faceindex.rows`), exact
search (:mod:`faceindex.exact`, or on a GPU :mod:`faceindex.matrix_search`), the approximate index
(:mod:`faceindex.approximate`), the table's upkeep and erasure (:mod:`faceindex.upkeep`), a
migration's swap (:mod:`faceindex.migration`) and the memory budget (:mod:`faceindex.budget`).

A shard opened as a read replica (:mod:`faceindex.replica`) holds the same rows from the same table,
writes nothing, and applies the primary's changes in the primary's order (:meth:`IndexShard.write`
on the primary, :meth:`IndexShard.follow` on each replica).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from datetime import timedelta
from typing import Any

import numpy as np

from faceindex import exact
from faceindex.approximate import ApproximateSearch
from faceindex.budget import check_budget
from faceindex.config import SearchConfig
from faceindex.matrix_search import matrix_search
from faceindex.migration import replace_rows
from faceindex.replica import ChangeOrder, FollowedTable
from faceindex.rows import MIN_CAPACITY, ShardRows, unit_rows
from faceindex.upkeep import TableKeeper, TableUpkeep
from store.faces import FaceRecord, FaceTable, use_system_allocator_for_arrow

logger = logging.getLogger(__name__)

WRITES = frozenset({"add", "delete_ids", "delete_subject", "delete_all", "rename_subject"})
# The environment a shard's process must start with (glibc reads it then; actors.index_shard gives it
# to the shard actors). LanceDB runs every local file operation as a blocking task of its runtime,
# on threads it keeps while work keeps reaching them (up to 512, which nothing in LanceDB 0.40 sets
# lower), and glibc gave each of those threads an arena of its own: 15 arenas after one add, delete
# and erasure. With 2, a shard under add/delete churn with erasures stays lower (docs/architecture.md).
SHARD_ENV = {"MALLOC_ARENA_MAX": "2"}


class IndexShard:
    """One face table and its in-memory search index. All methods are synchronous and thread-safe."""

    def __init__(self, db_uri: str, table_name: str, dim: int, search: SearchConfig = SearchConfig(),
                 upkeep: TableUpkeep = TableUpkeep(), replica: bool = False):
        if search.mode not in ("auto", "exact", "ann"):
            raise ValueError(f"unknown search mode {search.mode!r}: auto, exact or ann")
        use_system_allocator_for_arrow()  # a shard writes for the life of its process
        self.dim = int(dim)
        self.table_name = table_name
        self.search = search
        self.upkeep = upkeep
        self._lock = threading.RLock()
        self.replica = replica
        self._table: FaceTable | FollowedTable | None = (
            FollowedTable(FaceTable.open(db_uri, table_name, self.dim, read_consistency_interval=timedelta(0)))
            if replica else FaceTable.open(db_uri, table_name, self.dim))
        self._order = ChangeOrder(self._lock)
        self._keeper = TableKeeper(upkeep, self._lock, self.erase_deleted, table_name)
        self._device_search = matrix_search(search.device)
        self._rows = ShardRows(self.dim)
        self._ann = ApproximateSearch(self._rows, self._lock, search, table_name,
                                      on_device=self._device_search is not None, saves=not replica)
        self._load()
        if self._writable_table().version_count() > 1:  # older versions may hold faces deleted before a restart
            self._keeper.schedule_erasure()
        self._ann.restore()

    # ----------------------------------------------------------------------------------- state

    def _reset(self, capacity: int) -> None:
        """Empty in-memory state with room for ``capacity`` faces."""
        self._rows.clear(capacity)
        self._ann.clear()

    def _load(self) -> None:
        """Fill memory from the table (start and restart)."""
        started = time.perf_counter()
        table = self._writable_table()
        version = table.version  # read before the scan: a commit between the two is applied again, harmlessly
        ids, subjects, vectors = table.scan_index_columns()
        self._rows.load(ids, subjects, vectors, self.table_name)
        self._ann.clear()
        self._order.reset(version)
        logger.info("shard %s loaded %d faces of %d subjects in %.2f s", self.table_name, self._rows.n,
                    len(self._rows.code_of), time.perf_counter() - started)

    def _writable_table(self) -> FaceTable:
        if self._table is None:
            raise RuntimeError(f"index shard {self.table_name!r} was dropped")
        return self._table

    def _remove_rows(self, rows: list[int]) -> list[tuple[str, str]]:
        removed = self._rows.remove(rows)
        self._ann.removed(face_id for face_id, _ in removed)
        return removed

    def _queries(self, queries: np.ndarray) -> np.ndarray:
        """Queries as a ``(Q, dim)`` float32 unit-row matrix (a single ``(dim,)`` vector is Q = 1)."""
        matrix = np.asarray(queries, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (Q, {self.dim}), got {np.shape(queries)}")
        if not np.isfinite(matrix).all():
            raise ValueError("queries must be finite")
        return unit_rows(matrix)

    def _prepare(self, records: list[FaceRecord]) -> list[FaceRecord]:
        """Records with unit float32 embeddings, the last one kept per face id."""
        latest: dict[str, FaceRecord] = {}
        for record in records:
            if not isinstance(record.face_id, str) or not record.face_id:
                raise ValueError("face_id must be a non-empty string")
            if not isinstance(record.subject, str):
                raise ValueError("subject must be a string")
            latest.pop(record.face_id, None)
            latest[record.face_id] = record
        unique = list(latest.values())
        vectors = np.stack([np.asarray(r.embedding, dtype=np.float32).ravel() for r in unique])
        if vectors.shape[1] != self.dim:
            raise ValueError(f"embeddings must have {self.dim} dimensions, got {vectors.shape[1]}")
        if not np.isfinite(vectors).all():
            raise ValueError("embeddings must be finite")
        if (np.linalg.norm(vectors, axis=1) < 1e-6).any():
            raise ValueError("embeddings must not be zero vectors")
        vectors = unit_rows(vectors)
        return [dataclasses.replace(r, embedding=v) for r, v in zip(unique, vectors)]

    # ---------------------------------------------------------------------------------- writes

    def add(self, records: list[FaceRecord]) -> int:
        """Store the faces (one commit), then index them; returns the number of faces in the shard.

        A face id already present is replaced, so adding the same records again changes nothing.
        Embeddings are stored scaled to unit length.
        """
        with self._lock:
            table = self._writable_table()
            rows = self._rows
            if not records:
                return rows.n
            prepared = self._prepare(records)
            check_budget(self.search.memory_budget_bytes, self.memory_bytes, rows.n,
                         sum(1 for r in prepared if r.face_id not in rows.rows), self.dim, self.table_name)
            replaced = [r for r in prepared if r.face_id in rows.rows]
            if replaced:
                table.upsert(prepared)
            else:
                table.add(prepared)
            for record in replaced:
                rows.replace(record.face_id, record.subject, record.embedding)
            if replaced and self._device_search is not None:
                self._device_search.invalidate()
            new = [r for r in prepared if r.face_id not in rows.rows]
            if new:
                rows.append([r.face_id for r in new], [r.subject for r in new], np.stack([r.embedding for r in new]))
            self._ann.added(r.face_id for r in prepared)
            self._keeper.after_commit(table)
            self._ann.build_in_background_if_due()
            return rows.n

    def delete_ids(self, ids: list[str]) -> list[tuple[str, str]]:
        """Delete the faces with these ids held here; returns (face_id, subject) of those deleted."""
        with self._lock:
            table = self._writable_table()
            present = [face_id for face_id in dict.fromkeys(ids) if face_id in self._rows.rows]
            if not present:
                return []
            table.delete_ids(present)
            self._keeper.schedule_erasure()
            removed = self._remove_rows([self._rows.rows[face_id] for face_id in present])
            self._keeper.after_commit(table)
            return removed

    def delete_subject(self, subject: str) -> int:
        """Delete every face of ``subject``; returns how many were deleted."""
        with self._lock:
            table = self._writable_table()
            rows = self._rows.subject_rows(subject)
            if rows is None:
                return 0
            table.delete_subject(subject)
            self._keeper.schedule_erasure()
            return len(self._remove_rows(rows.tolist()))

    def delete_all(self) -> int:
        """Delete every face (the table stays); returns how many were deleted."""
        with self._lock:
            table = self._writable_table()
            deleted = self._rows.n
            if deleted:
                table.delete_all()
                self._keeper.schedule_erasure()
            self._reset(MIN_CAPACITY)
            return deleted

    def rename_subject(self, old: str, new: str) -> int:
        """Move every face of ``old`` to ``new`` (merging when ``new`` exists); returns how many."""
        if not isinstance(new, str):
            raise ValueError("subject must be a string")
        with self._lock:
            table = self._writable_table()
            faces = self._rows.count(old)
            if faces == 0 or old == new:
                return faces
            table.rename_subject(old, new)
            return self._rows.rename(old, new)

    def drop(self) -> None:
        """Drop the table and its saved index, and clear memory; the shard accepts no writes afterwards."""
        with self._lock:
            self._keeper.cancel_erasure()
            if self._table is not None:
                self._table.drop()
                self._table = None
            self._reset(1)
            self._ann.forget_saved()

    def optimize(self) -> None:
        """Compact the table's small files (one per commit) and prune versions past ``upkeep.erase_after_s``."""
        with self._lock:
            self._keeper.optimize(self._writable_table())

    def erase_deleted(self) -> None:
        """Rewrite the table without the bytes of deleted faces and remove its older versions now."""
        with self._lock:
            self._keeper.cancel_erasure()
            if self._table is None:
                return
            self._keeper.erase_now(self._table)
            stale_index = self._ann.holds_deleted()
        if stale_index:  # the saved approximate index still holds the codes of deleted faces: replace it
            self._ann.build_in_background()

    def replace_from(self, source_table: str) -> list[str]:
        """Replace every row by the rows of table ``source_table`` in one commit, then reload memory.

        For migrations (:mod:`faceindex.migration`): an empty list means the shard now serves the
        new rows; else nothing changed and the ids returned are the faces the source lacks, to be
        copied before calling again.
        """
        with self._ann.building, self._lock:  # a running index build of the old rows finishes first
            missing = replace_rows(self._writable_table(), source_table, self._rows)
            if missing:
                return missing
            self._load()
            self._ann.forget_saved()  # it indexes the replaced embeddings
        self._ann.build_in_background_if_due()
        return []

    # ------------------------------------------------------------------------------- replicas

    def write(self, method: str, *args) -> tuple[Any, int, int]:
        """On the primary: the write ``method(*args)`` (one of :data:`WRITES`), its result and the
        change it made as ``(before, after)`` table versions, for the replicas to :meth:`follow`."""
        if method not in WRITES:
            raise ValueError(f"{method!r} is not a write: {sorted(WRITES)}")
        with self._lock:
            before = self._order.version
            result = getattr(self, method)(*args)
            after = self._writable_table().version
            self._order.advance(after)
            return result, before, after

    def follow(self, method: str, args: tuple, before: int, after: int) -> None:
        """On a replica: apply the primary's change ``method(*args)`` that took its table from version
        ``before`` to ``after``, after the changes before it (:mod:`faceindex.replica`)."""
        if method not in WRITES:
            raise ValueError(f"{method!r} is not a write: {sorted(WRITES)}")
        with self._lock:
            if self._order.wait_for(before):
                if not self._order.holds(after):
                    getattr(self, method)(*args)
                    self._order.advance(after)
                return
        logger.info("replica of %s missed the changes up to version %d; loading the table again",
                    self.table_name, before)
        self.reload()  # outside the lock: an index build takes the build lock before it

    def reload(self) -> None:
        """Load the rows from the table again (a replica after the primary swapped its table, or one
        that fell behind), with the saved approximate index where there is one."""
        with self._ann.building, self._lock:
            self._load()
        self._ann.restore()

    # ----------------------------------------------------------------------------------- reads

    def search_subjects(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float, str]]]:
        """Per query, the top-``k`` distinct subjects as (subject, best cosine, face_id of that face).

        ``queries`` is ``(Q, dim)``; results are best first; fewer than ``k`` when the shard holds
        fewer subjects; empty lists when it is empty.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        matrix = self._queries(queries)
        with self._lock:
            if self._rows.n == 0:
                return [[] for _ in range(len(matrix))]
            wanted = min(k, len(self._rows.code_of))
            if self._ann.in_use():
                return self._ann.best_subjects(matrix, wanted)
            if self._device_search is not None:
                return exact.device_subjects(self._device_search, self._rows, matrix, wanted)
            return exact.best_subjects(self._rows, matrix, wanted)

    def search_faces(self, queries: np.ndarray, k: int,
                     subject: str | None = None) -> list[list[tuple[str, str, float]]]:
        """Per query, the top-``k`` faces as (face_id, subject, cosine), best first.

        With ``subject``, only that subject's faces are searched.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        matrix = self._queries(queries)
        with self._lock:
            if subject is None and self._ann.in_use():
                return self._ann.best_faces(matrix, k)
            if subject is not None:
                among = self._rows.subject_rows(subject)
                if among is None:
                    return [[] for _ in range(len(matrix))]
                return exact.best_faces(self._rows, matrix, k, among)
            if self._rows.n and self._device_search is not None:
                return exact.device_faces(self._device_search, self._rows, matrix, k)
            return exact.best_faces(self._rows, matrix, k, None)

    def similarity_to(self, face_id: str, queries: np.ndarray) -> np.ndarray | None:
        """Cosine of each query to face ``face_id``: ``(Q,)`` float32, or None if not held here."""
        matrix = self._queries(queries)
        with self._lock:
            row = self._rows.rows.get(face_id)
            if row is None:
                return None
            return matrix @ self._rows.vectors[row]

    def list_faces(self, subject: str | None, offset: int,
                   limit: int) -> tuple[list[tuple[str, str]], int]:
        """A page of (face_id, subject) rows, of one subject when given, and the total matching.

        Rows come in memory order: insertion order until a delete moves rows.
        """
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit must be >= 0")
        with self._lock:
            rows = self._rows
            if subject is None:
                total = rows.n
                page = range(min(offset, total), min(offset + limit, total))
            else:
                matching = rows.subject_rows(subject)
                if matching is None:
                    return [], 0
                total = len(matching)
                page = matching[offset:offset + limit].tolist()
            return [(rows.ids[row], rows.subject(row)) for row in page], total

    def get_face(self, face_id: str) -> FaceRecord | None:
        """The stored face with its crop (read from the table), or None if not held here."""
        with self._lock:
            if face_id not in self._rows.rows:
                return None
            return self._writable_table().get(face_id)

    def existing(self, ids: list[str]) -> list[str]:
        """Those of ``ids`` held here."""
        with self._lock:
            return [face_id for face_id in ids if face_id in self._rows.rows]

    def count(self, subject: str | None = None) -> int:
        """Number of faces, of one subject when given."""
        with self._lock:
            return self._rows.n if subject is None else self._rows.count(subject)

    def subject_counts(self, subjects: list[str]) -> list[int]:
        """Face counts of the named subjects (0 for a subject without faces here)."""
        with self._lock:
            return [self._rows.count(subject) for subject in subjects]

    def subjects(self) -> dict[str, int]:
        """Face count per subject."""
        with self._lock:
            return {subject: self._rows.counts[code] for subject, code in self._rows.code_of.items()}

    def memory_bytes(self) -> int:
        """Approximate bytes held in memory (matrix capacity, ids, maps, approximate index)."""
        with self._lock:
            return self._rows.memory_bytes() + self._ann.memory_bytes()

    def stats(self) -> dict:
        """Faces, memory and disk use, and the state of the approximate index."""
        with self._lock:
            faces = self._rows.n
            ram = self.memory_bytes()
            index = self._ann.stats()
        disk = self._writable_table().disk_bytes()
        return {"faces": faces, "ram_bytes": ram, "disk_bytes": disk,
                "ram_bytes_per_face": ram / faces if faces else None,
                "disk_bytes_per_face": disk / faces if faces and disk is not None else None, **index}

    def build_index(self) -> dict:
        """Build the approximate index from a snapshot while searches go on; returns ``stats()``.

        Faces added during the build stay in the exactly searched tail; faces deleted during it are
        skipped at query time. A call while a build runs waits for that build instead of starting one.
        """
        self._ann.build()
        return self.stats()
