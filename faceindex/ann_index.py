"""Approximate candidate search for large shards: faiss product quantisation with SIMD fast scan.

Each unit vector is compressed to 64 four-bit codes (32 bytes at 128-d); a query scans all codes with
SIMD look-up tables, which is about 40 times cheaper than a float32 scan here, and keeps the best
``candidates``. The shard then re-scores those candidates exactly against its float32 matrix, so
reported similarities are exact and deleted faces are simply skipped.

Why not IVF or HNSW: face embeddings of the same person are far apart by ANN standards (cosine
0.4-0.7), so partitioned indexes miss them unless they scan a quarter or more of their lists, and
HNSW needed wide beams (and a slow build) for 98% on the same data; a flat fast scan with 64
sub-quantizers and 512+ candidates re-ranked exactly found the exact top-1 for every real lfw-dev
query among 1M realistic faces (32 sub-quantizers: 99.4%; see docs/benchmarks.md). The index is
immutable once built; faces added later are searched exactly beside it (the shard's "tail") until
the next build.

One query scans every code, on one core per index. With ``scan_threads`` > 1 a large index is built
as that many parts sharing one codebook (``faiss.IndexShards``), scanned in parallel threads and
merged: a query at 10M faces then takes half the time on two cores, but waits for the slowest
thread, so on a machine whose cores are shared (or stolen by a hypervisor) its tail grows. One
thread is the default; docs/benchmarks.md has both.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

import numpy as np

from facecore.faiss_runtime import faiss
from faceindex.packed_ids import PackedIds
from store.object_storage import read_uri, write_uri

log = logging.getLogger(__name__)

SUB_QUANTIZERS = 64
BITS = 4
TRAIN_POINTS = 65_536
MIN_PART_FACES = 100_000  # a smaller part scans in less time than a thread hand-off costs


def scan_parts(faces: int, scan_threads: int) -> int:
    """How many parts an index over ``faces`` is split into: one per scan thread, of at least MIN_PART_FACES."""
    return max(1, min(scan_threads, faces // MIN_PART_FACES))


class AnnIndex:
    """An immutable PQ fast-scan index over ``face_ids``.

    Saved as one uncompressed npz: ``part<i>`` (each part as faiss serializes it) and the ids packed
    (:class:`~faceindex.packed_ids.PackedIds`: ``id_text`` and ``id_lengths``). A file of the older
    layout, with the ids as a numpy unicode array ``ids``, is read too.
    """

    def __init__(self, parts: list[faiss.Index], face_ids: PackedIds, build_seconds: float):
        self.parts = parts  # rows of face_ids in order: part 0's, then part 1's, ...
        if len(parts) == 1:
            self.index = parts[0]
        else:
            self.index = faiss.IndexShards(parts[0].d, True, True)  # threaded, ids numbered across parts
            for part in parts:
                self.index.add_shard(part)
        self.face_ids = face_ids
        self.build_seconds = build_seconds

    @classmethod
    def build(cls, vectors: np.ndarray, face_ids: list[str], scan_threads: int = 1, seed: int = 0) -> "AnnIndex":
        """Train and fill an index over unit-length ``vectors`` (rows) with these ids."""
        started = time.perf_counter()
        n, dim = vectors.shape
        codebook = faiss.IndexPQFastScan(dim, SUB_QUANTIZERS, BITS, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).choice(n, TRAIN_POINTS, replace=False) if n > TRAIN_POINTS else slice(None)
        codebook.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        parts = []
        for rows in np.array_split(np.arange(n), scan_parts(n, scan_threads)):
            part = faiss.clone_index(codebook)
            part.add(np.ascontiguousarray(vectors[rows[0]:rows[-1] + 1], dtype=np.float32))
            parts.append(part)
        elapsed = time.perf_counter() - started
        log.info("built PQ%dx%dfs over %d faces in %d parts in %.1f s", SUB_QUANTIZERS, BITS, n, len(parts), elapsed)
        return cls(parts, PackedIds.pack(face_ids), elapsed)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def positions(self, queries: np.ndarray, count: int) -> list[np.ndarray]:
        """Per query, the positions (in ``face_ids``) of the ``count`` best approximate matches."""
        _, found = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(count, len(self)))
        return [row[row >= 0] for row in found]

    def memory_bytes(self) -> int:
        """Codes plus the packed ids."""
        return int(len(self) * SUB_QUANTIZERS * BITS / 8) + self.face_ids.nbytes()

    def save(self, uri: str | Path) -> None:
        """Write the index and its ids as one file (a local path or an object-store URI), atomically
        replacing an older one."""
        parts = {f"part{i}": faiss.serialize_index(part) for i, part in enumerate(self.parts)}
        buffer = io.BytesIO()
        np.savez(buffer, id_text=np.frombuffer(self.face_ids.text, dtype=np.uint8),
                 id_lengths=self.face_ids.lengths, **parts)
        write_uri(str(uri), buffer.getbuffer())

    @classmethod
    def load(cls, uri: str | Path) -> "AnnIndex | None":
        """The saved index at ``uri``, or None when there is none (or it is unreadable)."""
        path = str(uri)
        try:
            data = read_uri(path)
            if data is None:
                return None
            with np.load(io.BytesIO(data), allow_pickle=False) as saved:
                count = sum(1 for key in saved.files if key.startswith("part"))
                parts = [faiss.deserialize_index(saved[f"part{i}"]) for i in range(count)]
                face_ids = (PackedIds(saved["id_text"].tobytes(), saved["id_lengths"]) if "id_text" in saved.files
                            else PackedIds.pack(saved["ids"].tolist()))
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable index %s: %s", path, exc)
            return None
        if not parts or sum(part.ntotal for part in parts) != len(face_ids):
            log.warning("ignoring index %s: its parts do not match its %d ids", path, len(face_ids))
            return None
        return cls(parts, face_ids, 0.0)
