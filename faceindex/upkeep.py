"""How a shard keeps its table's versions and files bounded, and erases what was deleted from it.

Every write is one LanceDB commit (a small file and a version). Every ``compact_every_commits``
commits the table is compacted and versions older than ``erase_after_s`` are removed. A delete only
marks rows, so it also arms a timer: at most ``erase_after_s`` seconds later the table's live rows are
rewritten and every older version and unreferenced file removed, so the bytes of every deleted face
(embedding, crop) are gone (:meth:`store.faces.FaceTable.erase_deleted`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from store.faces import FaceTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableUpkeep:
    """How often a shard compacts its table, and how soon deleted faces leave its files."""

    compact_every_commits: int = 256
    erase_after_s: float = 300.0


class TableKeeper:
    """The compaction count and the erasure timer of one shard's table, guarded by the shard's ``lock``.

    ``erase`` is the shard's own erasure (:meth:`faceindex.shard.IndexShard.erase_deleted`), which
    the timer and a writer that finds it due call.
    """

    def __init__(self, upkeep: TableUpkeep, lock: threading.RLock, erase: Callable[[], None], table_name: str):
        self.upkeep = upkeep
        self.lock = lock
        self.erase = erase
        self.table_name = table_name
        self._commits_since_compaction = 0
        self._erasure: threading.Timer | None = None
        self._erasure_due = 0.0  # time.monotonic() when the scheduled erasure is due

    def after_commit(self, table: FaceTable) -> None:
        """Keep the table's versions and files bounded under a steady stream of writes.

        A due erasure runs here, on the writer's thread: under continuous writes the timer's thread
        may not win the lock for a long while, and the versions it would remove pile up meanwhile.
        """
        if self._erasure is not None and time.monotonic() >= self._erasure_due:
            self.erase()
            return
        self._commits_since_compaction += 1
        if self._commits_since_compaction >= self.upkeep.compact_every_commits:
            self.optimize(table)

    def optimize(self, table: FaceTable) -> None:
        """Compact the table's small files and prune versions past ``erase_after_s``."""
        table.optimize(timedelta(seconds=self.upkeep.erase_after_s))
        self._commits_since_compaction = 0

    def schedule_erasure(self) -> None:
        """Erase deleted faces ``erase_after_s`` from now, unless already scheduled."""
        with self.lock:
            if self._erasure is None:
                self._erasure_due = time.monotonic() + self.upkeep.erase_after_s
                self._erasure = threading.Timer(self.upkeep.erase_after_s, self._erase_when_due)
                self._erasure.daemon = True
                self._erasure.start()

    def _erase_when_due(self) -> None:
        try:
            self.erase()
        except Exception:  # e.g. the disk is full: try again after another delay
            log.exception("shard %s could not erase deleted faces; trying again later", self.table_name)
            self.schedule_erasure()

    def cancel_erasure(self) -> None:
        """No scheduled erasure (it runs now, or the table is dropped)."""
        if self._erasure is not None:
            self._erasure.cancel()
            self._erasure = None

    def erase_now(self, table: FaceTable) -> None:
        """Rewrite the table without the bytes of deleted faces and remove its older versions."""
        started = time.perf_counter()
        table.erase_deleted()
        self._commits_since_compaction = 0
        log.info("shard %s erased deleted faces from its files in %.2f s", self.table_name,
                 time.perf_counter() - started)
