"""How a shard searches (:class:`SearchConfig`); how it keeps its table small is in :mod:`faceindex.upkeep`."""

from __future__ import annotations

from dataclasses import dataclass


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

