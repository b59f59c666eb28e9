"""A shard's memory budget: an add that would take the shard past it is refused (HTTP 507)."""

from __future__ import annotations

from collections.abc import Callable

from faceindex.rows import MIN_CAPACITY

FACE_BYTES_GUESS = 200  # per face beside its embedding, before the shard holds enough faces to measure


class ShardFull(Exception):
    """Adding these faces would take the shard past its memory budget."""


def check_budget(budget_bytes: int | None, held_bytes: Callable[[], int], faces: int, new_faces: int, dim: int,
                 table_name: str) -> None:
    """Raise :class:`ShardFull` when ``new_faces`` more faces, at the bytes per face held now (or a
    guess for a small shard), would pass ``budget_bytes``. ``held_bytes`` measures the shard (only
    when there is a budget to check)."""
    if budget_bytes is None or new_faces == 0:
        return
    held = held_bytes()
    per_face = held / faces if faces >= MIN_CAPACITY else 4 * dim + FACE_BYTES_GUESS
    needed = held + new_faces * per_face
    if needed > budget_bytes:
        raise ShardFull(f"shard {table_name} would need about {needed / 2**20:.0f} MiB for "
                        f"{faces + new_faces} faces; its memory budget is {budget_bytes / 2**20:.0f} MiB: "
                        "re-shard the service onto more shards or raise FACES_SHARD_MEMORY_BUDGET_MB")
