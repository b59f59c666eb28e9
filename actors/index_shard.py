"""IndexShard: one LanceDB face table plus an in-memory copy of its embeddings for exact search.

The caller makes it an actor (``ray.remote(IndexShard).options(...)``); this module does not import
Ray. Every write commits to LanceDB first and changes the in-memory copy only after the commit, so a
write is acknowledged only once it is durable, and a new IndexShard on the same table (after a crash
or restart) loads exactly the acknowledged faces.

Memory layout: a float32 matrix of unit embeddings whose capacity doubles as it fills, a parallel
int32 array of subject codes, a parallel list of face ids and a dict face id -> row. A subject code
indexes the subject name and its face count, so subject filters and renames are array operations.
Deletes move the last row into the hole (bulk deletes compact instead), so rows stay dense.

Search is exact: one matrix product of the queries with all rows (cosine, since both sides are unit
length), then a partial top (argpartition) of a few times ``k`` candidates per query. A shard that
sees a GPU (``SearchConfig.device``) takes those candidates from a half-precision copy of the matrix
on the GPU instead (:mod:`actors.matrix_search`) and re-scores them here, and builds no approximate
index on its own.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pyarrow as pa

from actors.ann_index import AnnIndex
from actors.matrix_search import matrix_search
from store.faces import FaceRecord, FaceTable
from store.object_storage import delete_uri, join_uri

logger = logging.getLogger(__name__)

MIN_CAPACITY = 1024
CANDIDATE_FACTOR = 4      # distinct-subject search looks at CANDIDATE_FACTOR * k + CANDIDATE_SLACK faces
CANDIDATE_SLACK = 16
CANDIDATE_GROWTH = 16     # ...and at 16 times more when those hold fewer than k subjects, then all
INSTALL_ATTEMPTS = 3       # a build maps its faces to rows that moved meanwhile at most this often unlocked
CANDIDATES_PER_INDEXED = 5000  # approximate search re-scores at least one face in this many
SCORE_BUDGET = 32_000_000  # most query x face scores held at once (128 MB of float32)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    return (vectors / _row_norms(vectors)).astype(np.float32, copy=False)


def _row_norms(vectors: np.ndarray) -> np.ndarray:
    """``(N, 1)`` Euclidean norms of the rows, at least 1e-12."""
    return np.maximum(np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None], 1e-12)


def _top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest ``scores`` (1-D), best first."""
    if k < len(scores):
        part = np.argpartition(scores, len(scores) - k)[len(scores) - k:]
    else:
        part = np.arange(len(scores))
    return part[np.argsort(-scores[part], kind="stable")]


class ShardFull(Exception):
    """Adding these faces would take the shard past its memory budget."""


@dataclass(frozen=True)
class SearchConfig:
    """How a shard searches.

    ``mode``: ``exact`` (always scan the matrix), ``ann`` (use the approximate index whenever one is
    built) or ``auto`` (build one in the background once the shard holds ``ann_min_faces`` faces, and
    again when the faces added since the last build exceed ``rebuild_fraction`` of it).
    """

    mode: str = "auto"
    ann_min_faces: int = 100_000
    rebuild_fraction: float = 0.2
    candidates: int = 1024
    scan_threads: int = 1
    memory_budget_bytes: int | None = None
    index_dir: str | None = None
    device: str = "numpy"  # or a torch device ("cuda"): exact candidates from a copy of the matrix there


@dataclass(frozen=True)
class TableUpkeep:
    """How a shard keeps its table small and erases what was deleted from it.

    Every ``compact_every_commits`` commits (each writes a small file and a version) the table is
    compacted and versions older than ``erase_after_s`` are removed, so versions and files stay
    bounded. At most ``erase_after_s`` seconds after a delete, the bytes of every deleted face
    (embedding, crop) are gone from the table's files (:meth:`store.faces.FaceTable.erase_deleted`).
    """

    compact_every_commits: int = 256
    erase_after_s: float = 300.0


