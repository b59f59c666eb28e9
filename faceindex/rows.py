"""The rows of a shard in memory: embeddings, subjects and face ids, kept dense.

A float32 matrix of unit embeddings whose capacity doubles as it fills, a parallel int32 array of
subject codes, a parallel list of face ids and a dict face id -> row. A subject code indexes the
subject name and its face count, so subject filters and renames are array operations. Deletes move
the last row into the hole (bulk deletes compact instead), so rows stay dense.

The rows also keep the map between rows and the positions of an approximate index built from a
snapshot of them (``positions``: row -> position, ``index_rows``: position -> row, -1 for none), up
to date as rows move, and ``layout``, a counter bumped whenever rows move or go, so that a build
knows whether its snapshot's rows still hold. The caller holds the shard's lock around every call.
"""

from __future__ import annotations

import logging
import sys

import numpy as np

log = logging.getLogger(__name__)

MIN_CAPACITY = 1024


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    return (vectors / row_norms(vectors)).astype(np.float32, copy=False)


def row_norms(vectors: np.ndarray) -> np.ndarray:
    """``(N, 1)`` Euclidean norms of the rows, at least 1e-12."""
    return np.maximum(np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None], 1e-12)


class ShardRows:
    """The dense rows of one shard."""

    def __init__(self, dim: int, capacity: int = MIN_CAPACITY):
        self.dim = dim
        self.layout = 0
        self.clear(capacity)

    def clear(self, capacity: int) -> None:
        """No rows, room for ``capacity``."""
        self.vectors = np.zeros((capacity, self.dim), dtype=np.float32)
        self.codes = np.zeros(capacity, dtype=np.int32)
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.code_of: dict[str, int] = {}          # subject -> code
        self.subject_of: list[str | None] = []      # code -> subject (None: free code)
        self.counts: list[int] = []                 # code -> number of faces
        self.free_codes: list[int] = []
        self.id_bytes: int | None = 0  # bytes of the id strings; None: not summed yet
        self.n = 0
        self.index_rows: np.ndarray | None = None  # position in the approximate index -> row (-1: deleted)
        self.positions = np.full(capacity, -1, dtype=np.int64)  # row -> position in it (-1: none)
        self.layout += 1

    def load(self, ids: list[str], subjects: list[str], vectors: np.ndarray, table_name: str) -> None:
        """Replace the rows by these columns as scanned from the table (the last of duplicate ids kept)."""
        rows = dict(zip(ids, range(len(ids))))
        if len(rows) != len(ids):  # only a writer other than IndexShard can leave duplicates
            keep = sorted(rows.values())
            log.warning("table %s holds %d duplicate face ids; keeping the last of each",
                        table_name, len(ids) - len(keep))
            ids = [ids[row] for row in keep]
            subjects = [subjects[row] for row in keep]
            vectors = vectors[keep]
            rows = dict(zip(ids, range(len(ids))))
        n = len(ids)
        self.clear(max(n, MIN_CAPACITY))
        if n >= MIN_CAPACITY:  # take the scanned matrix as is (full); the next add doubles it
            self.vectors = vectors
        else:
            self.vectors[:n] = vectors
        self.vectors[:n] /= row_norms(self.vectors[:n])
        code_of = self.code_of
        self.codes[:n] = [code_of.setdefault(subject, len(code_of)) for subject in subjects]
        self.subject_of = list(code_of)
        self.counts = np.bincount(self.codes[:n], minlength=len(code_of)).tolist()
        self.ids = ids
        self.rows = rows
        self.id_bytes = None  # summed by the first memory_bytes(), off a restart's path (0.2 s per 1M ids)
        self.n = n

    # ------------------------------------------------------------------------------- reading

    def subject(self, row: int) -> str:
        return self.subject_of[self.codes[row]]

    def subject_rows(self, subject: str) -> np.ndarray | None:
        """Rows of ``subject``'s faces, or None when it has none here."""
        code = self.code_of.get(subject)
        return None if code is None else np.flatnonzero(self.codes[:self.n] == code)

    def count(self, subject: str) -> int:
        code = self.code_of.get(subject)
        return 0 if code is None else self.counts[code]

    def rows_now(self, face_ids) -> np.ndarray:
        """Current rows of these faces (-1: not held). One dict look-up each: about 2 us at 10M faces."""
        rows_of = self.rows.get
        return np.fromiter((rows_of(face_id, -1) for face_id in face_ids), dtype=np.int64, count=len(face_ids))

    def unindexed_ids(self) -> list[str]:
        """Faces at no position of the approximate index."""
        return [self.ids[row] for row in np.flatnonzero(self.positions[:self.n] < 0)]

    def memory_bytes(self) -> int:
        """Matrix capacity, ids, maps (the approximate index's row map included)."""
        index_rows = self.index_rows.nbytes if self.index_rows is not None else 0
        if self.id_bytes is None:
            self.id_bytes = sum(map(sys.getsizeof, self.ids))
        return int(self.vectors.nbytes + self.codes.nbytes + self.positions.nbytes + sys.getsizeof(self.ids)
                   + sys.getsizeof(self.rows) + self.id_bytes + sys.getsizeof(self.code_of)
                   + sum(sys.getsizeof(s) for s in self.code_of) + index_rows)

    # ------------------------------------------------------------------------------- subjects

    def acquire(self, subject: str, faces: int = 1) -> int:
        """Code of ``subject`` (allocated when new), its count raised by ``faces``."""
        code = self.code_of.get(subject)
        if code is None:
            if self.free_codes:
                code = self.free_codes.pop()
                self.subject_of[code] = subject
                self.counts[code] = 0
            else:
                code = len(self.subject_of)
                self.subject_of.append(subject)
                self.counts.append(0)
            self.code_of[subject] = code
        self.counts[code] += faces
        return code

    def release(self, code: int, faces: int = 1) -> None:
        """Lower the count of subject ``code`` by ``faces``; free the code when it reaches zero."""
        self.counts[code] -= faces
        if self.counts[code] <= 0:
            del self.code_of[self.subject_of[code]]
            self.subject_of[code] = None
            self.counts[code] = 0
            self.free_codes.append(code)

    def rename(self, old: str, new: str) -> int:
        """Move every face of ``old`` to ``new`` (merging when ``new`` exists); returns how many."""
        old_code = self.code_of[old]
        faces = self.counts[old_code]
        new_code = self.code_of.get(new)
        if new_code is None:
            del self.code_of[old]
            self.code_of[new] = old_code
            self.subject_of[old_code] = new
        else:
            codes = self.codes[:self.n]
            codes[codes == old_code] = new_code
            self.counts[new_code] += faces
            self.release(old_code, faces)
        return faces

    # ------------------------------------------------------------------------------- writing

    def replace(self, face_id: str, subject: str, vector: np.ndarray) -> None:
        """Give a held face a new subject and embedding in place."""
        row = self.rows[face_id]
        old_code = int(self.codes[row])
        self.codes[row] = self.acquire(subject)
        self.release(old_code)
        self.vectors[row] = vector

    def ensure_capacity(self, needed: int) -> None:
        """Grow the row arrays (doubling) to hold ``needed`` rows."""
        capacity = len(self.codes)
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        vectors = np.zeros((capacity, self.dim), dtype=np.float32)
        vectors[:self.n] = self.vectors[:self.n]
        codes = np.zeros(capacity, dtype=np.int32)
        codes[:self.n] = self.codes[:self.n]
        positions = np.full(capacity, -1, dtype=np.int64)
        positions[:self.n] = self.positions[:self.n]
        self.vectors, self.codes, self.positions = vectors, codes, positions

    def append(self, ids: list[str], subjects: list[str], vectors: np.ndarray) -> None:
        """Append rows (ids not yet present)."""
        start, count = self.n, len(ids)
        self.ensure_capacity(start + count)
        self.vectors[start:start + count] = vectors
        self.codes[start:start + count] = [self.acquire(subject) for subject in subjects]
        self.positions[start:start + count] = -1
        self.ids.extend(ids)
        self.rows.update(zip(ids, range(start, start + count)))
        if self.id_bytes is not None:
            self.id_bytes += sum(map(sys.getsizeof, ids))
        self.n += count

    def remove(self, rows: list[int]) -> list[tuple[str, str]]:
        """Remove rows; returns their (face_id, subject)."""
        rows = sorted(set(rows), reverse=True)
        removed = [(self.ids[row], self.subject_of[self.codes[row]]) for row in rows]
        removed_codes = self.codes[rows]
        for face_id, _ in removed:
            del self.rows[face_id]
        if self.id_bytes is not None:
            self.id_bytes -= sum(sys.getsizeof(face_id) for face_id, _ in removed)
        if len(rows) <= max(64, self.n // 16):
            self._move_last_into(rows)
        else:
            self._compact(rows)
        self.layout += 1
        for code, faces in zip(*np.unique(removed_codes, return_counts=True)):
            self.release(int(code), int(faces))
        return removed

    def _move_last_into(self, rows: list[int]) -> None:
        """Remove ``rows`` (highest first) by moving the last row into each hole."""
        positions = self.positions
        for row in rows:  # highest first: the last row is never one still to delete
            last = self.n - 1
            if positions[row] >= 0:
                self.index_rows[positions[row]] = -1
            if row != last:
                moved = self.ids[last]
                self.vectors[row] = self.vectors[last]
                self.codes[row] = self.codes[last]
                self.ids[row] = moved
                self.rows[moved] = row
                positions[row] = positions[last]
                if positions[row] >= 0:
                    self.index_rows[positions[row]] = row
            positions[last] = -1
            self.ids.pop()
            self.n -= 1

    def _compact(self, rows: list[int]) -> None:
        """Remove many ``rows`` at once by moving every kept row down."""
        positions = self.positions
        keep = np.ones(self.n, dtype=bool)
        keep[rows] = False
        kept = np.flatnonzero(keep)
        self.vectors[:len(kept)] = self.vectors[kept]
        self.codes[:len(kept)] = self.codes[kept]
        positions[:len(kept)] = positions[kept]
        positions[len(kept):self.n] = -1
        if self.index_rows is not None:
            self.index_rows[:] = -1
            indexed = positions[:len(kept)] >= 0
            self.index_rows[positions[:len(kept)][indexed]] = np.flatnonzero(indexed)
        self.ids = [self.ids[row] for row in kept]
        self.rows = dict(zip(self.ids, range(len(self.ids))))
        self.n = len(kept)

    def map_index(self, index_rows: np.ndarray) -> None:
        """An approximate index whose face at position p is now at row ``index_rows[p]`` (-1: deleted)."""
        self.positions[:] = -1
        held = index_rows >= 0
        self.positions[index_rows[held]] = np.flatnonzero(held)
        self.index_rows = index_rows
