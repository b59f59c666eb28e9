"""Where a service's faces live: the shard of a face, and the table and actor names of each shard.

A service with S shards keeps face ``f`` in shard ``crc32(f) % S``. Shard ``k`` is the LanceDB table
``faces_s<service>_n<S>_p<k>`` and the named actor ``index-shard-s<service>-n<S>-p<k>`` (a read
replica r > 0 of it: ``...-p<k>-r<r>``). The shard count is part of both names, so that a re-shard
fills a new layout beside the old one.

The sightings of unknown faces (``kind="sightings"``) are sharded the same way, in tables
``sightings_s<service>_n<S>_p<k>`` held by actors ``sighting-shard-s<service>-n<S>-p<k>``.

A service whose embedding model is not the default one (``sface``) has the model's name in its
names too, before the shard: ``faces_s7_n1_fusion_p0``, ``index-shard-s7-n1-fusion-p0`` (a
``dlib-resnet`` service: ``dlib_resnet``). So a migration to another model (whose embeddings may
have another dimension) fills a new layout beside the old one, like a re-shard.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from store.faces import FaceTable

Item = TypeVar("Item")
ACTOR_PREFIXES = {"faces": "index-shard", "sightings": "sighting-shard"}
DEFAULT_MODEL = "sface"  # its layouts keep the names they had before services chose models


def shard_of(face_id: str, shards: int) -> int:
    """The shard of ``face_id`` among ``shards``."""
    return zlib.crc32(face_id.encode()) % shards


@dataclass(frozen=True)
class ServiceLayout:
    """The ``shards``-shard layout of service ``service_id``'s faces (or of its sightings)."""

    service_id: int
    shards: int
    kind: str = "faces"
    model: str = DEFAULT_MODEL

    def _model_part(self, separator: str) -> str:
        """The model's part of the names (none for the default model)."""
        if self.model == DEFAULT_MODEL:
            return ""
        return separator + re.sub(r"[^a-z0-9]", "_", self.model.lower())

    def shard_of(self, face_id: str) -> int:
        return shard_of(face_id, self.shards)

    def split(self, items: Iterable[Item], face_id: Callable[[Item], str]) -> dict[int, list[Item]]:
        """``items`` grouped by the shard of their face id (only shards that get any)."""
        parts: dict[int, list[Item]] = {}
        for item in items:
            parts.setdefault(self.shard_of(face_id(item)), []).append(item)
        return parts

    def table_name(self, shard: int) -> str:
        """Face table of a shard: ``faces_s7_n1_p0``."""
        return f"{self.kind}_s{int(self.service_id)}_n{int(self.shards)}{self._model_part('_')}_p{int(shard)}"

    def actor_name(self, shard: int, replica: int = 0) -> str:
        """Actor of a shard (replica 0, the primary) or of one of its read replicas."""
        name = f"{self._actor_base()}-p{int(shard)}"
        return name if replica == 0 else f"{name}-r{int(replica)}"

    def extra_replicas(self, names: Iterable[str], replicas: int) -> list[str]:
        """Of actor ``names``, this layout's read replicas numbered ``replicas`` or more."""
        pattern = re.compile(rf"{re.escape(self._actor_base())}-p\d+-r(\d+)")
        return [name for name in names if (found := pattern.fullmatch(name)) and int(found.group(1)) >= replicas]

    def _actor_base(self) -> str:
        return f"{ACTOR_PREFIXES[self.kind]}-s{int(self.service_id)}-n{int(self.shards)}{self._model_part('-')}"

    def actor_prefix(self) -> str:
        """What every shard actor name of this service starts with."""
        return f"{ACTOR_PREFIXES[self.kind]}-s{int(self.service_id)}-"

    def open_table(self, faces_uri: str, shard: int, dim: int) -> FaceTable:
        """A shard's table as it is now (every read sees the latest commit): for jobs and tools that
        read the tables beside the shard actors."""
        return FaceTable.open(faces_uri, self.table_name(shard), dim, read_consistency_interval=timedelta(0))

    def open_tables(self, faces_uri: str, dim: int) -> list[FaceTable]:
        return [self.open_table(faces_uri, shard, dim) for shard in range(self.shards)]