class IndexShard:
    """One face table and its in-memory search index. All methods are synchronous and thread-safe."""

    def __init__(self, db_uri: str, table_name: str, dim: int, search: SearchConfig = SearchConfig(),
                 upkeep: TableUpkeep = TableUpkeep()):
        if search.mode not in ("auto", "exact", "ann"):
            raise ValueError(f"unknown search mode {search.mode!r}: auto, exact or ann")
        self.dim = int(dim)
        self.table_name = table_name
        self.search = search
        self.upkeep = upkeep
        self._lock = threading.RLock()
        self._erasure: threading.Timer | None = None
        self._erasure_due = 0.0  # time.monotonic() when the scheduled erasure is due
        self._build_lock = threading.Lock()
        self._table: FaceTable | None = FaceTable.open(db_uri, table_name, self.dim)
        self._commits_since_compaction = 0
        self._layout = 0
        self._device_search = matrix_search(search.device)
        self._load()
        if self._writable_table().version_count() > 1:  # older versions may hold faces deleted before a restart
            self._schedule_erasure()
        self._restore_index()

    # ----------------------------------------------------------------------------------- state

    def _reset(self, capacity: int) -> None:
        """Empty in-memory state with room for ``capacity`` faces."""
        self._vectors = np.zeros((capacity, self.dim), dtype=np.float32)
        self._codes = np.zeros(capacity, dtype=np.int32)
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._code_of: dict[str, int] = {}          # subject -> code
        self._subject_of: list[str | None] = []      # code -> subject (None: free code)
        self._counts: list[int] = []                 # code -> number of faces
        self._free_codes: list[int] = []
        self._id_bytes = 0
        self._n = 0
        self._ann: AnnIndex | None = None
        self._ann_rows: np.ndarray | None = None  # position in the approximate index -> row (-1: deleted)
        self._row_positions = np.full(capacity, -1, dtype=np.int64)  # row -> position in it (-1: none)
        self._layout += 1  # bumped whenever rows move or go, so a build knows whether its snapshot's rows hold
        self._tail: dict[str, None] = {}  # ids added since the approximate index's snapshot
        self._tail_rows: np.ndarray | None = None  # their rows, cached between writes

    def _load(self) -> None:
        """Fill memory from the table (start and restart)."""
        started = time.perf_counter()
        ids, subjects, vectors = self._writable_table().scan_index_columns()
        rows = dict(zip(ids, range(len(ids))))
        if len(rows) != len(ids):  # only a writer other than IndexShard can leave duplicates
            keep = sorted(rows.values())
            logger.warning("table %s holds %d duplicate face ids; keeping the last of each",
                           self.table_name, len(ids) - len(keep))
            ids = [ids[row] for row in keep]
            subjects = [subjects[row] for row in keep]
            vectors = vectors[keep]
            rows = dict(zip(ids, range(len(ids))))
        n = len(ids)
        self._reset(max(n, MIN_CAPACITY))
        if n >= MIN_CAPACITY:  # take the scanned matrix as is (full); the next add doubles it
            self._vectors = vectors
        else:
            self._vectors[:n] = vectors
        self._vectors[:n] /= _row_norms(self._vectors[:n])
        code_of = self._code_of
        self._codes[:n] = [code_of.setdefault(subject, len(code_of)) for subject in subjects]
        self._subject_of = list(code_of)
        self._counts = np.bincount(self._codes[:n], minlength=len(code_of)).tolist()
        self._ids = ids
        self._rows = rows
        self._id_bytes = sum(map(sys.getsizeof, ids))
        self._n = n
        logger.info("shard %s loaded %d faces of %d subjects in %.2f s", self.table_name, self._n,
                    len(self._code_of), time.perf_counter() - started)

    def _writable_table(self) -> FaceTable:
        if self._table is None:
            raise RuntimeError(f"index shard {self.table_name!r} was dropped")
        return self._table

    def _acquire(self, subject: str, faces: int = 1) -> int:
        """Code of ``subject`` (allocated when new), its count raised by ``faces``."""
        code = self._code_of.get(subject)
        if code is None:
            if self._free_codes:
                code = self._free_codes.pop()
                self._subject_of[code] = subject
                self._counts[code] = 0
            else:
                code = len(self._subject_of)
                self._subject_of.append(subject)
                self._counts.append(0)
            self._code_of[subject] = code
        self._counts[code] += faces
        return code

    def _release(self, code: int, faces: int = 1) -> None:
        """Lower the count of subject ``code`` by ``faces``; free the code when it reaches zero."""
        self._counts[code] -= faces
        if self._counts[code] <= 0:
            del self._code_of[self._subject_of[code]]
            self._subject_of[code] = None
            self._counts[code] = 0
            self._free_codes.append(code)

    def _ensure_capacity(self, needed: int) -> None:
        """Grow the row arrays (doubling) to hold ``needed`` rows."""
        capacity = len(self._codes)
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        vectors = np.zeros((capacity, self.dim), dtype=np.float32)
        vectors[:self._n] = self._vectors[:self._n]
        codes = np.zeros(capacity, dtype=np.int32)
        codes[:self._n] = self._codes[:self._n]
        positions = np.full(capacity, -1, dtype=np.int64)
        positions[:self._n] = self._row_positions[:self._n]
        self._vectors, self._codes, self._row_positions = vectors, codes, positions

    def _append(self, ids: list[str], subjects: list[str], vectors: np.ndarray) -> None:
        """Append rows (ids not yet present) to memory."""
        start, count = self._n, len(ids)
        self._ensure_capacity(start + count)
        self._vectors[start:start + count] = vectors
        self._codes[start:start + count] = [self._acquire(subject) for subject in subjects]
        self._row_positions[start:start + count] = -1
        self._ids.extend(ids)
        self._rows.update(zip(ids, range(start, start + count)))
        self._id_bytes += sum(sys.getsizeof(face_id) for face_id in ids)
        self._n += count

    def _remove_rows(self, rows: list[int]) -> list[tuple[str, str]]:
        """Remove rows from memory; returns their (face_id, subject)."""
        rows = sorted(set(rows), reverse=True)
        removed = [(self._ids[row], self._subject_of[self._codes[row]]) for row in rows]
        removed_codes = self._codes[rows]
        for face_id, _ in removed:
            del self._rows[face_id]
        self._id_bytes -= sum(sys.getsizeof(face_id) for face_id, _ in removed)
        positions = self._row_positions
        if len(rows) <= max(64, self._n // 16):
            for row in rows:  # highest first: the last row is never one still to delete
                last = self._n - 1
                if positions[row] >= 0:
                    self._ann_rows[positions[row]] = -1
                if row != last:
                    moved = self._ids[last]
                    self._vectors[row] = self._vectors[last]
                    self._codes[row] = self._codes[last]
                    self._ids[row] = moved
                    self._rows[moved] = row
                    positions[row] = positions[last]
                    if positions[row] >= 0:
                        self._ann_rows[positions[row]] = row
                positions[last] = -1
                self._ids.pop()
                self._n -= 1
        else:
            keep = np.ones(self._n, dtype=bool)
            keep[rows] = False
            kept = np.flatnonzero(keep)
            self._vectors[:len(kept)] = self._vectors[kept]
            self._codes[:len(kept)] = self._codes[kept]
            positions[:len(kept)] = positions[kept]
            positions[len(kept):self._n] = -1
            if self._ann_rows is not None:
                self._ann_rows[:] = -1
                indexed = positions[:len(kept)] >= 0
                self._ann_rows[positions[:len(kept)][indexed]] = np.flatnonzero(indexed)
            self._ids = [self._ids[row] for row in kept]
            self._rows = dict(zip(self._ids, range(len(self._ids))))
            self._n = len(kept)
        self._layout += 1
        self._tail_rows = None
        for code, faces in zip(*np.unique(removed_codes, return_counts=True)):
            self._release(int(code), int(faces))
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
        return _unit_rows(matrix)

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
        vectors = _unit_rows(vectors)
        return [dataclasses.replace(r, embedding=v) for r, v in zip(unique, vectors)]

    def _score_chunks(self, queries: np.ndarray, matrix: np.ndarray):
        """Yield (first query index, scores of a block of queries against ``matrix`` rows)."""
        step = max(1, SCORE_BUDGET // max(1, len(matrix)))
        for start in range(0, len(queries), step):
            yield start, queries[start:start + step] @ matrix.T

    # ---------------------------------------------------------------------------------- writes

    def add(self, records: list[FaceRecord]) -> int:
        """Store the faces (one commit), then index them; returns the number of faces in the shard.

        A face id already present is replaced, so adding the same records again changes nothing.
        Embeddings are stored scaled to unit length.
        """
        with self._lock:
            table = self._writable_table()
            if not records:
                return self._n
            prepared = self._prepare(records)
            self._check_budget(sum(1 for r in prepared if r.face_id not in self._rows))
            replaced = [r for r in prepared if r.face_id in self._rows]
            if replaced:
                table.upsert(prepared)
            else:
                table.add(prepared)
            for record in replaced:
                row = self._rows[record.face_id]
                old_code = int(self._codes[row])
                self._codes[row] = self._acquire(record.subject)
                self._release(old_code)
                self._vectors[row] = record.embedding
            if replaced and self._device_search is not None:
                self._device_search.invalidate()
            new = [r for r in prepared if r.face_id not in self._rows]
            if new:
                self._append([r.face_id for r in new], [r.subject for r in new],
                             np.stack([r.embedding for r in new]))
            self._tail.update(dict.fromkeys(r.face_id for r in prepared))
            self._tail_rows = None
            self._after_commit(table)
            self._build_in_background_if_due()
            return self._n

    def delete_ids(self, ids: list[str]) -> list[tuple[str, str]]:
        """Delete the faces with these ids held here; returns (face_id, subject) of those deleted."""
        with self._lock:
            table = self._writable_table()
            present = [face_id for face_id in dict.fromkeys(ids) if face_id in self._rows]
            if not present:
                return []
            table.delete_ids(present)
            self._schedule_erasure()
            removed = self._remove_rows([self._rows[face_id] for face_id in present])
            self._after_commit(table)
            return removed

    def delete_subject(self, subject: str) -> int:
        """Delete every face of ``subject``; returns how many were deleted."""
        with self._lock:
            table = self._writable_table()
            code = self._code_of.get(subject)
            if code is None:
                return 0
            table.delete_subject(subject)
            self._schedule_erasure()
            rows = np.flatnonzero(self._codes[:self._n] == code)
            return len(self._remove_rows(rows.tolist()))

    def delete_all(self) -> int:
        """Delete every face (the table stays); returns how many were deleted."""
        with self._lock:
            table = self._writable_table()
            deleted = self._n
            if deleted:
                table.delete_all()
                self._schedule_erasure()
            self._reset(MIN_CAPACITY)
            return deleted

    def rename_subject(self, old: str, new: str) -> int:
        """Move every face of ``old`` to ``new`` (merging when ``new`` exists); returns how many."""
        if not isinstance(new, str):
            raise ValueError("subject must be a string")
        with self._lock:
            table = self._writable_table()
            old_code = self._code_of.get(old)
            if old_code is None:
                return 0
            faces = self._counts[old_code]
            if old == new:
                return faces
            table.rename_subject(old, new)
            new_code = self._code_of.get(new)
            if new_code is None:
                del self._code_of[old]
                self._code_of[new] = old_code
                self._subject_of[old_code] = new
            else:
                codes = self._codes[:self._n]
                codes[codes == old_code] = new_code
                self._counts[new_code] += faces
                self._release(old_code, faces)
            return faces

    def drop(self) -> None:
        """Drop the table and its saved index, and clear memory; the shard accepts no writes afterwards."""
        with self._lock:
            if self._erasure is not None:
                self._erasure.cancel()
            if self._table is not None:
                self._table.drop()
                self._table = None
            self._reset(1)
            index_path = self._index_path()
            if index_path is not None:
                delete_uri(index_path)

    def optimize(self) -> None:
        """Compact the table's small files (one per commit) and prune versions past ``upkeep.erase_after_s``."""
        with self._lock:
            self._writable_table().optimize(timedelta(seconds=self.upkeep.erase_after_s))
            self._commits_since_compaction = 0

    def _after_commit(self, table: FaceTable) -> None:
        """Keep the table's versions and files bounded under a steady stream of writes.

        A due erasure runs here, on the writer's thread: under continuous writes the timer's thread
        may not win the lock for a long while, and the versions it would remove pile up meanwhile.
        """
        if self._erasure is not None and time.monotonic() >= self._erasure_due:
            self.erase_deleted()
            return
        self._commits_since_compaction += 1
        if self._commits_since_compaction >= self.upkeep.compact_every_commits:
            table.optimize(timedelta(seconds=self.upkeep.erase_after_s))
            self._commits_since_compaction = 0

    def _schedule_erasure(self) -> None:
        """Erase deleted faces from the table's files ``upkeep.erase_after_s`` from now, unless already due."""
        with self._lock:
            if self._erasure is None:
                self._erasure_due = time.monotonic() + self.upkeep.erase_after_s
                self._erasure = threading.Timer(self.upkeep.erase_after_s, self._erase_when_due)
                self._erasure.daemon = True
                self._erasure.start()

    def _erase_when_due(self) -> None:
        try:
            self.erase_deleted()
        except Exception:  # e.g. the disk is full: try again after another delay
            logger.exception("shard %s could not erase deleted faces; trying again later", self.table_name)
            self._schedule_erasure()

    def erase_deleted(self) -> None:
        """Rewrite the table without the bytes of deleted faces and remove its older versions now."""
        with self._lock:
            if self._erasure is not None:
                self._erasure.cancel()
                self._erasure = None
            if self._table is None:
                return
            started = time.perf_counter()
            self._table.erase_deleted()
            self._commits_since_compaction = 0
            stale_index = self._ann_rows is not None and bool((self._ann_rows < 0).any())
            logger.info("shard %s erased deleted faces from its files in %.2f s", self.table_name,
                        time.perf_counter() - started)
        if stale_index:  # the saved approximate index still holds the codes of deleted faces: replace it
            threading.Thread(target=self.build_index, name=f"build-{self.table_name}", daemon=True).start()

    def replace_from(self, source_table: str) -> list[str]:
        """Replace every row by the rows of table ``source_table`` in one commit, then reload memory.

        For migrations: the source holds re-embedded copies of this shard's faces. Faces deleted here
        since the copy was made are left out; renamed subjects keep their current name. If the source
        lacks faces held here (added since), nothing changes and their ids are returned, so that the
        caller can copy them and call again; an empty list means the shard now serves the new rows.
        """
        with self._build_lock, self._lock:  # a running index build of the old rows finishes first
            table = self._writable_table()
            source = FaceTable.open(table.db_uri, source_table, self.dim, read_consistency_interval=timedelta(0))
            copied = set(source.face_ids())
            missing = [face_id for face_id in self._ids if face_id not in copied]
            if missing:
                return missing
            table.overwrite(self._as_held_now(batch) for batch in source.batches())
            self._load()
            index_path = self._index_path()
            if index_path is not None:
                delete_uri(index_path)  # it indexes the replaced embeddings
        self._build_in_background_if_due()
        return []

    def _as_held_now(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch`` without the faces no longer held here, with their current subjects."""
        ids = batch.column("face_id").to_pylist()
        keep = [i for i, face_id in enumerate(ids) if face_id in self._rows]
        subjects = [self._subject_of[self._codes[self._rows[ids[i]]]] for i in keep]
        batch = batch.take(pa.array(keep, pa.int64()))
        column = batch.schema.get_field_index("subject")
        return batch.set_column(column, batch.schema.field(column), pa.array(subjects, pa.string()))

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
            n = self._n
            results: list[list[tuple[str, float, str]]] = [[] for _ in range(len(matrix))]
            if n == 0:
                return results
            wanted = min(k, len(self._code_of))
            if self._use_ann():
                for query, (rows, scores) in enumerate(self._ann_scores(matrix, CANDIDATE_FACTOR * wanted)):
                    order = np.argsort(-scores, kind="stable")
                    _, first = np.unique(self._codes[rows[order]], return_index=True)
                    best = order[np.sort(first)[:wanted]]
                    results[query] = [(self._subject_of[self._codes[rows[i]]], float(scores[i]),
                                       self._ids[rows[i]]) for i in best]
                return results
            codes = self._codes[:n]
            first_try = min(n, CANDIDATE_FACTOR * wanted + CANDIDATE_SLACK)
            if self._device_search is not None:
                return self._device_subjects(matrix, wanted, first_try)
            for start, scores in self._score_chunks(matrix, self._vectors[:n]):
                if first_try < n:
                    candidates = np.argpartition(scores, n - first_try, axis=1)[:, n - first_try:]
                else:
                    candidates = np.broadcast_to(np.arange(n), scores.shape)
                for offset, row_scores in enumerate(scores):
                    rows = self._distinct_subject_rows(row_scores, candidates[offset], codes, wanted)
                    results[start + offset] = [
                        (self._subject_of[codes[row]], float(row_scores[row]), self._ids[row])
                        for row in rows]
            return results

    @staticmethod
    def _distinct_subject_rows(scores: np.ndarray, candidates: np.ndarray, codes: np.ndarray,
                               wanted: int) -> np.ndarray:
        """Rows of the best face of each of the ``wanted`` best subjects, best first.

        Looks among ``candidates`` (the top faces) first, then among 16 times more, then all faces.
        """
        n = len(scores)
        pool = candidates
        while True:
            ordered = pool[np.argsort(-scores[pool], kind="stable")]
            _, first = np.unique(codes[ordered], return_index=True)
            if len(first) >= wanted or len(pool) >= n:
                first.sort()
                return ordered[first[:wanted]]
            size = min(n, len(pool) * CANDIDATE_GROWTH)
            pool = np.argpartition(scores, n - size)[n - size:] if size < n else np.arange(n)

    def search_faces(self, queries: np.ndarray, k: int,
                     subject: str | None = None) -> list[list[tuple[str, str, float]]]:
        """Per query, the top-``k`` faces as (face_id, subject, cosine), best first.

        With ``subject``, only that subject's faces are searched.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        matrix = self._queries(queries)
        with self._lock:
            results: list[list[tuple[str, str, float]]] = [[] for _ in range(len(matrix))]
            if subject is None and self._use_ann():
                for query, (rows, scores) in enumerate(self._ann_scores(matrix, k)):
                    top = _top_rows(scores, k)
                    results[query] = [(self._ids[rows[i]], self._subject_of[self._codes[rows[i]]],
                                       float(scores[i])) for i in top]
                return results
            if subject is None:
                rows = None
                vectors = self._vectors[:self._n]
            else:
                code = self._code_of.get(subject)
                if code is None:
                    return results
                rows = np.flatnonzero(self._codes[:self._n] == code)
                vectors = self._vectors[rows]
            if len(vectors) == 0:
                return results
            if rows is None and self._device_search is not None:
                for query, (found, scores) in enumerate(self._device_scores(matrix, CANDIDATE_FACTOR * k)):
                    results[query] = [(self._ids[row], self._subject_of[self._codes[row]], float(score))
                                      for row, score in zip(found[:k], scores[:k])]
                return results
            for start, scores in self._score_chunks(matrix, vectors):
                for offset, row_scores in enumerate(scores):
                    top = _top_rows(row_scores, k)
                    found = top if rows is None else rows[top]
                    results[start + offset] = [
                        (self._ids[row], self._subject_of[self._codes[row]], float(row_scores[local]))
                        for row, local in zip(found, top)]
            return results

    def similarity_to(self, face_id: str, queries: np.ndarray) -> np.ndarray | None:
        """Cosine of each query to face ``face_id``: ``(Q,)`` float32, or None if not held here."""
        matrix = self._queries(queries)
        with self._lock:
            row = self._rows.get(face_id)
            if row is None:
                return None
            return matrix @ self._vectors[row]

    def list_faces(self, subject: str | None, offset: int,
                   limit: int) -> tuple[list[tuple[str, str]], int]:
        """A page of (face_id, subject) rows, of one subject when given, and the total matching.

        Rows come in memory order: insertion order until a delete moves rows.
        """
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit must be >= 0")
        with self._lock:
            if subject is None:
                total = self._n
                rows = range(min(offset, total), min(offset + limit, total))
            else:
                code = self._code_of.get(subject)
                if code is None:
                    return [], 0
                matching = np.flatnonzero(self._codes[:self._n] == code)
                total = len(matching)
                rows = matching[offset:offset + limit].tolist()
            return [(self._ids[row], self._subject_of[self._codes[row]]) for row in rows], total

    def get_face(self, face_id: str) -> FaceRecord | None:
        """The stored face with its crop (read from the table), or None if not held here."""
        with self._lock:
            if face_id not in self._rows:
                return None
            return self._writable_table().get(face_id)

    def existing(self, ids: list[str]) -> list[str]:
        """Those of ``ids`` held here."""
        with self._lock:
            return [face_id for face_id in ids if face_id in self._rows]

    def count(self, subject: str | None = None) -> int:
        """Number of faces, of one subject when given."""
        with self._lock:
            if subject is None:
                return self._n
            code = self._code_of.get(subject)
            return 0 if code is None else self._counts[code]

    def subjects(self) -> dict[str, int]:
        """Face count per subject."""
        with self._lock:
            return {subject: self._counts[code] for subject, code in self._code_of.items()}

    def memory_bytes(self) -> int:
        """Approximate bytes held in memory (matrix capacity, ids, maps, approximate index)."""
        with self._lock:
            ann = self._ann.memory_bytes() if self._ann is not None else 0
            ann += self._ann_rows.nbytes if self._ann_rows is not None else 0
            return int(self._vectors.nbytes + self._codes.nbytes + self._row_positions.nbytes + sys.getsizeof(self._ids)
                       + sys.getsizeof(self._rows) + self._id_bytes + sys.getsizeof(self._code_of)
                       + sum(sys.getsizeof(s) for s in self._code_of) + ann + sys.getsizeof(self._tail))

    def stats(self) -> dict:
        """Faces, memory and disk use, and the state of the approximate index."""
        with self._lock:
            faces = self._n
            ram = self.memory_bytes()
            ann = self._ann
            unindexed = len(self._tail) if ann is not None else faces
        disk = self._writable_table().disk_bytes()
        return {"faces": faces, "ram_bytes": ram, "disk_bytes": disk,
                "ram_bytes_per_face": ram / faces if faces else None,
                "disk_bytes_per_face": disk / faces if faces and disk is not None else None,
                "search": "ann" if ann is not None and self.search.mode != "exact" else "exact",
                "indexed_faces": len(ann) if ann is not None else 0, "unindexed_faces": unindexed,
                "index_parts": len(ann.parts) if ann is not None else 0,
                "last_build_seconds": ann.build_seconds if ann is not None else None}

    # ------------------------------------------------------------------- approximate index

    def _use_ann(self) -> bool:
        return self._ann is not None and self.search.mode != "exact"

    def _build_in_background_if_due(self) -> None:
        if (self.search.mode != "auto" or self._device_search is not None or self._n < self.search.ann_min_faces
                or self._build_lock.locked()):
            return
        if self._ann is None or len(self._tail) > self.search.rebuild_fraction * len(self._ann):
            threading.Thread(target=self.build_index, name=f"build-{self.table_name}", daemon=True).start()

    def _ann_scores(self, matrix: np.ndarray, wanted: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: candidate rows (index candidates plus the unindexed tail) and exact cosines."""
        count = max(self.search.candidates, len(self._ann) // CANDIDATES_PER_INDEXED, 4 * wanted)
        if self._tail_rows is None:
            self._tail_rows = self._rows_now(list(self._tail))
        scored = []
        for query, positions in zip(matrix, self._ann.positions(matrix, count)):
            rows = np.unique(np.concatenate([self._ann_rows[positions], self._tail_rows]))
            rows = rows[rows >= 0]  # deleted since the build
            scored.append((rows, self._vectors[rows] @ query))
        return scored

    def _device_scores(self, matrix: np.ndarray, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: the top ``count`` rows found on the device, re-scored exactly here, best first."""
        rows, _ = self._device_search.top(matrix, self._vectors[:self._n], count, self._layout)
        scored = []
        for query, found in zip(matrix, rows):
            scores = self._vectors[found] @ query
            order = np.argsort(-scores, kind="stable")
            scored.append((found[order], scores[order]))
        return scored

    def _device_subjects(self, matrix: np.ndarray, wanted: int, count: int) -> list[list[tuple[str, float, str]]]:
        """:meth:`search_subjects` from device candidates, widened (16x, then all) for queries short of subjects."""
        results: list[list[tuple[str, float, str]]] = [[] for _ in range(len(matrix))]
        todo = np.arange(len(matrix))
        while len(todo):
            short = []
            for query, (rows, scores) in zip(todo, self._device_scores(matrix[todo], count)):
                _, first = np.unique(self._codes[rows], return_index=True)
                if len(first) < wanted and count < self._n:
                    short.append(query)
                    continue
                best = np.sort(first)[:wanted]
                results[query] = [(self._subject_of[self._codes[rows[i]]], float(scores[i]), self._ids[rows[i]])
                                  for i in best]
            todo, count = np.asarray(short, dtype=np.int64), min(self._n, count * CANDIDATE_GROWTH)
        return results

    def _rows_now(self, face_ids) -> np.ndarray:
        """Current rows of these faces (-1: not held). One dict look-up each: about 2 us at 10M faces."""
        rows_of = self._rows.get
        return np.fromiter((rows_of(face_id, -1) for face_id in face_ids), dtype=np.int64, count=len(face_ids))

    def _install_index(self, index: AnnIndex, rows: np.ndarray) -> None:
        """Search with ``index``, whose face at position p is now at row ``rows[p]`` (-1: deleted)."""
        self._row_positions[:] = -1
        held = rows >= 0
        self._row_positions[rows[held]] = np.flatnonzero(held)
        self._ann_rows = rows
        self._ann = index
        self._tail_rows = None

    def _check_budget(self, new_faces: int) -> None:
        budget = self.search.memory_budget_bytes
        if budget is None or new_faces == 0:
            return
        held = self.memory_bytes()
        per_face = held / self._n if self._n >= MIN_CAPACITY else 4 * self.dim + 200
        needed = held + new_faces * per_face
        if needed > budget:
            raise ShardFull(f"shard {self.table_name} would need about {needed / 2**20:.0f} MiB for "
                            f"{self._n + new_faces} faces; its memory budget is {budget / 2**20:.0f} MiB: "
                            "re-shard the service onto more shards or raise FACES_SHARD_MEMORY_BUDGET_MB")

    def _index_path(self) -> str | None:
        """Where the saved index lives: a local path or an object-store URI (``SearchConfig.index_dir``)."""
        return join_uri(self.search.index_dir, f"{self.table_name}.ivf.npz") if self.search.index_dir else None

    def _restore_index(self) -> None:
        """After a (re)start: the saved index with its tail recomputed, or a build when one is due."""
        path = self._index_path()
        saved = AnnIndex.load(path) if path is not None and self.search.mode != "exact" else None
        if saved is not None:
            rows = self._rows_now(saved.face_ids)
            with self._lock:
                self._install_index(saved, rows)
                self._tail = dict.fromkeys(self._ids[row] for row in np.flatnonzero(self._row_positions[:self._n] < 0))
            logger.info("shard %s restored its index of %d faces (%d unindexed)", self.table_name,
                        len(saved), len(self._tail))
        self._build_in_background_if_due()

    def build_index(self) -> dict:
        """Build the approximate index from a snapshot while searches go on; returns ``stats()``.

        Faces added during the build stay in the exactly searched tail; faces deleted during it are
        skipped at query time. A call while a build runs waits for that build instead of starting one.
        """
        if not self._build_lock.acquire(blocking=False):
            with self._build_lock:
                return self.stats()
        try:
            with self._lock:
                # A view, not a copy (a copy would double the shard's memory at build time): rows that
                # a concurrent delete moves get a stale code, which only costs recall until the next
                # build, since candidates are re-scored exactly.
                vectors = self._vectors[:self._n]
                ids = list(self._ids)
                layout = self._layout
            if not ids:
                return self.stats()
            index = AnnIndex.build(vectors, ids, self.search.scan_threads)
            del vectors
            path = self._index_path()
            if path is not None:
                index.save(path)
            snapshot = set(ids)
            rows = np.arange(len(ids))
            for attempt in range(INSTALL_ATTEMPTS):
                with self._lock:
                    if self._layout == layout or attempt == INSTALL_ATTEMPTS - 1:
                        if self._layout != layout:  # rows kept moving: map them while holding the lock
                            rows = self._rows_now(ids)
                        self._tail = dict.fromkeys(f for f in self._tail if f not in snapshot)
                        self._install_index(index, rows)
                        break
                    layout = self._layout
                rows = self._rows_now(ids)  # rows moved during the build: find them without blocking searches
            return self.stats()
        finally:
            self._build_lock.release()
