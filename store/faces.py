"""LanceDB face tables: one table per (service, shard), its schema and its operations.

A face row holds the face id, the subject (a person's name, any user string), the unit-length
float32 embedding, the embedder model (``name@version``), the aligned 112x112 JPEG crop, an optional
source URI and the creation time. The table is the durable store; search runs on an in-memory copy
kept by :class:`faceindex.shard.IndexShard`, which is the one writer of its table.

String values in filter expressions are quoted with :func:`sql_string`, so subjects such as
``O'Brien`` are safe.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    import lancedb

logger = logging.getLogger(__name__)

INDEX_COLUMNS = ["face_id", "subject", "embedding"]
SCAN_BATCH_ROWS = 65536
# LanceDB caches file metadata per session, and every commit writes new files: with the default session
# a long-lived writer's cache grew by about 26 KB per add and delete (100 MB in 4,000 of each), toward a
# default limit far above what one face table needs. Search runs on the shard's in-memory copy.
CACHE_BYTES = 8 * 2**20
# LanceDB is imported when a table is first opened, not with this module: its import costs about 0.6 s
# of CPU (mostly its namespace client's generated API), and most processes that import this module
# never open a table (a bulk job's driver, its read tasks and embedder actors reach the shards
# through their actors).


@lru_cache(maxsize=1)
def lance_session() -> lancedb.Session:
    """The process's one LanceDB session, its index and metadata caches bounded by ``CACHE_BYTES`` each."""
    import lancedb

    return lancedb.Session(index_cache_size_bytes=CACHE_BYTES, metadata_cache_size_bytes=CACHE_BYTES)


def _connect(db_uri: str, read_consistency_interval: timedelta | None = None):
    import lancedb

    return lancedb.connect(db_uri, read_consistency_interval=read_consistency_interval, session=lance_session())


def use_system_allocator_for_arrow() -> None:
    """Allocate this process's Arrow buffers with the system allocator instead of Arrow's bundled mimalloc.

    A table write hands Arrow buffers to LanceDB, whose runtime threads (their number grows and
    shrinks) free them, and mimalloc kept much of that memory. A writer of a 162-face table that
    rewrote the whole table (``mode="overwrite"``, streamed or materialized, or a ``merge_insert`` of
    every row) every 100 add and delete pairs grew by about 0.8 MB per rewrite with mimalloc, 0.3 MB
    with the system allocator (the same as with no rewrite at all). Process-wide: call it in a
    process that writes tables for a long time.
    """
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


@dataclass
class FaceRecord:
    """One stored face.

    ``embedding`` is a ``(dim,)`` float32 unit vector; ``crop`` the face's aligned context crop as
    JPEG bytes (``facecore.context_crop``; the 112x112 chip for faces stored before context crops);
    ``created_at`` a timezone-aware UTC time (a naive time is taken as UTC when stored).
    """

    face_id: str
    subject: str
    embedding: np.ndarray
    model: str
    crop: bytes
    source: str | None
    created_at: datetime


