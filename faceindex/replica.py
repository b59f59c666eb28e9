"""Read replicas of a shard: the same table, searched from another process, changed only by the primary.

The primary commits a change and reports it as ``(before, after)``: the table version its previous
change left (or it loaded) and the version this one left. A replica applies each change to its
memory in that order (:class:`ChangeOrder`): a change whose ``before`` is ahead of the replica waits
for the ones before it (concurrent writers may deliver them out of order), and one it already holds
(``after`` not past the version it loaded) is skipped. Every change is idempotent, so applying one a
second time (a commit that landed between the version read and the scan of a load) changes nothing.
Versions made by compaction and erasure change no face, so they need no change of their own. A
replica that waits too long for a change (the primary restarted, or a change got lost with a dead
caller) loads the table again.

A replica's table (:class:`FollowedTable`) reads the latest commit at every read and writes nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from store.faces import FaceRecord, FaceTable

ORDER_WAIT_S = 2.0  # how long a replica waits for earlier changes before it loads the table again


class FollowedTable:
    """A shard table as a replica sees it: reads of the latest commit; writes are the primary's."""

    def __init__(self, table: FaceTable):
        self._table = table
        self.db_uri = table.db_uri
        self.name = table.name

    @property
    def version(self) -> int:
        return self._table.version

    def scan_index_columns(self) -> tuple[list[str], list[str], np.ndarray]:
        return self._table.scan_index_columns()

    def get(self, face_id: str) -> FaceRecord | None:
        return self._table.get(face_id)

    def disk_bytes(self) -> int | None:
        return self._table.disk_bytes()

    def version_count(self) -> int:
        return self._table.version_count()

    def _primary_writes(self, *args, **kwargs) -> None:
        """The primary committed this change already; the replica changes its memory only."""

    add = upsert = delete_ids = delete_subject = delete_all = rename_subject = _primary_writes
    optimize = erase_deleted = drop = _primary_writes

    def overwrite(self, batches: Iterable[pa.RecordBatch]) -> None:
        """Not for replicas: they reload after the primary's swap (:meth:`IndexShard.reload`)."""
        raise RuntimeError(f"a replica of {self.name} does not replace its table")


class ChangeOrder:
    """The table version a replica's memory holds, and the order its changes apply in."""

    def __init__(self, lock: threading.RLock):
        self.held = threading.Condition(lock)
        self.version = 0

    def wait_for(self, before: int) -> bool:
        """Wait (with the shard's lock held) until the memory holds version ``before``; False when
        that did not happen within :data:`ORDER_WAIT_S`."""
        deadline = time.monotonic() + ORDER_WAIT_S
        while self.version < before:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.held.wait(left)
        return True

    def holds(self, after: int) -> bool:
        """Whether the memory already holds the change that left version ``after``."""
        return self.version >= after

    def advance(self, version: int) -> None:
        with self.held:
            self.version = max(self.version, version)
            self.held.notify_all()

    def reset(self, version: int) -> None:
        """The memory was loaded from the table at ``version``."""
        with self.held:
            self.version = version
            self.held.notify_all()