def face_schema(dim: int) -> pa.Schema:
    """The Arrow schema of a face table whose embeddings have ``dim`` dimensions."""
    if dim < 1:
        raise ValueError(f"embedding dimension must be >= 1, got {dim}")
    return pa.schema([
        pa.field("face_id", pa.string(), nullable=False),
        pa.field("subject", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
        pa.field("model", pa.string()),
        pa.field("crop", pa.binary()),
        pa.field("source", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ])


def sql_string(value: str) -> str:
    """``value`` as a SQL string literal for a LanceDB filter: quoted, inner quotes doubled."""
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    return "'" + value.replace("'", "''") + "'"


def _in_list(column: str, values: list[str]) -> str:
    """``column IN ('a', 'b', ...)`` with every value quoted."""
    return f"{column} IN ({', '.join(sql_string(v) for v in values)})"


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive time is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _embedding_dim(schema: pa.Schema) -> int | None:
    """List size of the ``embedding`` column, or None when there is no fixed-size float32 one."""
    if "embedding" not in schema.names:
        return None
    kind = schema.field("embedding").type
    if not pa.types.is_fixed_size_list(kind) or kind.value_type != pa.float32():
        return None
    return kind.list_size


def records_from_rows(rows: pa.Table | pa.RecordBatch) -> list[FaceRecord]:
    """Whole rows of a face table as records."""
    return [FaceRecord(face_id=row["face_id"], subject=row["subject"],
                       embedding=np.asarray(row["embedding"], dtype=np.float32), model=row["model"],
                       crop=row["crop"], source=row["source"], created_at=_utc(row["created_at"]))
            for row in rows.to_pylist()]


class FaceTable:
    """One LanceDB face table. Get one with :meth:`open`."""

    def __init__(self, table: lancedb.table.Table, db_uri: str, name: str, dim: int):
        self._table = table
        self.db_uri = db_uri
        self.name = name
        self.dim = dim
        self.schema = face_schema(dim)

    @classmethod
    def open(cls, db_uri: str, name: str, dim: int, *,
             read_consistency_interval: timedelta | None = None) -> "FaceTable":
        """Open table ``name`` under ``db_uri``, creating it when missing.

        A handle reads the table version it opened plus its own writes; commits made through other
        handles become visible only when ``read_consistency_interval`` is set (``timedelta(0)``:
        check for a newer version before every read). The owning writer needs none.

        Raises ValueError when the existing table's embeddings do not have ``dim`` dimensions or
        its columns differ from :func:`face_schema`.
        """
        schema = face_schema(dim)
        db = _connect(db_uri, read_consistency_interval)
        try:
            table = db.open_table(name)
        except ValueError:  # LanceDB 0.40 raises ValueError("Table '...' was not found")
            try:
                table = db.create_table(name, schema=schema, exist_ok=True)
                logger.info("created face table %s (dim %d) under %s", name, dim, db_uri)
            except ValueError as error:  # created meanwhile by someone else, with another schema
                table = db.open_table(name)
                logger.debug("create_table(%s) raced: %s", name, error)
        existing = table.schema
        found = _embedding_dim(existing)
        if found != dim:
            raise ValueError(f"face table {name!r} has embedding dimension {found}, expected {dim}")
        if not existing.equals(schema):
            raise ValueError(f"face table {name!r} has schema {existing}, expected {schema}")
        return cls(table, db_uri, name, dim)

    @staticmethod
    def exists(db_uri: str, name: str) -> bool:
        try:
            _connect(db_uri).open_table(name)
        except ValueError:
            return False
        return True

    @staticmethod
    def drop_table(db_uri: str, name: str) -> None:
        """Drop table ``name`` under ``db_uri``; a missing table is not an error."""
        _connect(db_uri).drop_table(name, ignore_missing=True)

    def drop(self) -> None:
        """Drop this table. The object must not be used afterwards."""
        self.drop_table(self.db_uri, self.name)

    def _to_arrow(self, records: list[FaceRecord]) -> pa.Table:
        """The records as an Arrow table of this table's schema (shapes checked)."""
        if records:
            vectors = np.stack([np.asarray(r.embedding, dtype=np.float32) for r in records])
        else:
            vectors = np.zeros((0, self.dim), dtype=np.float32)
        if vectors.shape != (len(records), self.dim):
            raise ValueError(f"embeddings must have shape ({self.dim},), got {vectors.shape[1:]}")
        if not np.isfinite(vectors).all():
            raise ValueError("embeddings must be finite")
        embedding_type = self.schema.field("embedding").type
        return pa.table({
            "face_id": pa.array([r.face_id for r in records], pa.string()),
            "subject": pa.array([r.subject for r in records], pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), type=embedding_type),
            "model": pa.array([r.model for r in records], pa.string()),
            "crop": pa.array([r.crop for r in records], pa.binary()),
            "source": pa.array([r.source for r in records], pa.string()),
            "created_at": pa.array([_utc(r.created_at) for r in records], pa.timestamp("us", tz="UTC")),
        }, schema=self.schema)

    def add(self, records: list[FaceRecord]) -> None:
        """Append the records in one commit (no check for duplicate face ids)."""
        if not records:
            return
        self._table.add(self._to_arrow(records))

    def upsert(self, records: list[FaceRecord]) -> None:
        """Insert the records, replacing rows with the same face id, in one commit.

        Face ids must be distinct within ``records``. Slower than :meth:`add` on a large table (it
        joins on ``face_id``), so use it only when some ids may already be stored.
        """
        if not records:
            return
        ids = [r.face_id for r in records]
        if len(set(ids)) != len(ids):
            raise ValueError("face ids must be distinct within one upsert")
        (self._table.merge_insert("face_id")
         .when_matched_update_all()
         .when_not_matched_insert_all()
         .execute(self._to_arrow(records)))

    def delete_ids(self, ids: list[str]) -> None:
        """Delete the faces with these ids (unknown ids are ignored), in one commit."""
        if ids:
            self._table.delete(_in_list("face_id", list(ids)))

    def delete_subject(self, subject: str) -> None:
        """Delete every face of ``subject``."""
        self._table.delete(f"subject = {sql_string(subject)}")

    def delete_all(self) -> None:
        """Delete every face (the table stays)."""
        self._table.delete("true")

    def rename_subject(self, old: str, new: str) -> None:
        """Set the subject of every face of ``old`` to ``new`` (merging into ``new`` if it exists)."""
        if old == new:
            return
        self._table.update(where=f"subject = {sql_string(old)}", values={"subject": new})

    def scan_index_columns(self) -> tuple[list[str], list[str], np.ndarray]:
        """Face ids, subjects and the ``(N, dim)`` float32 embeddings of every row, in table order.

        Reads only those three columns (never the crops), column-wise through Arrow, in batches
        copied straight into one preallocated matrix (writable, C-contiguous, owned by the caller).
        """
        vectors = np.empty((self._table.count_rows(), self.dim), dtype=np.float32)
        face_ids: list[str] = []
        subjects: list[str] = []
        filled = 0
        batches = (self._table.search()
                   .select(INDEX_COLUMNS)
                   .limit(None)
                   .to_batches(batch_size=SCAN_BATCH_ROWS))
        for batch in batches:
            rows = batch.num_rows
            if filled + rows > len(vectors):  # rows committed since count_rows()
                grown = np.empty((max(2 * len(vectors), filled + rows), self.dim), dtype=np.float32)
                grown[:filled] = vectors[:filled]
                vectors = grown
            flat = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)
            vectors[filled:filled + rows] = flat.reshape(rows, self.dim)
            face_ids.extend(batch.column("face_id").to_pylist())
            subjects.extend(batch.column("subject").to_pylist())
            filled += rows
        if filled != len(vectors):
            vectors = vectors[:filled].copy()
        return face_ids, subjects, vectors

    def get(self, face_id: str) -> FaceRecord | None:
        """The face with id ``face_id`` including its crop, or None."""
        data = (self._table.search()
                .where(f"face_id = {sql_string(face_id)}")
                .limit(1)
                .to_arrow())
        records = records_from_rows(data.slice(0, 1))
        return records[0] if records else None

    def count(self, subject: str | None = None) -> int:
        """Number of faces, of one subject when ``subject`` is given."""
        if subject is None:
            return self._table.count_rows()
        return self._table.count_rows(f"subject = {sql_string(subject)}")

    def disk_bytes(self) -> int | None:
        """Bytes of the table's files (all kept versions), or None for a table in object storage."""
        if "://" in self.db_uri:
            return None
        folder = Path(self.db_uri) / f"{self.name}.lance"
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())

    @property
    def version(self) -> int:
        """The table version this handle reads."""
        return self._table.version

    def checkout(self, version: int) -> None:
        """Pin this handle to ``version`` (read-only from then on): a stable snapshot to scan."""
        self._table.checkout(version)

    def face_ids(self) -> list[str]:
        """Every face id, in table order (reads only that column)."""
        batches = self._table.search().select(["face_id"]).limit(None).to_batches(batch_size=SCAN_BATCH_ROWS)
        return [face_id for batch in batches for face_id in batch.column("face_id").to_pylist()]

    def batches(self, columns: list[str] | None = None, batch_rows: int = 1024) -> Iterator[pa.RecordBatch]:
        """Every row (of ``columns``, default all), streamed in record batches of at most ``batch_rows``."""
        query = self._table.search().limit(None)
        if columns is not None:
            query = query.select(columns)
        return iter(query.to_batches(batch_size=batch_rows))

    def overwrite(self, batches: Iterable[pa.RecordBatch]) -> None:
        """Replace every row by ``batches`` (this table's schema), streamed, in one commit.

        Readers see the old rows or the new ones, never a mix; the old version stays on disk until
        :meth:`optimize` prunes it.
        """
        self._table.add(pa.RecordBatchReader.from_batches(self.schema, batches), mode="overwrite")

    def optimize(self, keep_versions_for: timedelta = timedelta(days=7)) -> None:
        """Compact small data files (one per commit) and remove versions older than the given age."""
        self._table.optimize(cleanup_older_than=keep_versions_for)

    def version_count(self) -> int:
        """How many versions of the table are kept on disk."""
        return len(self._table.list_versions())

    def erase_deleted(self) -> None:
        """Leave no byte of deleted or replaced rows in the table's files.

        A delete only marks rows in a deletion file, and compaction rewrites a data file only when a
        tenth of its rows are deleted; so the live rows are rewritten into new files (one streamed
        commit, readers see all old or all new rows), then every older version and every file no
        version references are removed. Only the table's one writer may call this: an older version
        that another reader still uses disappears.
        """
        self.overwrite(self.batches(batch_rows=SCAN_BATCH_ROWS // 16))
        self._table.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)
